"""How much of the best edit to prf's set can a learner read off the observation?

    python examples/observation_headroom.py [--catalog synthetic] [--train 1500] [--limit 207] [--out runs/headroom]

A policy that reads the feedback evidence (``LeserEnv``'s class docstring) can only choose well
what the evidence tells it. This measures how much that is, with no language model in the way:

1. For each query, every set one edit away from prf's (drop one of prf's expansions, replace one
   with another phrase composed from the evidence, or add one: ``agents.baselines.evidence_candidates``),
   scored by the environment's reward. The best of them, or prf's set where none beats it, is the
   *oracle* edit: it reads the reward, as ``reward-search`` with ``max_edits=1`` does.
2. A gradient-boosted regressor (LightGBM) learns an edit's gain over prf's set from the numbers
   the observation shows about it: which of prf's expansions it removes (position, words), what it
   adds (source, feedback term's rank and weight, the product count the evidence prints), and the
   query's evidence (match counts of its words, the core phrase's count, the top term's weight).
   It is trained on train-split queries, every edit labelled with its true gain.
3. On held-out queries it makes the edit it predicts best where it predicts a gain (the *learned*
   edit). Beside it, a *fixed* edit that reads nothing per query: the core phrase in place of
   prf's last expansion (runs/v18's warm-up targets).

The learned edit's gain over prf, against the oracle's, is the share of the per-query choice the
observation carries for a learner that has seen every edit of ~1500 queries labelled: far more
supervision than a warm-up or GRPO on a CPU gets. ``--with-engine-counts`` adds what the engine
would say about each phrase if the observation showed it (its product count and how many of its
top products neither the query nor prf's other expansions retrieve), to see whether showing that
would help. Paired 95% bootstrap intervals over queries; a table on the console, and
``headroom.json``, ``headroom.md`` and ``headroom.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightgbm
import numpy as np

from agents.audit import bootstrap_mean
from agents.baselines import EvidencePhrase, evidence_candidates
from agents.progress import track
from catalogs.storage import png_figure, write_atomically, write_json_atomically
from leser_env.env import LeserEnv
from leser_env.feedback import Evidence

SOURCES = ("core", "matched", "term+core", "term+matched", "prf")
OBSERVED = [
    "query_words", "unmatched_words", "least_word_count", "most_word_count", "core_count", "top_term_weight",
    "prf_expansions", "edit_drops", "edit_adds", "removed_position", "removed_from_end", "removed_words",
    "added_source", "added_term_rank", "added_term_weight", "added_count", "added_words",
]  # fmt: skip
ENGINE = ["removed_total", "removed_own_products", "added_total", "added_new_products"]
BOOSTING = {"objective": "regression", "learning_rate": 0.03, "num_leaves": 15, "min_data_in_leaf": 50}


@dataclass
class QueryEdits:
    """One query's one-edit neighbours of prf's set: their features and their reward gain over it."""

    query_id: str
    prf_reward: float
    fixed: int | None  # the neighbour that is the fixed edit, where the evidence has a core phrase
    features: np.ndarray  # one row per neighbour
    gains: np.ndarray


def one_edit_neighbours(
    prf: list[EvidencePhrase], candidates: Sequence[EvidencePhrase], max_expansions: int
) -> list[tuple[int | None, EvidencePhrase | None]]:
    """(removed position, added phrase) for every drop, replacement and (while there is room) addition."""
    edits: list[tuple[int | None, EvidencePhrase | None]] = [(i, None) for i in range(len(prf))] if len(prf) > 1 else []
    edits += [(i, phrase) for i in range(len(prf)) for phrase in candidates]
    if len(prf) < max_expansions:
        edits += [(None, phrase) for phrase in candidates]
    return edits


def edited(texts: list[str], removed: int | None, added: str | None) -> list[str]:
    """``texts`` with one edit: ``added`` in place of position ``removed``, or either alone."""
    if removed is None:
        return [*texts, added] if added else list(texts)
    return [*texts[:removed], *([added] if added else []), *texts[removed + 1 :]]


def edit_features(
    evidence: Evidence, prf: list[EvidencePhrase], removed: int | None, added: EvidencePhrase | None
) -> list[float]:
    """The observation's numbers about one edit (``OBSERVED``'s order); -1 where one does not apply."""
    counts = [count for _, count in evidence.query_words]
    source, rank, weight, shown = -1, -1, -1.0, -1.0
    if added is not None:
        source = SOURCES.index(added.source)
        if added.source.startswith("term+"):
            rank, weight = added.index, evidence.terms[added.index][1]
        if added.source == "core":
            shown = evidence.core_count
        elif added.source == "term+core" and added.index < len(evidence.with_core):
            shown = evidence.with_core[added.index]
    return [
        len(counts), sum(1 for count in counts if not count), min(counts, default=0), max(counts, default=0),
        evidence.core_count, evidence.terms[0][1] if evidence.terms else 0.0,
        len(prf), float(removed is not None), float(added is not None),
        -1 if removed is None else removed, -1 if removed is None else len(prf) - 1 - removed,
        -1 if removed is None else len(prf[removed].text.split()),
        source, rank, weight, shown, -1 if added is None else len(added.text.split()),
    ]  # fmt: skip


def engine_features(env: LeserEnv, query: str, prf: list[str], removed: int | None, added: str | None) -> list[float]:
    """What the engine says about the edit's two phrases (``ENGINE``'s order); -1 where one does not apply."""
    depth = env.reward.config.depth  # type: ignore[attr-defined]
    kept = [text for i, text in enumerate(prf) if i != removed]
    others = set(env.engine.search(query, depth).ids).union(*(env.engine.search(text, depth).ids for text in kept))
    row = [-1.0, -1.0, -1.0, -1.0]
    if removed is not None:
        hits = env.engine.search(prf[removed], depth)
        row[:2] = [hits.total, len(set(hits.ids) - others)]
    if added is not None:
        hits = env.engine.search(added, depth)
        row[2:] = [hits.total, len(set(hits.ids) - others)]
    return row


def query_edits(env: LeserEnv, query_id: str, with_engine_counts: bool) -> QueryEdits | None:
    """Every one-edit neighbour of prf's set for one query, scored; None where prf writes nothing."""
    assert env.feedback is not None, "the observation's feedback evidence is needed (feedback_evidence=True)"
    observation, _ = env.observe(query_id)
    query = env.clean_query(observation["query"])
    evidence = env.feedback.evidence(query)
    phrases = evidence_candidates(evidence, query)
    prf = [phrase for phrase in phrases if phrase.source == "prf"]
    if not prf:
        return None
    candidates = [phrase for phrase in phrases if phrase.source != "prf"]
    edits = one_edit_neighbours(prf, candidates, env.action_limits.max_expansions)
    texts = [phrase.text for phrase in prf]
    sets = [texts] + [edited(texts, removed, added.text if added else None) for removed, added in edits]
    rewards, _ = env.score_group(query, sets)
    rows = [edit_features(evidence, prf, removed, added) for removed, added in edits]
    if with_engine_counts:
        rows = [
            row + engine_features(env, query, texts, removed, added.text if added else None)
            for row, (removed, added) in zip(rows, edits, strict=True)
        ]
    fixed = next(
        (k for k, (removed, added) in enumerate(edits) if removed == len(prf) - 1 and added and added.source == "core"),
        None,
    )
    gains = np.asarray(rewards[1:], dtype=float) - float(rewards[0])
    return QueryEdits(query_id, float(rewards[0]), fixed, np.asarray(rows, dtype=float), gains)


