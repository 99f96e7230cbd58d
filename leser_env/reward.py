"""The LESER reward (v2), with its whole breakdown, and the paper's formula as a preset.

For an original query q and a valid expansion set Y = {y1..ym}:

    R(x)    = ids of the top-D products the engine matches for x (conjunctive by default)
    U(Y)    = R(q) ∪ R(y1) ∪ ... ∪ R(ym)
    s(p)    = the relevance model's score in [0, 1] of product p judged against q (once per query)
    rel(x)  = mean s over the top-k products of R(x); 0 if R(x) is empty
    r_rel   = mean over y in Y of rel(y) - rel(q)                         (the paper's term)
    page(S) = (1/k) * sum of the k largest s(p) over p in S with s(p) >= tau (missing slots 0)
    r_page  = page(U(Y)) - page(R(q))                                       (>= 0)
    r_size  = ln((1 + |{p in U(Y): s(p) >= tau}|) / (1 + |{p in R(q): s(p) >= tau}|))   (>= 0)
    reward  = r_rel + page_weight * r_page + lambda * r_size

Presets (``RewardConfig.preset(name)``):
- ``"default"``: page_weight 1, lambda 0.1, tau 0.5. Coverage and the served page count only the
  products the judge itself finds relevant: measured against human labels, ungated coverage paid
  generic junk ("set", "black") on zero-result queries half or more of what prf earns there, and
  the served-page term raised agreement with human recall and served-page nDCG (``leser reward audit``).
- ``"paper"``: page_weight 0, tau 0: r_rel + 0.1 * ln((1 + |U(Y)|) / (1 + |R(q)|)), the reward as
  first published here (every product counts for coverage).

An invalid action gets ``format_penalty``, which must lie below -1, the lowest reward a valid
action can get (r_rel >= -1, r_page >= 0, r_size >= 0): breaking the format never pays. With
``engine_check``, the expansions the engine matches nothing for are dropped before scoring (as a
search system would not show them); when none is left, the set is the query itself (reward 0).

Sums use ``math.fsum`` and ties in the page are broken by product id, so the reward does not
depend on the order of Y; each product's s(p) is computed once per query and cached, so cached,
uncached and group-scored rewards are identical.

A reward is anything with ``score_group(query, actions) -> list[RewardBreakdown]``
(``RewardFunction``): ``LeserEnv(reward=...)`` takes one, so a new variant is one class (a
subclass of ``Reward`` overriding ``combine``, or a wrapper around one).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from leser_env.actions import ActionLimits, ParsedAction, parse_action, validate_expansions
from leser_env.config_ranges import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, Range, check_ranges
from leser_env.relevance import RelevanceModel
from leser_env.search import Hits, MatchMode, SearchEngine

Action = str | Sequence[str]


@dataclass(frozen=True)
class RewardConfig:
    page_weight: float = 1.0  # weight of r_page
    size_weight: float = 0.1  # lambda, weight of r_size
    relevance_threshold: float = 0.5  # tau: s(p) >= tau counts for r_page and r_size
    rel_k: int = 10  # k: products of R(x) judged for rel(x), and slots of the page
    depth: int = 100  # D: products in R(x)
    mode: MatchMode = "and"
    engine_check: bool = False  # drop the expansions that match no product before scoring
    format_penalty: float = -2.0  # below -1, the lowest reward a valid action can get

    def __post_init__(self) -> None:
        if self.mode not in ("and", "or"):
            raise ValueError(f"mode must be 'and' or 'or', not {self.mode!r}")
        check_ranges(
            self,
            {
                "page_weight": NON_NEGATIVE,
                "size_weight": NON_NEGATIVE,
                "relevance_threshold": UNIT_INTERVAL,
                "rel_k": POSITIVE,
                "depth": POSITIVE,
                "format_penalty": Range(-math.inf, -1.0, closed_high=False),  # below every valid action's reward
            },
        )
        if self.rel_k > self.depth:
            raise ValueError(f"need rel_k <= depth, got rel_k={self.rel_k}, depth={self.depth}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RewardConfig:
        """A named preset ("default" or "paper"), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown reward preset {name!r}; presets: {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    @classmethod
    def resolve(cls, spec: str | RewardConfig | Mapping[str, Any] | None) -> RewardConfig:
        """A config from a preset name, a config, or a dict of fields (``{"preset": "paper", ...}`` too)."""
        if spec is None:
            return cls()
        if isinstance(spec, RewardConfig):
            return spec
        if isinstance(spec, str):
            return cls.preset(spec)
        if isinstance(spec, Mapping):
            values = dict(spec)
            base = values.pop("preset", "default")
            unknown = sorted(set(values) - {item.name for item in fields(cls)})
            if unknown:
                raise ValueError(f"unknown reward config field(s) {unknown}; fields: {[f.name for f in fields(cls)]}")
            return cls.preset(base, **values)
        raise TypeError(f"a reward config is a preset name, a RewardConfig or a dict, not {type(spec).__name__}")


PRESETS: dict[str, RewardConfig] = {
    "default": RewardConfig(),
    "paper": RewardConfig(page_weight=0.0, relevance_threshold=0.0),
}


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward and everything it was made of."""

    reward: float
    valid: bool
    r_rel: float = 0.0
    r_page: float = 0.0
    r_size: float = 0.0
    rel_query: float = 0.0
    rel_expansions: tuple[float, ...] = ()
    page_query: float = 0.0  # page(R(q))
    page_union: float = 0.0  # page(U(Y))
    expansions: tuple[str, ...] = ()  # what was scored (after the engine check, if on)
    dropped_expansions: tuple[str, ...] = ()  # removed by the engine check
    query_result_count: int = 0  # |R(q)|
    union_size: int = 0  # |U(Y)|
    judged_relevant_query: int = 0  # |{p in R(q): s(p) >= tau}|
    judged_relevant_union: int = 0  # |{p in U(Y): s(p) >= tau}|
    expansion_result_counts: tuple[int, ...] = ()  # |R(y)| for each y
    query_matches: int = 0  # all products matching q (not capped at D)
    error: str | None = None
    error_detail: str = ""
    query_results: tuple[str, ...] = field(default=(), repr=False)  # R(q), best first
    union_results: tuple[str, ...] = field(default=(), repr=False)  # U(Y): R(q) first, then each R(y) in turn
    expansion_results: tuple[tuple[str, ...], ...] = field(default=(), repr=False)  # R(y) for each y
    served_results: tuple[str, ...] = field(default=(), repr=False)  # U(Y) ranked by s(p): the served page
    served_query_results: tuple[str, ...] = field(default=(), repr=False)  # R(q) ranked by s(p)

    def to_dict(self, with_results: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; the result id lists only ``with_results`` (they are long)."""
        record: dict[str, Any] = {}
        for item in fields(self):
            if item.name in RESULT_FIELDS and not with_results:
                continue
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                value = [list(entry) if isinstance(entry, tuple) else entry for entry in value]
            record[item.name] = value
        return record


RESULT_FIELDS = frozenset(
    {"query_results", "union_results", "expansion_results", "served_results", "served_query_results"}
)
SERVED_PAGE = 10  # ids kept of each served ranking (nDCG@10 reads them)


@runtime_checkable
class RewardFunction(Protocol):
    """What ``LeserEnv`` needs of a reward: score N actions for one query together."""

    def score_group(self, query: str, actions: Sequence[Action]) -> list[RewardBreakdown]: ...


class Reward:
    """Scores actions for queries against one catalog's search engine and relevance model."""

    def __init__(
        self,
        engine: SearchEngine,
        relevance: RelevanceModel,
        config: RewardConfig | str | Mapping[str, Any] | None = None,
        limits: ActionLimits | None = None,
        cache_queries: int = 4096,
    ) -> None:
        self.engine = engine
        self.relevance = relevance
        self.config = RewardConfig.resolve(config)
        self.limits = limits or ActionLimits()
        self._scores: OrderedDict[str, dict[int, float]] = OrderedDict()  # query -> product row -> s(p)
        self._cache_queries = cache_queries

    def parse(self, action: object) -> ParsedAction:
        """Raw policy text, or a list of expansion strings, into a parsed action."""
        if isinstance(action, str):
            return parse_action(action, self.limits)
        if isinstance(action, list | tuple):
            return validate_expansions(list(action), self.limits)
        return parse_action(action, self.limits)  # reports NOT_TEXT

    def score(self, query: str, action: Action) -> RewardBreakdown:
        return self.score_group(query, [action])[0]

    def score_group(self, query: str, actions: Sequence[Action]) -> list[RewardBreakdown]:
        """Score N actions for one query together; shared expansions are searched and judged once."""
        query = query if isinstance(query, str) else ""
        if isinstance(actions, str):
            raise TypeError("score_group takes a list of actions, not one action text (use score)")
        parsed = [self.parse(action) for action in actions]
        query_key = self.engine.analyze(query)
        analysed = {y: self.engine.analyze(y) for p in parsed if p.valid for y in p.expansions}
        hits_of = self._hits(list(dict.fromkeys([query_key, *analysed.values()])))
        score_of = self.judge(query, {pid for hits in hits_of.values() for pid in hits.ids})
        query_terms = _Terms.of(hits_of[query_key], score_of, self.config)
        return [self._breakdown(p, analysed, hits_of, score_of, query_terms) for p in parsed]

    def judge(self, query: str, product_ids: set[str] | Sequence[str]) -> dict[str, float]:
        """s(p) for each product id against the query: scored once per query and cached."""
        row_of = self.engine.catalog.row_of
        known = self._scores.get(query)
        if known is None:
            known = self._scores[query] = {}
            while len(self._scores) > self._cache_queries:
                self._scores.popitem(last=False)
        else:
            self._scores.move_to_end(query)
        rows = {pid: row_of[pid] for pid in product_ids}
        missing = np.array(sorted({row for row in rows.values() if row not in known}), dtype=np.int64)
        if len(missing):
            known.update(zip(missing.tolist(), self.relevance.score(query, missing).tolist(), strict=True))
        return {pid: known[row] for pid, row in rows.items()}

    def combine(self, r_rel: float, r_page: float, r_size: float) -> float:
        """The reward from its terms (override for a variant that weighs them otherwise)."""
        return r_rel + self.config.page_weight * r_page + self.config.size_weight * r_size

    def cache_info(self) -> dict[str, int]:
        judged = sum(len(scores) for scores in self._scores.values())
        return {"judged_queries": len(self._scores), "judged_products": judged} | {
            f"search_{k}": v for k, v in self.engine.cache_info().items()
        }

    def clear_cache(self) -> None:
        self._scores.clear()

    # -- internals ----------------------------------------------------------------------

    def _breakdown(
        self,
        parsed: ParsedAction,
        analysed: dict[str, tuple[str, ...]],
        hits_of: dict[tuple[str, ...], Hits],
        score_of: dict[str, float],
        base: _Terms,
    ) -> RewardBreakdown:
        common = {
            "rel_query": base.rel,
            "page_query": base.page,
            "query_result_count": len(base.hits.ids),
            "judged_relevant_query": base.relevant,
            "query_matches": base.hits.total,
            "query_results": base.hits.ids,
            "served_query_results": base.served,
        }
        if not parsed.valid:
            return RewardBreakdown(
                reward=self.config.format_penalty,
                valid=False,
                error=str(parsed.error),
                error_detail=parsed.detail,
                page_union=base.page,
                union_size=len(base.hits.ids),
                judged_relevant_union=base.relevant,
                union_results=base.hits.ids,
                served_results=base.served,
                **common,
            )
        expansions, dropped = list(parsed.expansions), []
        if self.config.engine_check:
            kept = [y for y in expansions if hits_of[analysed[y]].ids]
            dropped = [y for y in expansions if not hits_of[analysed[y]].ids]
            expansions = kept
        if not expansions:  # every expansion dropped: the query alone is served
            return RewardBreakdown(
                reward=self.combine(0.0, 0.0, 0.0),
                valid=True,
                rel_expansions=(base.rel,),
                dropped_expansions=tuple(dropped),
                page_union=base.page,
                union_size=len(base.hits.ids),
                judged_relevant_union=base.relevant,
                expansion_result_counts=(len(base.hits.ids),),
                union_results=base.hits.ids,
                expansion_results=(base.hits.ids,),
                served_results=base.served,
                **common,
            )
        keys = [analysed[y] for y in expansions]
        union = dict.fromkeys(base.hits.ids)
        for key in keys:
            union.update(dict.fromkeys(hits_of[key].ids))
        rels = tuple(_rel(hits_of[key], score_of, self.config.rel_k) for key in keys)
        union_terms = _Terms.of(Hits(tuple(union), (), len(union)), score_of, self.config)
        r_rel = math.fsum(rels) / len(rels) - base.rel
        r_page = union_terms.page - base.page  # >= 0 exactly: a superset's k largest sum to no less
        r_size = math.log((1 + union_terms.relevant) / (1 + base.relevant))
        return RewardBreakdown(
            reward=self.combine(r_rel, r_page, r_size),
            valid=True,
            r_rel=r_rel,
            r_page=r_page,
            r_size=r_size,
            rel_expansions=rels,
            page_union=union_terms.page,
            expansions=tuple(expansions),
            dropped_expansions=tuple(dropped),
            union_size=len(union),
            judged_relevant_union=union_terms.relevant,
            expansion_result_counts=tuple(len(hits_of[key].ids) for key in keys),
            union_results=tuple(union),
            expansion_results=tuple(hits_of[key].ids for key in keys),
            served_results=union_terms.served,
            **common,
        )

    def _hits(self, keys: list[tuple[str, ...]]) -> dict[tuple[str, ...], Hits]:
        """R(x) for each distinct analysed text (the engine caches results)."""
        return dict(zip(keys, self.engine.search_terms_many(keys, self.config.depth, self.config.mode), strict=True))


@dataclass(frozen=True)
class _Terms:
    """What a result set contributes: rel of its top k, its page, its judged-relevant count, its served order."""

    hits: Hits
    rel: float
    page: float
    relevant: int
    served: tuple[str, ...]

    @classmethod
    def of(cls, hits: Hits, score_of: Mapping[str, float], config: RewardConfig) -> _Terms:
        tau, k = config.relevance_threshold, config.rel_k
        # Ranked by score, ties by id: the order of U(Y) (which follows Y's order) never matters.
        served = heapq.nsmallest(max(k, SERVED_PAGE), hits.ids, key=lambda pid: (-score_of[pid], pid))
        page = math.fsum(score_of[pid] for pid in served[:k] if score_of[pid] >= tau) / k
        relevant = sum(1 for pid in hits.ids if score_of[pid] >= tau)
        return cls(hits, _rel(hits, score_of, k), page, relevant, tuple(served[:SERVED_PAGE]))


def _rel(hits: Hits, score_of: Mapping[str, float], k: int) -> float:
    """Mean s over the top k of R(x) in the engine's order; 0 when R(x) is empty."""
    top = hits.ids[:k]
    return math.fsum(score_of[pid] for pid in top) / len(top) if top else 0.0
