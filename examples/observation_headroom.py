"""How much of the best edit to prf's set can a learner read off the observation?

    python examples/observation_headroom.py [--catalog synthetic] [--train 1500] [--limit 207] [--edits 1]
        [--with-engine-counts] [--out runs/headroom]

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
   It is trained on train-split queries, every edit labelled with its true gain: the model, features
   and settings of the ``learned-edit`` agent (``agents/learned_edit.py``).
3. On held-out queries it makes the edit it predicts best where it predicts a gain (the *learned*
   edit). Beside it, a *fixed* edit that reads nothing per query: the core phrase in place of
   prf's last expansion (runs/v18's warm-up targets).

The learned edit's gain over prf, against the oracle's, is the share of the per-query choice the
observation carries for a learner that has seen every edit of ~1500 queries labelled: far more
supervision than a warm-up or GRPO on a CPU gets. ``--with-engine-counts`` adds what the engine
would say about each phrase if the observation showed it (its product count and how many of its
top products neither the query nor prf's other expansions retrieve), to see whether showing that
would help. ``--edits K`` lets the learned and the oracle chooser make up to K edits, one after
another, each from the set the last one left (the learned one with the same model; each stops
where it sees no gain), as ``reward-search`` with ``max_edits=K`` does for the oracle. Paired 95%
bootstrap intervals over queries; a table on the console, and ``headroom.json``, ``headroom.md``
and ``headroom.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.audit import bootstrap_mean
from agents.baselines import EvidencePhrase
from agents.learned_edit import EDIT_FEATURES, LearnedEditConfig, Query, fit, read_labelled_queries, scored_edits
from agents.progress import track
from catalogs.storage import png_figure, write_atomically, write_json_atomically
from leser_env.env import LeserEnv

ENGINE = ["removed_total", "removed_own_products", "added_total", "added_new_products"]


@dataclass
class Neighbours:
    """The sets one edit from a set: what the observation shows about each edit, its reward gain."""

    reward: float  # the set's own reward
    sets: list[list[EvidencePhrase]]
    features: np.ndarray  # one row per neighbour
    gains: np.ndarray  # each neighbour's reward minus the set's
    fixed: int | None  # the neighbour that puts the core phrase in place of the set's last expansion


def engine_features(env: LeserEnv, query: str, current: list[str]) -> Callable[[int | None, str | None], list[float]]:
    """For one set, what the engine says about an edit's two phrases (``ENGINE``'s order; -1 where one
    does not apply): each one's product count, and how many of its top products neither the query
    nor the set's other (kept) expansions retrieve."""
    depth = env.reward.config.depth  # type: ignore[attr-defined]
    kept_by_removed: dict[int | None, set[str]] = {}

    def others(removed: int | None) -> set[str]:
        if removed not in kept_by_removed:
            kept = [text for i, text in enumerate(current) if i != removed]
            searches = (env.engine.search(text, depth).ids for text in [query, *kept])
            kept_by_removed[removed] = set().union(*searches)
        return kept_by_removed[removed]

    def row(removed: int | None, added: str | None) -> list[float]:
        values = [-1.0, -1.0, -1.0, -1.0]
        if removed is not None:
            hits = env.engine.search(current[removed], depth)
            values[:2] = [hits.total, len(set(hits.ids) - others(removed))]
        if added is not None:
            hits = env.engine.search(added, depth)
            values[2:] = [hits.total, len(set(hits.ids) - others(removed))]
        return values

    return row


def neighbours(env: LeserEnv, query: Query, current: list[EvidencePhrase], with_engine_counts: bool) -> Neighbours:
    """Every set one edit from ``current``, scored with it in one group (``agents.learned_edit.scored_edits``)."""
    step, gains, reward = scored_edits(env, query, current)
    sets = [edited for _, _, edited in step.edits]
    features = step.features
    if with_engine_counts:
        row = engine_features(env, query.text, [phrase.text for phrase in current])
        engine = [row(removed, added.text if added else None) for removed, added, _ in step.edits]
        features = np.hstack([features, np.asarray(engine, dtype=float).reshape(len(sets), len(ENGINE))])
    last = len(current) - 1
    fixed = next(
        (k for k, (i, added, _) in enumerate(step.edits) if i == last and added and added.source == "core"), None
    )
    return Neighbours(reward, sets, features, gains, fixed)


def improve(
    env: LeserEnv,
    query: Query,
    start: Neighbours,
    choose: Callable[[Neighbours], int | None],
    edits: int,
    with_engine_counts: bool,
) -> float:
    """The gain over the start set after up to ``edits`` edits, each the neighbour ``choose`` picks
    (None: stop)."""
    step, gain = start, 0.0
    for round_ in range(edits):
        chosen = choose(step) if len(step.gains) else None
        if chosen is None:
            break
        gain += float(step.gains[chosen])
        if round_ + 1 < edits:
            step = neighbours(env, query, step.sets[chosen], with_engine_counts)
    return gain