def collect(env: LeserEnv, limit: int | None, with_engine_counts: bool, description: str) -> list[QueryEdits]:
    query_ids = [query_id for query_id in env.query_ids if env.catalog.relevant(query_id)][:limit]
    found = (query_edits(env, query_id, with_engine_counts) for query_id in query_ids)
    scored = track(found, description, total=len(query_ids))
    return [edits for edits in scored if edits is not None and len(edits.gains)]


def headroom(
    catalog: str = "synthetic",
    data_dir: str | None = None,
    train: int | None = 1500,
    limit: int | None = None,
    reward: str = "default",
    with_engine_counts: bool = False,
    seed: int = 0,
) -> dict:
    """Fit the learned edit on ``train`` train-split queries and measure the three edits on ``limit``
    test-split queries (those with labels and a prf set); per-query gains over prf's set."""
    environments = {
        split: LeserEnv(catalog, data_dir, split=split, reward=reward, engine_check=True) for split in ("train", "test")
    }
    learn = collect(environments["train"], train, with_engine_counts, "train queries: one-edit sets")
    held_out = collect(environments["test"], limit, with_engine_counts, "test queries: one-edit sets")
    if not learn or not held_out:
        raise ValueError(f"{catalog}: need train and test queries with labels and a prf set")
    data = lightgbm.Dataset(np.vstack([q.features for q in learn]), np.concatenate([q.gains for q in learn]))
    model = lightgbm.train({**BOOSTING, "seed": seed, "deterministic": True, "verbose": -1}, data, num_boost_round=300)
    learned, oracle, fixed = [], [], []
    for query in held_out:
        predicted = model.predict(query.features)
        best = int(np.argmax(predicted))
        learned.append(query.gains[best] if predicted[best] > 0 else 0.0)
        oracle.append(max(float(query.gains.max()), 0.0))
        fixed.append(query.gains[query.fixed] if query.fixed is not None else 0.0)
    prf_reward = float(np.mean([q.prf_reward for q in held_out]))
    edits = {"fixed": np.array(fixed), "learned": np.array(learned), "oracle": np.array(oracle)}
    return {
        "catalog": catalog,
        "reward": reward,
        "engine_check": True,
        "features": OBSERVED + (ENGINE if with_engine_counts else []),
        "train_queries": len(learn),
        "train_edits": int(sum(len(q.gains) for q in learn)),
        "test_queries": len(held_out),
        "prf_reward": prf_reward,
        "gain_over_prf": {name: bootstrap_mean(values) for name, values in edits.items()},
        "learned_minus_fixed": bootstrap_mean(edits["learned"] - edits["fixed"]),
        "learned_edits_made": float(np.mean([gain != 0 for gain in learned])),
        "learned_share_of_oracle": float(np.mean(learned) / np.mean(oracle)) if np.mean(oracle) > 0 else None,
    }


