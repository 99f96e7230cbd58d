"""Queries per second of our search layer against tantivy's own API, on Home Depot, in one run.

The reference issues the same searches straight through tantivy: its query parser (lenient,
conjunctive, the same field boosts) on the same index, ``Searcher.search`` and the same
fast-field lookup of product rows. The ratio reference/ours is the cost of our layer
(analysis, query building, result objects); a warm result cache is shown too.

    python benchmarks/bench_search.py [--queries 3000] [--k 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import tantivy
from rich.console import Console
from rich.table import Table

from catalogs import load_catalog
from leser_env.search import FIELDS, SearchEngine


def timed(run: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of a few repeats (the least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--mode", choices=["and", "or"], default="and")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    catalog = load_catalog("homedepot", args.data_dir)
    engine = SearchEngine(catalog)
    texts = list(catalog.queries.values())[: args.queries]
    boosts = {field: getattr(engine.boosts, field) for field in FIELDS}
    index, searcher = engine.index, engine.searcher
    conjunctive = args.mode == "and"

    def direct(text: str) -> list[int]:
        query, _errors = index.parse_query_lenient(text, list(FIELDS), boosts, conjunction_by_default=conjunctive)
        result = searcher.search(query, limit=args.k, count=True)
        return searcher.fast_field_values("row", [address for _, address in result.hits]) if result.hits else []

    def ours_single() -> None:
        engine.clear_cache()
        for text in texts:
            engine.search(text, args.k, args.mode)

    def ours_batch() -> None:
        engine.clear_cache()
        engine.search_many(texts, args.k, args.mode)

    def ours_warm() -> None:
        for text in texts:
            engine.search(text, args.k, args.mode)

    def direct_single() -> None:
        for text in texts:
            direct(text)

    def direct_batch() -> None:
        size = -(-len(texts) // engine.threads)
        chunks = [texts[start : start + size] for start in range(0, len(texts), size)]
        with ThreadPoolExecutor(len(chunks)) as pool:
            list(pool.map(lambda chunk: [direct(text) for text in chunk], chunks))

    agree = sum(
        engine.search(text, args.k, args.mode).total
        == searcher.search(
            index.parse_query_lenient(text, list(FIELDS), boosts, conjunction_by_default=conjunctive)[0], limit=1
        ).count
        for text in texts
    ) / len(texts)

    seconds = {
        name: timed(run)
        for name, run in [
            ("direct_single", direct_single),
            ("ours_single", ours_single),
            ("direct_batch", direct_batch),
            ("ours_batch", ours_batch),
            ("ours_warm_cache", ours_warm),
        ]
    }
    qps = {name: len(texts) / value for name, value in seconds.items()}
    report = {
        "catalog": "homedepot",
        "queries": len(texts),
        "k": args.k,
        "mode": args.mode,
        "threads": engine.threads,
        "tantivy_version": tantivy.__version__,
        "qps": qps,
        "overhead_single": seconds["ours_single"] / seconds["direct_single"],
        "overhead_batch": seconds["ours_batch"] / seconds["direct_batch"],
        "batch_speedup": seconds["ours_single"] / seconds["ours_batch"],
        "match_count_agreement_with_tantivy_parser": agree,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"search on Home Depot: {len(texts)} queries, k={args.k}, mode={args.mode}, {engine.threads} threads"
    )
    for column in ("", "tantivy direct (q/s)", "ours (q/s)", "ours / direct time"):
        table.add_column(column, justify="right")
    table.add_row(
        "single", f"{qps['direct_single']:,.0f}", f"{qps['ours_single']:,.0f}", f"{report['overhead_single']:.2f}x"
    )
    table.add_row(
        "batched", f"{qps['direct_batch']:,.0f}", f"{qps['ours_batch']:,.0f}", f"{report['overhead_batch']:.2f}x"
    )
    table.add_row("warm cache", "", f"{qps['ours_warm_cache']:,.0f}", "")
    console = Console()
    console.print(table)
    console.print(
        f"batched vs single (ours): {report['batch_speedup']:.2f}x; match counts equal to tantivy's "
        f"parser on {agree:.1%} of queries"
    )


if __name__ == "__main__":
    main()
