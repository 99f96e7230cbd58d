"""Tune the search engine's field boosts on train-split labels (never validation or test).

For each candidate boost setting, rank every labelled train query's results disjunctively
(so boosts decide the order) and report mean nDCG@10 against the human grades. The README
records the grid and the chosen defaults (``leser_env.search.FieldBoosts``).

    python benchmarks/tune_field_boosts.py --catalog synthetic [--queries 1500]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random

from rich.console import Console
from rich.table import Table

from agents.progress import track
from catalogs import Split, load_catalog
from leser_env.metrics import ndcg_at_k
from leser_env.search import FieldBoosts, SearchEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    catalog = load_catalog(args.catalog, args.data_dir)
    engine = SearchEngine(catalog)
    query_ids = [qid for qid in catalog.query_ids(Split.TRAIN) if catalog.qrels.get(qid)]
    query_ids = random.Random(0).sample(query_ids, min(args.queries, len(query_ids)))
    grid = [
        FieldBoosts(*values)
        for values in itertools.product((1.0, 2.0, 4.0), (0.25, 0.5, 1.0), (0.5, 1.0, 2.0), (0.5, 1.0, 2.0))
    ]
    if len(catalog.products) and not any(p.description or p.category or p.attributes for p in catalog.products[:1000]):
        grid = [FieldBoosts()]  # titles only: boosts cannot change the order
    rows = []
    for boosts in track(grid, f"boost grid on {catalog.name}", enabled=not args.json):
        scorer = engine.with_boosts(boosts)
        texts = [catalog.queries[qid] for qid in query_ids]
        results = scorer.search_many(texts, k=10, mode="or")
        score = sum(ndcg_at_k(hits.ids, catalog.qrels[qid]) for qid, hits in zip(query_ids, results, strict=True))
        rows.append((score / len(query_ids), boosts))
    rows.sort(key=lambda row: row[0], reverse=True)
    default = next((score for score, boosts in rows if boosts == FieldBoosts()), None)
    if args.json:
        print(
            json.dumps(
                {
                    "catalog": catalog.name,
                    "queries": len(query_ids),
                    "default_ndcg@10": default,
                    "ranking": [{"ndcg@10": s, **vars(b)} for s, b in rows],
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"{catalog.name}: train nDCG@10 (OR ranking) over {len(query_ids)} queries, best 10")
    for column in ("nDCG@10", "title", "description", "category", "attributes"):
        table.add_column(column, justify="right")
    for score, boosts in rows[:10]:
        table.add_row(f"{score:.4f}", *(f"{value:g}" for value in vars(boosts).values()))
    Console().print(table)
    if default is not None:
        Console().print(f"current defaults {FieldBoosts()}: nDCG@10 {default:.4f}")


if __name__ == "__main__":
    main()