NAMES = {
    "fixed": "fixed edit (core phrase for prf's last)",
    "learned": "learned edit (reads the observation)",
    "oracle": "oracle edit (reads the reward)",
}


def markdown(report: dict) -> str:
    lines = [
        f"{report['catalog']}, {report['test_queries']} test queries (learned from {report['train_queries']} train "
        f"queries, {report['train_edits']} labelled edits), reward {report['reward']}, engine check; "
        f"prf's mean reward {report['prf_reward']:+.4f}",
        "",
        "| one edit to prf's set | gain over prf [95% CI] |",
        "| --- | ---: |",
    ]
    for name, label in NAMES.items():
        stats = report["gain_over_prf"][name]
        lines.append(f"| {label} | {stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}] |")
    stats = report["learned_minus_fixed"]
    lines += ["", f"learned - fixed, paired: {stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}]"]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """One bar per edit: its mean gain over prf's set, the 95% interval as error bars."""
    stats = [report["gain_over_prf"][name] for name in reversed(NAMES)]
    means = [s["mean"] for s in stats]
    errors = [[s["mean"] - s["low"] for s in stats], [s["high"] - s["mean"] for s in stats]]
    with png_figure(path, figsize=(7, 3.2)) as (_, axis):
        axis.barh([NAMES[name] for name in reversed(NAMES)], means, xerr=errors, capsize=4, color="#4c72b0")
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_xlabel("mean reward gain over prf's set per query (95% CI)")
        axis.set_title(f"{report['catalog']}: {report['test_queries']} test queries", fontsize=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train", type=int, default=1500, help="train queries to learn from")
    parser.add_argument("--limit", type=int, default=None, help="test queries to measure on (default all)")
    parser.add_argument("--reward", default="default")
    parser.add_argument("--with-engine-counts", action="store_true")
    parser.add_argument("--out", default="runs/headroom")
    args = parser.parse_args()

    report = headroom(args.catalog, args.data_dir, args.train, args.limit, args.reward, args.with_engine_counts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "headroom.json", report)
    table = markdown(report)
    write_atomically(out / "headroom.md", table + "\n")
    plot(report, out / "headroom.png")
    print(table)
    share = report["learned_share_of_oracle"]
    if share is not None:
        print(f"the learned edit gets {share:.0%} of the oracle edit's gain")
    print(f"report: {out}/headroom.md, headroom.json, headroom.png")


if __name__ == "__main__":
    main()
