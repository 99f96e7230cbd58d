"""The agent interface every policy implements, and the registry that makes swapping agents one word.

    agent = agents.make("prf", catalog="synthetic")
    actions = agent.act([observation, ...])   # raw action texts, one per observation

An observation is LESER-v0's: ``{"query": str, "context": str}``. An action is the raw text
the environment scores (``<think>...</think><answer>[...]</answer>``), so a scripted agent and
a language model are interchangeable.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from catalogs.storage import write_json_atomically

AGENT_FILE = "agent.json"
# Modules that define agents, imported on first use of the registry so `make` knows every name.
# The LLM agents pull in torch and transformers: they are imported only when asked for.
AGENT_MODULES = ("agents.baselines",)
TRAINED_AGENT_MODULES = ("agents.sft", "agents.grpo", "agents.ppo", "agents.learned_edit")  # import torch

REGISTRY: dict[str, type[Agent]] = {}


class Agent(ABC):
    """A policy over LESER-v0 observations.

    Subclasses set ``name``, implement ``act``, and keep every constructor argument they need to
    be rebuilt in ``self.config`` (saved by ``save``). Learning agents override ``learn`` and
    ``save``/``load`` for their weights.
    """

    name: ClassVar[str] = ""
    # True for an agent that scores sets with the reward while it acts (reward-search): the CLI then
    # builds it with the reward preset it evaluates under, and its --engine-check.
    reads_reward: ClassVar[bool] = False

    def __init__(self, catalog: str = "synthetic", data_dir: str | None = None, seed: int = 0, **config: Any) -> None:
        self.catalog = str(catalog)
        self.data_dir = str(data_dir) if data_dir else None
        self.seed = seed
        self.config: dict[str, Any] = {"catalog": self.catalog, "data_dir": self.data_dir, "seed": seed, **config}

    @property
    def label(self) -> str:
        """How tables and plots name this agent: its registry name unless a setting changes what it does;
        "+check" for one evaluated behind the engine check (an ``engine_check`` attribute that is true)."""
        return self.name + ("+check" if getattr(self, "engine_check", False) else "")

    @abstractmethod
    def act(self, observations: Sequence[Mapping[str, str]]) -> list[str]:
        """One raw action text per observation."""

    def learn(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"agent {self.name!r} does not learn")

    def save(self, path: str | Path) -> Path:
        """Write the agent's description (and, for learning agents, weights) to a directory."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(directory / AGENT_FILE, {"name": self.name, "config": self.config})
        return directory

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Agent:
        record = read_agent_file(path)
        return cls(**{**record["config"], **overrides})


def register(name: str) -> Callable[[type[Agent]], type[Agent]]:
    """Class decorator: make an agent available as ``agents.make(name)``."""

    def decorate(cls: type[Agent]) -> type[Agent]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"agent name {name!r} is already registered by {REGISTRY[name].__qualname__}")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    _import_agent_modules(everything=True)
    return sorted(REGISTRY)


def make(name: str, **kwargs: Any) -> Agent:
    """Build an agent by name (``agents.available()`` lists them)."""
    return agent_class(name)(**kwargs)


def agent_class(name: str) -> type[Agent]:
    """The class ``make(name)`` builds."""
    _import_agent_modules()
    if name not in REGISTRY:
        _import_agent_modules(everything=True)
    if name not in REGISTRY:
        raise ValueError(f"unknown agent {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def load(path: str | Path, **overrides: Any) -> Agent:
    """Rebuild a saved agent from its directory, whatever its kind."""
    _import_agent_modules(everything=True)
    record = read_agent_file(path)
    if record.get("name") not in REGISTRY:
        raise ValueError(f"{Path(path) / AGENT_FILE}: unknown agent {record.get('name')!r}")
    return REGISTRY[record["name"]].load(path, **overrides)


def read_agent_file(path: str | Path) -> dict[str, Any]:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: not a directory (an agent checkpoint is the run directory)")
    file = Path(path) / AGENT_FILE
    try:
        record = json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: not found (is {path} an agent checkpoint directory?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError(f"{file}: expected an object with 'name' and 'config'")
    return record


def _import_agent_modules(everything: bool = False) -> None:
    for module in AGENT_MODULES + (TRAINED_AGENT_MODULES if everything else ()):
        importlib.import_module(module)
