"""Compare the baseline agents on the same held-out queries: one table, one chart.

    python examples/compare_baselines.py [--catalog synthetic] [--limit 200] [--out runs/baselines]

The same as `leser compare --agents none,random,prf --catalog synthetic --out runs/baselines`.
"""

from __future__ import annotations

import argparse

import agents
from agents.evaluate import compare, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="runs/baselines")
    args = parser.parse_args()

    baselines = [agents.make(name, catalog=args.catalog, data_dir=args.data_dir) for name in ("none", "random", "prf")]
    summaries = compare(baselines, args.catalog, args.split, args.data_dir, args.limit, out=args.out)
    print(markdown_table(summaries))
    print(f"chart: {args.out}/metrics.png")


if __name__ == "__main__":
    main()
