"""Cost of scoring one GRPO group through the reward, against the raw work it stands on, in one run.

A group is 4 actions x 5 expansions for one Home Depot test query (expansions are phrases
from the titles of products labelled for that query, as a policy would write them), scored by
the default reward (v2), which judges every product of U(Y), not only each top 10. The
reference does the same work with the libraries called directly, action by action: tantivy's
own query parser and ``Searcher.search`` for q and each expansion (top 100), then features
and ``Booster.predict`` for every product of the action's U(Y); and, tighter, the same searches
with a single feature pass and ``predict`` over the distinct products of the whole group. Ours:
``Reward.score_group`` with cold caches (cleared before every group), which parses the actions,
searches each distinct expansion once and judges each product once per query. Two kinds of
group: all 20 expansions distinct, and repeats (the 4 actions drawn from 2 expansion sets, as a
sharp policy samples).

    python benchmarks/bench_reward.py [--groups 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from catalogs import Split, load_catalog
from leser_env.actions import encode_action
from leser_env.resources import engine_for, relevance_for
from leser_env.reward import Reward
from leser_env.search import FIELDS


def expansion_set(rng: random.Random, words: list[str]) -> list[str]:
    return [" ".join(rng.sample(words, min(len(words), rng.randint(1, 3)))) for _ in range(5)]


def make_groups(catalog, rng: random.Random, count: int, repeated: bool) -> list[tuple[str, list[str]]]:
    """(query, 4 action texts) per group, from the wording of labelled products."""
    groups = []
    query_ids = [qid for qid in catalog.query_ids(Split.TEST) if catalog.qrels.get(qid)]
    for query_id in rng.sample(query_ids, count):
        words = [w for pid in catalog.qrels[query_id] for w in catalog.product(pid).title.split() if w.isalpha()]
        words = words or catalog.queries[query_id].split() or ["item"]

        sets = [expansion_set(rng, words) for _ in range(2 if repeated else 4)]
        actions = [encode_action(sets[i % len(sets)] if repeated else sets[i]) for i in range(4)]
        groups.append((catalog.queries[query_id], actions))
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    catalog = load_catalog("homedepot", args.data_dir)
    engine, model = engine_for("homedepot", args.data_dir), relevance_for("homedepot", args.data_dir)
    reward = Reward(engine, model)
    config = reward.config
    boosts = {field: getattr(engine.boosts, field) for field in FIELDS}
    index, searcher, booster = engine.index, engine.searcher, model.boosters[model.objective]

    def judge(query: str, rows: list[int]) -> None:
        if rows:
            matrix = model.features.features([query], np.zeros(len(rows), dtype=np.int64), np.array(rows))
            booster.predict(matrix, num_threads=1)

    def union_rows(query: str, action: str) -> list[int]:
        """The rows of U(Y) for one action: tantivy's parser and searcher, top 100 of q and each expansion."""
        expansions = json.loads(action.split("<answer>")[1].split("</answer>")[0])
        rows: dict[int, None] = {}
        for text in [query, *expansions]:
            parsed, _ = index.parse_query_lenient(text, list(FIELDS), boosts, conjunction_by_default=True)
            hits = searcher.search(parsed, limit=config.depth, count=True).hits
            rows.update(dict.fromkeys(searcher.fast_field_values("row", [address for _, address in hits])))
        return list(rows)

    def raw_group(query: str, actions: list[str]) -> None:
        for action in actions:
            judge(query, union_rows(query, action))

    def raw_batched_group(query: str, actions: list[str]) -> None:
        """The tightest direct version: every search, then one feature pass and one predict per group."""
        judge(query, list(dict.fromkeys(row for action in actions for row in union_rows(query, action))))

    def ours_group(query: str, actions: list[str]) -> None:
        engine.clear_cache()
        reward.clear_cache()
        reward.score_group(query, actions)

    report = {"catalog": "homedepot", "groups": args.groups, "group": "4 actions x 5 expansions", "cases": {}}
    rng = random.Random(0)
    for case, repeated in (("distinct", False), ("repeats", True)):
        groups = make_groups(catalog, rng, args.groups, repeated)
        for query, actions in groups[:5]:  # warm up code paths, not caches
            raw_group(query, actions)
            ours_group(query, actions)
        timings = {}
        for name, run in (("raw", raw_group), ("raw_batched", raw_batched_group), ("ours", ours_group)):
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for query, actions in groups:
                    run(query, actions)
                best = min(best, time.perf_counter() - start)
            timings[name] = best / len(groups) * 1000
        report["cases"][case] = {
            "raw_ms_per_group": timings["raw"],
            "raw_batched_ms_per_group": timings["raw_batched"],
            "ours_ms_per_group": timings["ours"],
            "ratio": timings["ours"] / timings["raw"],
            "ratio_to_batched": timings["ours"] / timings["raw_batched"],
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"one GRPO group (4 actions x 5 expansions) on Home Depot, {args.groups} groups, cold caches")
    for column in (
        "group",
        "raw, per action (ms)",
        "raw, one predict (ms)",
        "ours (ms)",
        "ours / raw",
        "ours / raw one predict",
    ):
        table.add_column(column, justify="right")
    for case, values in report["cases"].items():
        table.add_row(
            case,
            f"{values['raw_ms_per_group']:.2f}",
            f"{values['raw_batched_ms_per_group']:.2f}",
            f"{values['ours_ms_per_group']:.2f}",
            f"{values['ratio']:.2f}x",
            f"{values['ratio_to_batched']:.2f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
