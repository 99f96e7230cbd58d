"""The LESER reward, exactly as DESIGN.md defines it, with its whole breakdown.

For an original query q and a valid expansion set Y = {y1..ym}:

    R(x)    = ids of the top-D products the engine matches for x (conjunctive by default)
    U(Y)    = R(q) ∪ R(y1) ∪ ... ∪ R(ym)
    rel(x)  = mean relevance, judged against q, of the top-k products of R(x); 0 if R(x) is empty
    r_rel   = mean over y in Y of rel(y) - rel(q)
    r_size  = ln((1 + |U(Y)|) / (1 + |R(q)|))
    reward  = r_rel + lambda * r_size

An invalid action gets ``format_penalty``, which must lie below -1, the lowest reward a
valid action can get (r_rel >= -1, r_size >= 0): breaking the format never pays.

Sums use ``math.fsum`` so the reward does not depend on the order of Y; search results and
rel(x) are cached on the analysed terms of x, so cached, uncached and group-scored rewards
are identical.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from leser_env.actions import ActionLimits, ParsedAction, parse_action, validate_expansions
from leser_env.relevance import RelevanceModel
from leser_env.search import Hits, MatchMode, SearchEngine


@dataclass(frozen=True)
class RewardConfig:
    size_weight: float = 0.1  # lambda
    rel_k: int = 10  # k: products of R(x) judged for rel(x)
    depth: int = 100  # D: products in R(x)
    mode: MatchMode = "and"
    max_expansions: int = 5
    max_chars: int = 100
    format_penalty: float = -2.0

    def __post_init__(self) -> None:
        if self.mode not in ("and", "or"):
            raise ValueError(f"mode must be 'and' or 'or', not {self.mode!r}")
        if not 1 <= self.rel_k <= self.depth:
            raise ValueError(f"need 1 <= rel_k <= depth, got rel_k={self.rel_k}, depth={self.depth}")
        if self.size_weight < 0 or not math.isfinite(self.size_weight):
            raise ValueError(f"size_weight must be a finite number >= 0, got {self.size_weight}")
        if not self.format_penalty < -1.0:
            raise ValueError(f"format_penalty must be below -1 (the lowest valid reward), got {self.format_penalty}")
        if self.max_expansions < 1 or self.max_chars < 1:
            raise ValueError("max_expansions and max_chars must be at least 1")

    @property
    def limits(self) -> ActionLimits:
        return ActionLimits(self.max_expansions, self.max_chars)


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward and everything it was made of."""

    reward: float
    valid: bool
    r_rel: float = 0.0
    r_size: float = 0.0
    rel_query: float = 0.0
    rel_expansions: tuple[float, ...] = ()
    expansions: tuple[str, ...] = ()
    query_result_count: int = 0  # |R(q)|
    union_size: int = 0  # |U(Y)|
    expansion_result_counts: tuple[int, ...] = ()  # |R(y)| for each y
    query_matches: int = 0  # all products matching q (not capped at D)
    error: str | None = None
    error_detail: str = ""
    query_results: tuple[str, ...] = field(default=(), repr=False)  # R(q), best first
    union_results: tuple[str, ...] = field(default=(), repr=False)  # U(Y): R(q) first, then each R(y) in turn
    expansion_results: tuple[tuple[str, ...], ...] = field(default=(), repr=False)  # R(y) for each y

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


RESULT_FIELDS = frozenset({"query_results", "union_results", "expansion_results"})


