"""What serving the tail costs and gains (the paper's open question 2), on this machine.

Train queries are the head: ``--head`` of them are precomputed into a store with the policy.
Test queries are the tail. Through a real server (``leser serve``, uvicorn, in a process of its
own as a search team runs it; httpx clients in this one), in the same run:
- latency p50/p95/p99 (sequential requests) and throughput (``--clients`` concurrent clients) for
  store hits, online tail generation (budget unlimited, so every answer is the model's) and the
  fallback (prf), each next to its bare counterpart (``ExpansionStore.get``; one ``agent.act``
  call; prf's ``act``; each bare call answers one of the queries its HTTP path times) as a ratio;
- the quality of the tail served three ways: online by the policy, by the fallback (prf), and
  not at all (the query alone): mean reward, recall@D of U(Y) on human labels and the served-page
  nDCG@10, with paired bootstrap intervals (``agents.evaluate.compare``).

    python benchmarks/bench_serve.py --checkpoint runs/v2/grpo --catalog synthetic --out runs/bench_serve
        [--head 64] [--tail 16] [--clients 8] [--quality-limit 207]

Writes OUT/serve.json, OUT/serve.md and OUT/latency.png.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import agents
from agents.evaluate import compare, markdown_table, paired_table
from agents.precompute import load_agent, precompute
from agents.serve import serve_in_process
from agents.store import ExpansionStore
from catalogs import load_catalog
from catalogs.storage import png_figure, write_atomically, write_json_atomically
from leser_env.env import LeserEnv


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def timed(call: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of ``call()``, ``repeats`` times."""
    return timed_each(lambda _: call(), range(repeats))


def timed_each(call: Callable[[Any], Any], items: Sequence[Any]) -> list[float]:
    """Seconds of ``call(item)`` for each item, once."""
    seconds = []
    for item in items:
        start = time.perf_counter()
        call(item)
        seconds.append(time.perf_counter() - start)
    return seconds


def http_latency(url: str, queries: Sequence[str], expected: str) -> tuple[list[float], dict[str, int]]:
    """Sequential requests: client-side seconds each, and the sources that answered."""
    seconds, sources = [], {}
    with httpx.Client(timeout=600) as client:
        for query in queries:
            start = time.perf_counter()
            answer = client.get(f"{url}/expand", params={"q": query}).json()
            seconds.append(time.perf_counter() - start)
            sources[answer["source"]] = sources.get(answer["source"], 0) + 1
    if set(sources) != {expected}:
        print(f"note: expected every answer from {expected}, got {sources}")
    return seconds, sources


