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
from leser_env.actions import ActionLimits, encode_action
from leser_env.feedback import PseudoRelevanceFeedback
from leser_env.metrics import interleave, ndcg_at_k, recall
from leser_env.relevance import grade_range
from leser_env.resources import engine_for, relevance_for
from leser_env.reward import Action, Reward, RewardBreakdown, RewardConfig, RewardFunction

MAX_ACTION_CHARS = 4096  # the action space's length; step() accepts any text and judges it
MAX_CONTEXT_LINE_CHARS = 300
MAX_EVIDENCE_CHARS = 1200
EVIDENCE_TERMS = 8  # feedback terms shown


class LeserEnv(gym.Env):
    """Rewrite a shopping query into expansion queries; the catalog's search engine scores them.

    ## Episode
    One query is one episode. ``reset`` samples a query of the chosen split (or pins one with
    ``options={"query_id": id}`` or ``options={"query": text}``); ``step(action)`` scores the
    action and the episode terminates. Batch consumers (evaluation, GRPO, PPO) skip the episode
    bookkeeping: ``observe(query_id)`` / ``observe(text=...)`` renders an observation and
    ``score_group(query, actions, query_id=...)`` scores any number of actions for one query;
    neither touches the episode state.

    ## Observation space
    ``Dict(query=Text, context=Text, evidence=Text, partial_match=Discrete(2))``:
    - ``query``: the query. The character set is printable ASCII plus every character the catalog
      uses; a pinned query's other characters become spaces.
    - ``context``: the top ``context_k`` products the engine returns for it, one line each
      (``- title | category | attribute values``), as pseudo-relevance feedback.
    - ``partial_match``: 1 when conjunctive matching finds nothing and the context falls back to
      products matching some of the query's words (they are then not what the query retrieves).
    - ``evidence`` (``feedback_evidence=True``, the default; empty otherwise): what a classic PRF
      method reads off the top products (``leser_env.feedback``), up to six lines, every number in
      parentheses after its word (so a count never reads as a word such as ``52x84``):
      ``Feedback terms (weight): lumbar (21.3), ergonomic (12.0), ...`` (the strongest Bo1 terms
      of the top-10 products' titles, categories and attributes, query words and the product word
      left out), ``Query words the catalog matches (products): chair (412), back (37); no match:
      pian`` (each query word searched alone), ``Product word: chair`` (the word most of
      those products' titles share, the noun a PRF expansion is built around), ``Words that
      match together (products): back chair (37)`` (the product word with the query word most of
      those titles share that matches together with it, when one does), ``Feedback terms
      with them (products): lumbar (21), ergonomic (30), ...`` (each feedback term searched with
      those words: 0 means the combination matches nothing) and ``Classic expansions (prf):
      lumbar back chair; ergonomic back chair; ...`` (exactly what the prf baseline sends,
      composed from the lines above). A policy can start from the classic expansions and improve
      on them; ``feedback_evidence=False`` shows none of this.

    ## Action space
    ``Text``: the policy's raw completion,
    ``<think>...</think><answer>["expansion 1", ...]</answer>``. Any text is accepted; malformed
    text gets the format penalty (see ``leser_env.actions``; ``action_limits`` sets how many
    expansions and characters). ``ExpansionListAction`` wraps the environment so that a Python
    list of strings is the action.

    ## Reward
    ``leser_env.reward`` (v2): ``r_rel + page_weight * r_page + lambda * r_size`` against the
    original query's own results: r_rel the mean relevance of each expansion's top 10 minus the
    query's (the paper's term), r_page the gain of the served page (the 10 best-judged products
    of U(Y) with s(p) >= tau, averaged over its slots), r_size the log-ratio of judged-relevant
    products (s(p) >= tau) found; s(p) is the LightGBM relevance model's score of product p
    against the original query. ``reward="default"`` (page_weight 1, lambda 0.1, tau 0.5),
    ``"paper"`` (page_weight 0, tau 0: r_rel + 0.1 ln((1 + |U(Y)|) / (1 + |R(q)|))), a
    ``RewardConfig``, a dict of its fields, or any object with
    ``score_group(query, actions) -> list[RewardBreakdown]``. ``format_penalty`` (-2) for an
    invalid action.

    ## Info (from step and score_group)
    ``reward_breakdown`` (r_rel, r_page, r_size, rel_query, rel_expansions, pages, |R(q)|, |U(Y)|,
    judged-relevant counts, validity and error), ``expansions``, ``query_results`` (R(q) ids),
    ``expansion_results`` (R(y) ids per expansion), ``union_results`` (U(Y) ids),
    ``served_results`` (U(Y) ranked by the relevance model, top 10), ``metrics`` (the episode's
    terms of the evaluation metrics, human-label ones when the query has labels), ``query_id``,
    ``query``.

    ## Arguments
    ``catalog`` (name or generic directory, default "synthetic"), ``data_dir``, ``split``
    ("train" | "validation" | "test"), ``reward`` (see Reward), ``action_limits``
    (``ActionLimits``), ``context_k`` (default 5), ``feedback_evidence`` (default True),
    ``mode`` ("and" | "or": matching for the context and, with a config reward, the reward),
    ``engine_check`` (drop expansions that match no product before scoring; a config reward's
    option), ``seed``. Heavy objects (index, relevance model) are shared by every env in the process.

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
        reward: str | RewardConfig | Mapping[str, Any] | RewardFunction | None = None,
        action_limits: ActionLimits | None = None,
        context_k: int = 5,
        feedback_evidence: bool = True,
        mode: str | None = None,
        engine_check: bool | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', not {render_mode!r}")
        self.render_mode = render_mode
        self.catalog: Catalog = load_catalog(catalog, data_dir)
        self.catalog_spec, self.data_dir = str(catalog), (str(data_dir) if data_dir else None)
        self.split = Split(split)
        self.engine = engine_for(catalog, data_dir)
        self.action_limits = action_limits or ActionLimits()
        if isinstance(reward, RewardFunction):  # a reward object (a Reward subclass included) is used as it is
            if mode is not None or engine_check is not None:
                raise ValueError("mode and engine_check configure a reward config, not a reward object")
            self.reward: RewardFunction = reward
        else:
            config = RewardConfig.resolve(reward)
            overrides = {"mode": mode, "engine_check": engine_check}
            config = replace(config, **{key: value for key, value in overrides.items() if value is not None})
            self.reward = Reward(self.engine, relevance_for(catalog, data_dir), config, self.action_limits)
        self.matching = mode or getattr(getattr(self.reward, "config", None), "mode", "and")
        # Whether scoring drops expansions that match nothing (a reward object without a config: no).
        self.engine_check = bool(getattr(getattr(self.reward, "config", None), "engine_check", False))
        self.context_k = int(context_k)
        self.feedback = PseudoRelevanceFeedback(self.catalog_spec, self.data_dir) if feedback_evidence else None
        self.query_ids = self.catalog.query_ids(self.split)
        if not self.query_ids:
            raise ValueError(f"catalog {self.catalog.name!r} has no {self.split} queries")
        self._grade_low = grade_range(self.catalog)[0] if self.catalog.qrels else 0.0

        self.charset = _charset(self.catalog)
        self._allowed = frozenset(self.charset)
        longest_query = max(len(text) for text in self.catalog.queries.values())
        self.max_query_chars = max(256, longest_query)
        self.max_context_chars = self.context_k * (MAX_CONTEXT_LINE_CHARS + 1)
        self.observation_space = spaces.Dict(
            {
                "query": CatalogText(max_length=self.max_query_chars, min_length=0, charset=self.charset),
                "context": CatalogText(max_length=self.max_context_chars, min_length=0, charset=self.charset),
                "evidence": CatalogText(max_length=MAX_EVIDENCE_CHARS, min_length=0, charset=self.charset),
                "partial_match": spaces.Discrete(2),
            }
        )
        self.action_space = spaces.Text(max_length=MAX_ACTION_CHARS, min_length=0, charset=self.charset)
        self._query_id: str | None = None
        self._observation: dict[str, Any] | None = None
        self._last: RewardBreakdown | None = None
        self._initial_seed = seed  # used by the first reset() that passes no seed

    # -- Gymnasium API ------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._initial_seed is not None:
            seed, self._initial_seed = self._initial_seed, None
        super().reset(seed=seed)
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"reset options must be a dict, not {type(options).__name__}")
        options = options or {}
        if "query_id" in options:
            observation, info = self.observe(str(options["query_id"]))
        elif "query" in options:
            observation, info = self.observe(text=str(options["query"]))
        else:
            observation, info = self.observe(self.query_ids[int(self.np_random.integers(len(self.query_ids)))])
        self._query_id, self._observation, self._last = info["query_id"], observation, None
        return dict(observation), info

    def step(self, action: str):
        if self._observation is None:
            raise RuntimeError("call reset() before step(): each episode is one query")
        query, query_id = self._observation["query"], self._query_id
        breakdown = self.reward.score_group(query, [action])[0]
        info = self._info(breakdown, query, query_id)
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
            f"reward {last.reward:+.4f} [{status}] r_rel {last.r_rel:+.4f} r_page {last.r_page:.4f} "
            f"r_size {last.r_size:.4f} |R(q)| {last.query_result_count} |U(Y)| {last.union_size} "
            f"expansions {list(last.expansions)}"
        )

    # -- LESER extras: stateless, for batch consumers -----------------------------------

    def observe(self, query_id: str | None = None, *, text: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The observation for a catalog query (by id) or any text, and its info; no episode state changes."""
        if (query_id is None) == (text is None):
            raise ValueError("observe takes a query_id or text=..., exactly one")
        if query_id is not None:
            if query_id not in self.catalog.queries:
                raise ValueError(f"unknown query id {query_id!r} in catalog {self.catalog.name!r}")
            text = self.catalog.queries[query_id]
        query = self.clean_query(str(text))
        hits = self.engine.search(query, self.context_k, self.matching)
        partial = not hits.ids and self.matching == "and"
        context_ids = self.engine.search(query, self.context_k, "or").ids if partial else hits.ids
        evidence = self.feedback.evidence(query, EVIDENCE_TERMS).render() if self.feedback and query else ""
        observation = {
            "query": query,
            "context": self._render_context(context_ids),
            "evidence": self._printable(evidence)[:MAX_EVIDENCE_CHARS],
            "partial_match": int(partial),
        }
        info = {"query_id": query_id, "context_ids": list(context_ids), "split": str(self.split)}
        return observation, info

    def score_group(
        self, query: str, actions: Sequence[Action], query_id: str | None = None
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Score N actions for one query together (GRPO's group); no episode state changes.

        ``query`` is the observation's query text (as ``observe`` cleaned it); ``query_id`` adds
        the human-label metrics. Returns the rewards and, for each action, the info ``step`` gives.
        """
        if isinstance(actions, str) or not isinstance(actions, Sequence):
            raise TypeError(f"score_group takes a list of actions, not a {type(actions).__name__}")
        breakdowns = self.reward.score_group(query, list(actions))
        rewards = np.array([b.reward for b in breakdowns], dtype=np.float64)
        return rewards, [self._info(b, query, query_id) for b in breakdowns]

    def clean_query(self, text: str) -> str:
        """A query as the environment shows it: characters outside the charset become spaces, cut to length."""
        return self._printable(text)[: self.max_query_chars]

    @property
    def observation(self) -> dict[str, Any] | None:
        """The current episode's observation (None between episodes)."""
        return None if self._observation is None else dict(self._observation)

    @property
    def query_id(self) -> str | None:
        return self._query_id

    # -- internals ----------------------------------------------------------------------

    def _render_context(self, product_ids: Sequence[str]) -> str:
        lines = []
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

    def _info(self, breakdown: RewardBreakdown, query: str, query_id: str | None) -> dict[str, Any]:
        return {
            "query_id": query_id,
            "query": query,
            "reward_breakdown": breakdown.to_dict(),
            "expansions": list(breakdown.expansions),
            "query_results": list(breakdown.query_results),
            "expansion_results": [list(ids) for ids in breakdown.expansion_results],
            "union_results": list(breakdown.union_results),
            "served_results": list(breakdown.served_results),
            "metrics": self._metrics(breakdown, query_id),
        }

    def _metrics(self, breakdown: RewardBreakdown, query_id: str | None) -> dict[str, Any]:
        """This episode's terms of the evaluation metrics (sums are micro-averaged by the harness)."""
        rel_expansions = (
            sum(breakdown.rel_expansions) / len(breakdown.rel_expansions) if breakdown.valid else breakdown.rel_query
        )
        metrics: dict[str, Any] = {
            "valid": breakdown.valid,
            "reward": breakdown.reward,
            "r_rel": breakdown.r_rel,
            "r_page": breakdown.r_page,
            "r_size": breakdown.r_size,
            "query_result_count": breakdown.query_result_count,
            "union_size": breakdown.union_size,
            "expansion_count": len(breakdown.expansions),
            "rel_query": breakdown.rel_query,
            "rel_expansions": rel_expansions,
            "labelled": False,
        }
        labels = self.catalog.qrels.get(query_id or "")
        if labels:
            relevant = self.catalog.relevant(query_id)
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
                    "ndcg@10_served_query": ndcg_at_k(breakdown.served_query_results, gains, 10),
                    "ndcg@10_served": ndcg_at_k(breakdown.served_results, gains, 10),
                }
            )
        return metrics


class ExpansionListAction(gym.ActionWrapper):
    """Accept a Python list of expansion strings as the action (for programmatic agents)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        limits = env.unwrapped.action_limits
        self.action_space = spaces.Sequence(
            spaces.Text(max_length=limits.max_chars, min_length=1, charset=env.unwrapped.charset)
        )

    def action(self, action: Sequence[str]) -> Any:
        """A list of strings becomes the action text; anything else goes through to get the format penalty."""
        return encode_action(list(action)) if isinstance(action, list | tuple) else action


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