class Reward:
    """Scores actions for queries against one catalog's search engine and relevance model."""

    def __init__(
        self,
        engine: SearchEngine,
        relevance: RelevanceModel,
        config: RewardConfig | None = None,
        cache_size: int = 200_000,
    ) -> None:
        self.engine = engine
        self.relevance = relevance
        self.config = config or RewardConfig()
        self._rel_cache: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()
        self._cache_size = cache_size

    def parse(self, action: str | Sequence[str]) -> ParsedAction:
        """Raw policy text, or a list of expansion strings, into a parsed action."""
        if isinstance(action, str):
            return parse_action(action, self.config.limits)
        if isinstance(action, list | tuple):
            return validate_expansions(list(action), self.config.limits)
        return parse_action(action, self.config.limits)  # reports NOT_TEXT

    def score(self, query: str, action: str | Sequence[str]) -> RewardBreakdown:
        return self.score_group(query, [action])[0]

    def score_group(self, query: str, actions: Sequence[str | Sequence[str]]) -> list[RewardBreakdown]:
        """Score N actions for one query together; shared expansions are searched and judged once."""
        query = query if isinstance(query, str) else ""
        parsed = [self.parse(action) for action in actions]
        query_key = self.engine.analyze(query)
        analysed = {y: self.engine.analyze(y) for p in parsed if p.valid for y in p.expansions}
        hits_of = self._hits(list(dict.fromkeys([query_key, *analysed.values()])))
        rel_of = self._rel(query, hits_of)
        base_hits, base_rel = hits_of[query_key], rel_of[query_key]
        return [self._breakdown(p, analysed, base_hits, base_rel, hits_of, rel_of) for p in parsed]

    def cache_info(self) -> dict[str, int]:
        return {"rel_entries": len(self._rel_cache), **{f"search_{k}": v for k, v in self.engine.cache_info().items()}}

    # -- internals ----------------------------------------------------------------------

    def _breakdown(
        self,
        parsed: ParsedAction,
        analysed: dict[str, tuple[str, ...]],
        base_hits: Hits,
        base_rel: float,
        hits_of: dict[tuple[str, ...], Hits],
        rel_of: dict[tuple[str, ...], float],
    ) -> RewardBreakdown:
        common = {
            "rel_query": base_rel,
            "query_result_count": len(base_hits.ids),
            "query_matches": base_hits.total,
            "query_results": base_hits.ids,
        }
        if not parsed.valid:
            return RewardBreakdown(
                reward=self.config.format_penalty,
                valid=False,
                error=str(parsed.error),
                error_detail=parsed.detail,
                union_size=len(base_hits.ids),
                union_results=base_hits.ids,
                **common,
            )
        expansion_keys = [analysed[y] for y in parsed.expansions]
        union = dict.fromkeys(base_hits.ids)
        for key in expansion_keys:
            union.update(dict.fromkeys(hits_of[key].ids))
        rels = tuple(rel_of[key] for key in expansion_keys)
        r_rel = math.fsum(rels) / len(rels) - base_rel
        r_size = math.log((1 + len(union)) / (1 + len(base_hits.ids)))
        return RewardBreakdown(
            reward=r_rel + self.config.size_weight * r_size,
            valid=True,
            r_rel=r_rel,
            r_size=r_size,
            rel_expansions=rels,
            expansions=parsed.expansions,
            union_size=len(union),
            expansion_result_counts=tuple(len(hits_of[key].ids) for key in expansion_keys),
            union_results=tuple(union),
            expansion_results=tuple(hits_of[key].ids for key in expansion_keys),
            **common,
        )

    def _hits(self, keys: list[tuple[str, ...]]) -> dict[tuple[str, ...], Hits]:
        """R(x) for each distinct analysed text (the engine caches results)."""
        return dict(zip(keys, self.engine.search_terms_many(keys, self.config.depth, self.config.mode), strict=True))

    def _rel(self, query: str, hits_of: dict[tuple[str, ...], Hits]) -> dict[tuple[str, ...], float]:
        """rel(x) for each x: mean relevance to the query of R(x)'s top k, judged in one batch."""
        rel_of: dict[tuple[str, ...], float] = {}
        pending: dict[tuple[str, ...], list[int]] = {}
        for key, hits in hits_of.items():
            cached = self._rel_cache.get((query, key))
            if cached is not None:
                self._rel_cache.move_to_end((query, key))
                rel_of[key] = cached
            elif not hits.ids:
                rel_of[key] = 0.0
            else:
                pending[key] = [self.engine.catalog.row_of[pid] for pid in hits.ids[: self.config.rel_k]]
        if pending:
            rows = np.array(sorted({row for rows in pending.values() for row in rows}), dtype=np.int64)
            scores = self.relevance.score(query, rows)
            score_of = dict(zip(rows.tolist(), scores.tolist(), strict=True))
            for key, key_rows in pending.items():
                rel_of[key] = math.fsum(score_of[row] for row in key_rows) / len(key_rows)
                self._rel_cache[(query, key)] = rel_of[key]
            while len(self._rel_cache) > self._cache_size:
                self._rel_cache.popitem(last=False)
        return rel_of
