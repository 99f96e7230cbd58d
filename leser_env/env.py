"""LESER-v0: query expansion rewarded by the catalog's own search engine, as a Gymnasium environment."""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import read_from_shared_memory

from catalogs import Catalog, Split, load_catalog
from leser_env.actions import encode_action
from leser_env.metrics import interleave, ndcg_at_k, recall
from leser_env.relevance import grade_range
from leser_env.resources import engine_for, relevance_for
from leser_env.reward import Reward, RewardBreakdown, RewardConfig

MAX_ACTION_CHARS = 4096  # the action space's length; step() accepts any text and judges it
MAX_CONTEXT_LINE_CHARS = 300
# The first context line when the query matches nothing and the context comes from matching any of
# its words: a policy told "products the engine shows for it" would otherwise take them for R(q).
PARTIAL_MATCH_NOTE = "No product has every word of the query. Products with some of its words:"


class LeserEnv(gym.Env):
    """Rewrite a shopping query into expansion queries; the catalog's search engine scores them.

    ## Episode
    One query is one episode. ``reset`` samples a query of the chosen split (or pins one with
    ``options={"query_id": id}`` or ``options={"query": text}``); ``step(action)`` scores the
    action and the episode terminates.

    ## Observation space
    ``Dict(query=Text, context=Text)``: the query, and the top ``context_k`` products the engine
    returns for it, one line each (title | category | attribute values), as pseudo-relevance
    feedback. When conjunctive matching finds nothing, the context falls back to disjunctive
    matching so the policy still sees the neighbourhood, under a first line that says so
    (``PARTIAL_MATCH_NOTE``): those products are not what the query retrieves. The character set
    is printable ASCII plus every character the catalog uses; a pinned query's other characters
    become spaces.

    ## Action space
    ``Text``: the policy's raw completion,
    ``<think>...</think><answer>["expansion 1", ...]</answer>``. Any text is accepted; malformed
    text gets the format penalty (see ``leser_env.actions``). ``ExpansionListAction`` wraps the
    environment so that a Python list of strings is the action.

    ## Reward
    DESIGN.md's: ``r_rel + lambda * r_size``, relevance (judged against the original query by
    the LightGBM relevance model) and coverage of what the expansions retrieve, both against the
    original query's own results; ``format_penalty`` (-2) for an invalid action. Every constant
    is a ``RewardConfig`` field.

    ## Info (from step)
    ``reward_breakdown`` (r_rel, r_size, rel_query, rel_expansions, |R(q)|, |U(Y)|, validity and
    error), ``expansions``, ``query_results`` (R(q) ids), ``expansion_results`` (R(y) ids per
    expansion), ``union_results`` (U(Y) ids), ``metrics`` (the episode's terms of DESIGN.md's
    metrics, human-label ones when the query has labels), ``query_id``, ``query``.

    ## Arguments
    ``catalog`` (name or generic directory, default "synthetic"), ``data_dir``, ``split``
    ("train" | "validation" | "test"), ``reward_config`` (RewardConfig or dict of its fields),
    ``context_k`` (default 5), ``mode`` ("and" | "or", overrides the reward config's matching),
    ``seed``. Heavy objects (index, relevance model) are shared by every env in the process.

    ## Vector environments
    Every episode is one step: under ``gym.make_vec`` pass
    ``vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}`` so that each vector
    step is a full episode (the default ``NEXT_STEP`` mode spends every other step on a reset).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        catalog: str | Path = "synthetic",
        data_dir: str | Path | None = None,
        split: str = "train",
        reward_config: RewardConfig | Mapping[str, Any] | None = None,
        context_k: int = 5,
        mode: str | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        config = reward_config if isinstance(reward_config, RewardConfig) else RewardConfig(**(reward_config or {}))
        if mode is not None:
            config = replace(config, mode=mode)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', not {render_mode!r}")
        self.render_mode = render_mode
        self.catalog: Catalog = load_catalog(catalog, data_dir)
        self.catalog_source, self.data_dir = catalog, data_dir  # what agents pass to build their own views
        self.split = Split(split)
        self.engine = engine_for(catalog, data_dir)
        self.reward_model = Reward(self.engine, relevance_for(catalog, data_dir), config)
        self.config = config
        self.context_k = int(context_k)
        self.query_ids = self.catalog.query_ids(self.split)
        if not self.query_ids:
            raise ValueError(f"catalog {self.catalog.name!r} has no {self.split} queries")
        self._grade_low = grade_range(self.catalog)[0] if self.catalog.qrels else 0.0

        self.charset = _charset(self.catalog)
        self._allowed = frozenset(self.charset)
        longest_query = max(len(text) for text in self.catalog.queries.values())
        self.max_query_chars = max(256, longest_query)
        self.max_context_chars = len(PARTIAL_MATCH_NOTE) + 1 + self.context_k * (MAX_CONTEXT_LINE_CHARS + 1)
        self.observation_space = spaces.Dict(
            {
                "query": CatalogText(max_length=self.max_query_chars, min_length=0, charset=self.charset),
                "context": CatalogText(max_length=self.max_context_chars, min_length=0, charset=self.charset),
            }
        )
        self.action_space = spaces.Text(max_length=MAX_ACTION_CHARS, min_length=0, charset=self.charset)
        self._query_id: str | None = None
        self._observation: dict[str, str] | None = None
        self._context_ids: tuple[str, ...] = ()
        self._last: RewardBreakdown | None = None
        self._initial_seed = seed  # used by the first reset() that passes no seed

    # -- Gymnasium API ------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._initial_seed is not None:
            seed, self._initial_seed = self._initial_seed, None
        super().reset(seed=seed)
        options = options or {}
        if "query_id" in options:
            query_id = str(options["query_id"])
            if query_id not in self.catalog.queries:
                raise ValueError(f"unknown query id {query_id!r} in catalog {self.catalog.name!r}")
            query = self.catalog.queries[query_id]
        elif "query" in options:
            query_id, query = None, str(options["query"])
        else:
            query_id = self.query_ids[int(self.np_random.integers(len(self.query_ids)))]
            query = self.catalog.queries[query_id]
        query = self._printable(query)[: self.max_query_chars]
        context_ids, partial = self._context(query)
        self._query_id, self._context_ids, self._last = query_id, context_ids, None
        self._observation = {"query": query, "context": self._render_context(context_ids, partial)}
        return dict(self._observation), {
            "query_id": query_id,
            "context_ids": list(context_ids),
            "split": str(self.split),
        }

    def step(self, action: str):
        if self._observation is None:
            raise RuntimeError("call reset() before step(): each episode is one query")
        breakdown = self.reward_model.score(self._observation["query"], action)
        info = self._info(breakdown)
        observation = dict(self._observation)
        self._observation, self._last = None, breakdown
        return observation, float(breakdown.reward), True, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._last is None:
            return "" if self._observation is None else f"query: {self._observation['query']}"
        last = self._last
        status = "valid" if last.valid else f"invalid ({last.error}: {last.error_detail})"
        return (
            f"reward {last.reward:+.4f} [{status}] r_rel {last.r_rel:+.4f} r_size {last.r_size:.4f} "
            f"|R(q)| {last.query_result_count} |U(Y)| {last.union_size} expansions {list(last.expansions)}"
        )

    # -- LESER extras -------------------------------------------------------------------

    @property
    def observation(self) -> dict[str, str] | None:
        """The current episode's observation (None between episodes)."""
        return None if self._observation is None else dict(self._observation)

    @property
    def query_id(self) -> str | None:
        return self._query_id

    def score_group(self, actions: Sequence[str | Sequence[str]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Score N candidate actions for the current observation without ending the episode (GRPO's group).

        Returns the rewards and, for each action, the same info ``step`` would give.
        """
        if self._observation is None:
            raise RuntimeError("call reset() before score_group()")
        breakdowns = self.reward_model.score_group(self._observation["query"], list(actions))
        return np.array([b.reward for b in breakdowns], dtype=np.float64), [self._info(b) for b in breakdowns]

    # -- internals ----------------------------------------------------------------------

    def _context(self, query: str) -> tuple[tuple[str, ...], bool]:
        """The top products for the query, and whether they match only some of its words (the fallback)."""
        hits = self.engine.search(query, self.context_k, self.config.mode)
        if not hits.ids and self.config.mode == "and":
            return self.engine.search(query, self.context_k, "or").ids, True
        return hits.ids, False

    def _render_context(self, product_ids: Sequence[str], partial: bool = False) -> str:
        lines = [PARTIAL_MATCH_NOTE] if partial and product_ids else []
        for product_id in product_ids:
            product = self.catalog.product(product_id)
            parts = [product.title]
            if product.category:
                parts.append(product.category)
            if product.attributes:
                parts.append(product.attribute_text())
            line = " | ".join(" ".join(part.split()) for part in parts)
            lines.append("- " + self._printable(line)[: MAX_CONTEXT_LINE_CHARS - 2])
        return "\n".join(lines)

    def _printable(self, text: str) -> str:
        return "".join(ch if ch in self._allowed else " " for ch in text)

    def _info(self, breakdown: RewardBreakdown) -> dict[str, Any]:
        return {
            "query_id": self._query_id,
            "query": self._observation["query"] if self._observation else None,
            "reward_breakdown": breakdown.to_dict(),
            "expansions": list(breakdown.expansions),
            "query_results": list(breakdown.query_results),
            "expansion_results": [list(ids) for ids in breakdown.expansion_results],
            "union_results": list(breakdown.union_results),
            "metrics": self._metrics(breakdown),
        }

    def _metrics(self, breakdown: RewardBreakdown) -> dict[str, Any]:
        """This episode's terms of the evaluation metrics (sums are micro-averaged by the harness)."""
        rel_expansions = (
            sum(breakdown.rel_expansions) / len(breakdown.rel_expansions) if breakdown.valid else breakdown.rel_query
        )
        metrics: dict[str, Any] = {
            "valid": breakdown.valid,
            "reward": breakdown.reward,
            "query_result_count": breakdown.query_result_count,
            "union_size": breakdown.union_size,
            "rel_query": breakdown.rel_query,
            "rel_expansions": rel_expansions,
            "labelled": False,
        }
        labels = self.catalog.qrels.get(self._query_id or "")
        if labels:
            relevant = self.catalog.relevant(self._query_id)
            gains = {pid: grade - self._grade_low for pid, grade in labels.items()}
            merged = interleave([breakdown.query_results, *breakdown.expansion_results])
            metrics.update(
                {
                    "labelled": True,
                    "relevant": len(relevant),
                    "relevant_in_query_results": len(relevant.intersection(breakdown.query_results)),
                    "relevant_in_union": len(relevant.intersection(breakdown.union_results)),
                    "recall_query": recall(breakdown.query_results, relevant),
                    "recall_union": recall(breakdown.union_results, relevant),
                    "ndcg@10_query": ndcg_at_k(breakdown.query_results, gains, 10),
                    "ndcg@10_merged": ndcg_at_k(merged, gains, 10),
                }
            )
        return metrics


class ExpansionListAction(gym.ActionWrapper):
    """Accept a Python list of expansion strings as the action (for programmatic agents)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        limits = env.unwrapped.config
        self.action_space = spaces.Sequence(
            spaces.Text(max_length=limits.max_chars, min_length=1, charset=env.unwrapped.charset)
        )

    def action(self, action: Sequence[str]) -> str:
        return encode_action(list(action))


_CHARSETS: dict[str, str] = {}


def _charset(catalog: Catalog) -> str:
    """Printable ASCII plus every character the catalog's queries and product texts use (once per catalog)."""
    if catalog.content_hash not in _CHARSETS:
        _CHARSETS[catalog.content_hash] = _collect_characters(catalog)
    return _CHARSETS[catalog.content_hash]


def _collect_characters(catalog: Catalog) -> str:
    characters = set(string.printable) - set("\x0b\x0c\r")
    for text in catalog.queries.values():
        characters.update(text)
    for product in catalog.products:
        characters.update(product.title)
        characters.update(product.category)
        characters.update(product.attribute_text())
    return "".join(sorted(ch for ch in characters if ch.isprintable() or ch in "\n "))


class CatalogText(spaces.Text):
    """A Text space that also travels through ``AsyncVectorEnv``'s shared memory.

    Gymnasium 1.x reads a Text batch out of shared memory once, as a tuple of strings, so with
    the default ``shared_memory=True`` every later observation would be that first, empty one.
    Registering a live reader for this subclass makes ``gym.make_vec(..., "async")`` work as is.
    """


class SharedTextBatch(Sequence[str]):
    """A live view of the strings a vector env's workers wrote; a deep copy is a plain tuple."""

    def __init__(self, space: spaces.Text, memory: Any, n: int) -> None:
        self._space, self._memory, self._n = space, memory, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return tuple(self)[index]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        row = np.frombuffer(self._memory.get_obj(), dtype=np.int32).reshape(self._n, self._space.max_length)[index]
        characters = self._space.character_list
        return "".join([characters[value] for value in row[row < len(characters)].tolist()])

    def __iter__(self) -> Iterator[str]:
        return (self[index] for index in range(self._n))

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __repr__(self) -> str:
        return repr(tuple(self))


@read_from_shared_memory.register(CatalogText)
def _read_catalog_text(space: CatalogText, shared_memory: Any, n: int = 1) -> SharedTextBatch:
    return SharedTextBatch(space, shared_memory, n)