def headroom(
    catalog: str = "synthetic",
    data_dir: str | None = None,
    train: int | None = 1500,
    limit: int | None = None,
    reward: str = "default",
    with_engine_counts: bool = False,
    edits: int = 1,
    seed: int = 0,
) -> dict:
    """Fit the learned edit on ``train`` train-split queries (every edit of prf's set, labelled), and
    measure the fixed edit and up to ``edits`` learned and oracle edits on ``limit`` test-split
    queries (those with labels and a prf set); per-query gains over prf's set."""
    if edits < 1:
        raise ValueError(f"edits must be >= 1, got {edits}")
    environments = {
        split: LeserEnv(catalog, data_dir, split=split, reward=reward, engine_check=True) for split in ("train", "test")
    }
    learn = [
        neighbours(environments["train"], query, query.prf, with_engine_counts)
        for query in read_labelled_queries(environments["train"], train)
    ]
    learn = [step for step in learn if len(step.gains)]
    held_out = read_labelled_queries(environments["test"], limit)
    if not learn or not held_out:
        raise ValueError(f"{catalog}: need train and test queries with labels and a prf set")
    features = EDIT_FEATURES + (ENGINE if with_engine_counts else [])
    config = LearnedEditConfig(seed=seed)  # learned-edit's defaults
    model = fit(np.vstack([q.features for q in learn]), np.concatenate([q.gains for q in learn]), config, features)

    def learned_choice(step: Neighbours) -> int | None:
        predicted = model.predict(step.features)
        best = int(np.argmax(predicted))
        return best if predicted[best] > 0 else None

    def oracle_choice(step: Neighbours) -> int | None:
        best = int(np.argmax(step.gains))
        return best if step.gains[best] > 0 else None

    gains: dict[str, list[float]] = {"fixed": [], "learned": [], "oracle": []}
    prf_rewards = []
    env = environments["test"]
    for query in track(held_out, "test queries: fixed, learned and oracle edits"):
        first = neighbours(env, query, query.prf, with_engine_counts)
        prf_rewards.append(first.reward)
        gains["fixed"].append(float(first.gains[first.fixed]) if first.fixed is not None else 0.0)
        gains["learned"].append(improve(env, query, first, learned_choice, edits, with_engine_counts))
        gains["oracle"].append(improve(env, query, first, oracle_choice, edits, with_engine_counts))
    arrays = {name: np.array(values) for name, values in gains.items()}
    oracle_mean = float(arrays["oracle"].mean())
    return {
        "catalog": catalog,
        "reward": reward,
        "engine_check": True,
        "edits": edits,
        "features": features,
        "train_queries": len(learn),
        "train_edits": int(sum(len(q.gains) for q in learn)),
        "test_queries": len(held_out),
        "prf_reward": float(np.mean(prf_rewards)),
        "gain_over_prf": {name: bootstrap_mean(values) for name, values in arrays.items()},
        "learned_minus_fixed": bootstrap_mean(arrays["learned"] - arrays["fixed"]),
        "learned_share_of_oracle": float(arrays["learned"].mean()) / oracle_mean if oracle_mean > 0 else None,
    }


def names(edits: int) -> dict[str, str]:
    """The three edits' labels in tables and the chart."""
    made = "edit" if edits == 1 else f"edits (up to {edits})"
    return {
        "fixed": "fixed edit (core phrase for prf's last)",
        "learned": f"learned {made} (reads the observation)",
        "oracle": f"oracle {made} (reads the reward)",
    }


def markdown(report: dict) -> str:
    lines = [
        f"{report['catalog']}, {report['test_queries']} test queries (learned from {report['train_queries']} train "
        f"queries, {report['train_edits']} labelled edits), reward {report['reward']}, engine check; "
        f"prf's mean reward {report['prf_reward']:+.4f}",
        "",
        "| edits to prf's set | gain over prf [95% CI] |",
        "| --- | ---: |",
    ]
    for name, label in names(report["edits"]).items():
        stats = report["gain_over_prf"][name]
        lines.append(f"| {label} | {stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}] |")
    stats = report["learned_minus_fixed"]
    lines += ["", f"learned - fixed, paired: {stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}]"]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """One bar per edit: its mean gain over prf's set, the 95% interval as error bars."""
    labels = names(report["edits"])
    stats = [report["gain_over_prf"][name] for name in reversed(labels)]
    means = [s["mean"] for s in stats]
    errors = [[s["mean"] - s["low"] for s in stats], [s["high"] - s["mean"] for s in stats]]
    with png_figure(path, figsize=(7, 3.2)) as (_, axis):
        axis.barh([labels[name] for name in reversed(labels)], means, xerr=errors, capsize=4, color="#4c72b0")
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
    parser.add_argument("--edits", type=int, default=1, help="learned and oracle edits, one after another")
    parser.add_argument("--out", default="runs/headroom")
    args = parser.parse_args()

    report = headroom(
        args.catalog, args.data_dir, args.train, args.limit, args.reward, args.with_engine_counts, args.edits
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "headroom.json", report)
    table = markdown(report)
    write_atomically(out / "headroom.md", table + "\n")
    plot(report, out / "headroom.png")
    print(table)
    share = report["learned_share_of_oracle"]
    if share is not None:
        print(f"the learned edits get {share:.0%} of the oracle edits' gain")
    print(f"report: {out}/headroom.md, headroom.json, headroom.png")


if __name__ == "__main__":
    main()