def http_throughput(url: str, queries: Sequence[str], clients: int) -> float:
    """Queries answered per second with ``clients`` concurrent clients."""

    def ask(query: str) -> None:
        httpx.get(f"{url}/expand", params={"q": query}, timeout=600).raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(ask, queries))
    return len(queries) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a trained run directory")
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--head", type=int, default=64, help="train queries precomputed into the store")
    parser.add_argument("--tail", type=int, default=16, help="test queries timed for online generation")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--quality-limit", type=int, default=None, help="test queries for the quality table (all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_serve"))
    parser.add_argument(
        "--engine-check", action="store_true", help="serve the run behind the engine check (one trained with it is)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    catalog = load_catalog(args.catalog, args.data_dir)
    head = [catalog.queries[qid] for qid in catalog.query_ids("train")[: args.head]]
    tail = [catalog.queries[qid] for qid in catalog.query_ids("test")]
    store_path = args.out / "head.db"
    print(f"precomputing {len(head)} head queries with {args.checkpoint} ...")
    precompute(args.checkpoint, args.catalog, head, store_path, args.data_dir, engine_check=args.engine_check)
    store = ExpansionStore(store_path)
    policy = load_agent(args.checkpoint, args.catalog, args.data_dir, engine_check=args.engine_check)
    env = LeserEnv(catalog=args.catalog, data_dir=args.data_dir, split="train")
    prf = agents.make("prf", catalog=args.catalog, data_dir=args.data_dir)
    # Each bare call answers one query, the same queries its HTTP path times below, so that a
    # ratio compares like with like (generation time grows with the query and its answer).
    observations = [env.observe(text=query)[0] for query in tail[: 4 * args.tail]]

    rows: dict[str, dict[str, Any]] = {}
    print("timing the bare calls ...")
    bare_lookup = timed(lambda: [store.get(q) for q in head], 5)
    rows["bare store lookup"] = percentiles([s / len(head) for s in bare_lookup])
    rows["bare policy call (1 query)"] = percentiles(
        timed_each(lambda observation: policy.act([observation]), observations[: args.tail])
    )
    rows["bare prf call (1 query)"] = percentiles(timed_each(lambda observation: prf.act([observation]), observations))

    print("timing through HTTP ...")
    catalog_args = ["--catalog", args.catalog, *(["--data-dir", args.data_dir] if args.data_dir else [])]
    policy_args = ["--checkpoint", args.checkpoint, *(["--engine-check"] if args.engine_check else [])]
    with serve_in_process(
        ["--store", str(store_path), *policy_args, *catalog_args, "--tail-budget-ms", "600000"]
    ) as url:
        http_latency(url, head[:8], "store")  # warm-up
        seconds, _ = http_latency(url, (head * 4)[:200], "store")
        rows["store hit"] = {
            **percentiles(seconds),
            "queries_per_s": http_throughput(url, (head * 4)[:200], args.clients),
        }
        seconds, _ = http_latency(url, tail[: args.tail], "model")
        rows["online tail (model)"] = percentiles(seconds)
        fresh = tail[args.tail : args.tail + 2 * args.clients]  # not generated yet: no tail-cache hits
        rows["online tail (model)"]["queries_per_s"] = http_throughput(url, fresh, args.clients)
    with serve_in_process(["--store", str(store_path), *catalog_args, "--fallback", "prf"]) as url:
        seconds, _ = http_latency(url, tail[: 4 * args.tail], "fallback")
        rows["fallback (prf)"] = {
            **percentiles(seconds),
            "queries_per_s": http_throughput(url, tail[:200], args.clients),
        }
    rows["store hit"]["ratio_to_bare"] = rows["store hit"]["p50_ms"] / rows["bare store lookup"]["p50_ms"]
    rows["online tail (model)"]["ratio_to_bare"] = (
        rows["online tail (model)"]["p50_ms"] / rows["bare policy call (1 query)"]["p50_ms"]
    )
    rows["fallback (prf)"]["ratio_to_bare"] = (
        rows["fallback (prf)"]["p50_ms"] / rows["bare prf call (1 query)"]["p50_ms"]
    )

    print("tail quality: the policy, prf and nothing on test queries ...")
    contenders = [agents.make("none", catalog=args.catalog, data_dir=args.data_dir), prf, policy]
    quality = compare(contenders, args.catalog, "test", args.data_dir, args.quality_limit, args.out / "quality")

    latency_table = [
        "| path | p50 ms | p95 ms | p99 ms | queries/s | p50 / bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        rate = f"{row['queries_per_s']:.1f}" if "queries_per_s" in row else ""
        ratio = f"{row['ratio_to_bare']:.1f}x" if "ratio_to_bare" in row else ""
        latency_table.append(
            f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p99_ms']:.2f} | {rate} | {ratio} |"
        )
    text = "\n".join(latency_table) + "\n\n" + markdown_table(quality) + "\n" + paired_table(quality)
    print(text)
    report = {
        "catalog": args.catalog,
        "checkpoint": args.checkpoint,
        "engine_check": bool(getattr(policy, "engine_check", False)),
        "clients": args.clients,
        "latency": rows,
        "quality": {name: {k: v for k, v in s.items() if k != "agent_config"} for name, s in quality.items()},
    }
    write_json_atomically(args.out / "serve.json", report)
    write_atomically(args.out / "serve.md", text + "\n")
    plot(rows, args.out / "latency.png", args.catalog)
    print(f"wrote {args.out}: serve.json, serve.md, latency.png, quality/")


def plot(rows: dict[str, dict[str, Any]], path: Path, catalog: str) -> None:
    """p50, p95 and p99 latency of each mode, log scale."""
    names = list(rows)
    with png_figure(path, figsize=(9, 3.8)) as (_, axis):
        for offset, key in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            axis.barh(np.arange(len(names)) + offset * 0.27, [rows[n][key] for n in names], height=0.27, label=key)
        axis.set_yticks(np.arange(len(names)) + 0.27, names)
        axis.set_xscale("log")
        axis.set_xlabel("milliseconds (log scale)")
        axis.set_title(f"serving latency on {catalog}")
        axis.legend()


if __name__ == "__main__":
    main()
