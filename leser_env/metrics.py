"""Ranking metrics over graded human labels (the standard definitions, used by every report)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain with exponential gain, as in Burges et al. and trec_eval's ndcg_cut."""
    return sum((2.0**gain - 1.0) / math.log2(rank + 2) for rank, gain in enumerate(gains))


def ndcg_at_k(ranking: Sequence[str], grades: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k of a ranked list of ids against graded labels (unlabelled ids count as grade 0).

    The ideal ordering is over all labelled ids; a query without any positive grade scores 0.
    """
    ideal = dcg(sorted((grade for grade in grades.values() if grade > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(grades.get(item, 0.0), 0.0) for item in ranking[:k]]) / ideal


def interleave(lists: Sequence[Sequence[str]]) -> list[str]:
    """Round-robin merge without duplicates: rank 1 of each list, then rank 2, ... (the merged result list)."""
    merged: dict[str, None] = {}
    for rank in range(max((len(items) for items in lists), default=0)):
        for items in lists:
            if rank < len(items):
                merged.setdefault(items[rank], None)
    return list(merged)


def recall(found: Sequence[str] | set[str], relevant: set[str]) -> float:
    """Share of the relevant ids that were found (0 when nothing is relevant)."""
    return len(relevant.intersection(found)) / len(relevant) if relevant else 0.0
