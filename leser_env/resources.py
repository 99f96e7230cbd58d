"""Heavy objects (catalog, search index, relevance model), built or loaded once per process.

Environments, vector-env workers and CLI commands all come through here, so a process that
makes many environments over one catalog opens its index and model once.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from catalogs import load_catalog
from leser_env.relevance import RelevanceModel
from leser_env.reward import Reward, RewardConfig
from leser_env.search import SearchEngine


def _key(data_dir: str | Path | None) -> str | None:
    return str(data_dir) if data_dir else None


@lru_cache(maxsize=4)
def _engine(spec: str, data_dir: str | None) -> SearchEngine:
    return SearchEngine(load_catalog(spec, data_dir))


@lru_cache(maxsize=4)
def _relevance(spec: str, data_dir: str | None) -> RelevanceModel:
    return RelevanceModel.load_or_train(load_catalog(spec, data_dir))


def engine_for(spec: str | Path, data_dir: str | Path | None = None) -> SearchEngine:
    return _engine(str(spec), _key(data_dir))


def relevance_for(spec: str | Path, data_dir: str | Path | None = None) -> RelevanceModel:
    return _relevance(str(spec), _key(data_dir))


def reward_for(spec: str | Path, data_dir: str | Path | None = None, config: RewardConfig | None = None) -> Reward:
    """A Reward over the shared engine and model (its own rel cache, keyed by its config)."""
    return Reward(engine_for(spec, data_dir), relevance_for(spec, data_dir), config)
