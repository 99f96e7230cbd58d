"""The evaluation harness: run agents over every query of a split and report DESIGN.md's metrics.

Numbers a researcher can trust: every agent sees the same queries in the same order; the
ratios are micro-averaged (sums over queries, then divided) so zero-result queries count; an
invalid action counts as serving the original query alone (its reward is the format penalty).
Human-label metrics use the catalog's labels, which no policy trains on for test queries.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agents.base import Agent, write_json_atomically
from leser_env.env import LeserEnv
from leser_env.reward import RewardConfig

# metric key -> (label in tables and plots, format)
METRICS: dict[str, tuple[str, str]] = {
    "mean_reward": ("mean reward", "{:+.4f}"),
    "retrieval_gain": ("retrieval gain", "{:+.2%}"),
    "relevance_gain": ("relevance gain (model-judged)", "{:+.2%}"),
    "recall_query": ("recall@D of R(q) (human labels)", "{:.2%}"),
    "recall_union": ("recall@D of U(Y) (human labels)", "{:.2%}"),
    "ndcg@10_query": ("nDCG@10 of R(q)", "{:.4f}"),
    "ndcg@10_merged": ("nDCG@10 merged list", "{:.4f}"),
    "format_valid_rate": ("format-valid rate", "{:.1%}"),
    "zero_result_rescued": ("zero-result queries rescued", "{:.1%}"),
    "latency_ms": ("latency per query (ms)", "{:.1f}"),
}
PLOTTED = ("mean_reward", "retrieval_gain", "relevance_gain", "recall_union", "ndcg@10_merged", "format_valid_rate")


def run_agent(
    agent: Agent,
    catalog: str,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    reward_config: RewardConfig | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One record per query of the split (catalog order, first ``limit``): action, reward, metrics, latency."""
    env = LeserEnv(catalog=catalog, data_dir=data_dir, split=split, reward_config=reward_config)
    query_ids = env.query_ids[:limit] if limit else env.query_ids
    records: list[dict[str, Any]] = []
    with _progress(progress) as bar:
        task = bar.add_task(f"{agent.label} on {env.catalog.name} ({split})", total=len(query_ids))
        for start in range(0, len(query_ids), batch_size):
            batch = query_ids[start : start + batch_size]
            observations = [env.reset(options={"query_id": query_id})[0] for query_id in batch]
            began = time.perf_counter()
            actions = agent.act(observations)
            act_seconds = (time.perf_counter() - began) / len(batch)
            if len(actions) != len(batch):
                raise RuntimeError(f"agent {agent.name!r} returned {len(actions)} actions for {len(batch)} queries")
            for query_id, action in zip(batch, actions, strict=True):
                env.reset(options={"query_id": query_id})
                began = time.perf_counter()
                _, reward, _, _, info = env.step(action)
                step_seconds = time.perf_counter() - began
                records.append(
                    {
                        "query_id": query_id,
                        "query": info["query"],
                        "action": action if isinstance(action, str) else json.dumps(action),
                        "expansions": info["expansions"],
                        "reward": reward,
                        "error": info["reward_breakdown"]["error"],
                        "latency_ms": (act_seconds + step_seconds) * 1000,
                        **info["metrics"],
                    }
                )
            bar.advance(task, len(batch))
    return records


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """DESIGN.md's metrics over a set of episodes (micro-averaged ratios)."""
    if not records:
        raise ValueError("no episodes to summarize")
    labelled = [r for r in records if r.get("labelled")]
    query_results = sum(r["query_result_count"] for r in records)
    union = sum(r["union_size"] for r in records)
    rel_query = math.fsum(r["rel_query"] for r in records)
    rel_expansions = math.fsum(r["rel_expansions"] for r in records)
    relevant = sum(r["relevant"] for r in labelled)
    zero_result = [r for r in records if r["query_result_count"] == 0]
    latencies = np.array([r["latency_ms"] for r in records])
    return {
        "queries": len(records),
        "labelled_queries": len(labelled),
        "mean_reward": float(np.mean([r["reward"] for r in records])),
        "reward_std": float(np.std([r["reward"] for r in records])),
        "retrieval_gain": union / query_results - 1 if query_results else None,
        "relevance_gain": rel_expansions / rel_query - 1 if rel_query else None,
        "recall_query": sum(r["relevant_in_query_results"] for r in labelled) / relevant if relevant else None,
        "recall_union": sum(r["relevant_in_union"] for r in labelled) / relevant if relevant else None,
        "ndcg@10_query": float(np.mean([r["ndcg@10_query"] for r in labelled])) if labelled else None,
        "ndcg@10_merged": float(np.mean([r["ndcg@10_merged"] for r in labelled])) if labelled else None,
        "format_valid_rate": sum(bool(r["valid"]) for r in records) / len(records),
        "zero_result_queries": len(zero_result) / len(records),
        "zero_result_rescued": (sum(r["union_size"] > 0 for r in zero_result) / len(zero_result))
        if zero_result
        else None,
        "latency_ms": float(latencies.mean()),
        "latency_ms_p95": float(np.percentile(latencies, 95)),
        "results_per_query": {"query": query_results / len(records), "union": union / len(records)},
    }


def evaluate(
    agent: Agent,
    catalog: str,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one agent; with ``out``, write metrics.json, episodes.jsonl, results.md and metrics.png."""
    return compare([agent], catalog, split, data_dir, limit, out, progress)[agent.label]


def compare(
    agents: Sequence[Agent],
    catalog: str,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run several agents on the same queries; with ``out``, one table, one chart and every episode."""
    names = [agent.label for agent in agents]
    if len(set(names)) != len(names):
        raise ValueError(f"agents to compare must have distinct names, got {names}")
    summaries: dict[str, dict[str, Any]] = {}
    episodes: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        episodes[agent.label] = run_agent(agent, catalog, split, data_dir, limit, progress=progress)
        summaries[agent.label] = {
            "agent": agent.label,
            "agent_config": agent.config,
            "catalog": catalog,
            "split": split,
            **summarize(episodes[agent.label]),
        }
    if out is not None:
        write_report(Path(out), summaries, episodes)
    return summaries


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The comparison as a Markdown table: a row per metric, a column per agent."""
    names = list(summaries)
    header = "| metric | " + " | ".join(names) + " |"
    rule = "| --- |" + " ---: |" * len(names)
    rows = [
        f"| {label} | " + " | ".join(_format(summaries[name].get(key), style) for name in names) + " |"
        for key, (label, style) in METRICS.items()
    ]
    first = next(iter(summaries.values()))
    caption = f"{first['catalog']}, {first['split']} split, {first['queries']} queries"
    return "\n".join([caption, "", header, rule, *rows]) + "\n"


def write_report(out: Path, summaries: dict[str, dict[str, Any]], episodes: dict[str, list[dict[str, Any]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "metrics.json", summaries if len(summaries) > 1 else next(iter(summaries.values())))
    with open(out / "episodes.jsonl", "w") as stream:
        for name, records in episodes.items():
            for record in records:
                stream.write(json.dumps({"agent": name, **record}, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(markdown_table(summaries))
    plot_comparison(summaries, out / "metrics.png")


def plot_comparison(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """One bar chart per metric, agents side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    colours = plt.cm.tab10(np.arange(len(names)) % 10)
    for axis, key in zip(axes.ravel(), PLOTTED, strict=True):
        values = [summaries[name].get(key) for name in names]
        heights = [0.0 if value is None else value for value in values]
        bars = axis.bar(names, heights, color=colours)
        for bar, value in zip(bars, values, strict=True):
            axis.annotate(
                "n/a" if value is None else _format(value, METRICS[key][1]),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom" if bar.get_height() >= 0 else "top",
                fontsize=8,
            )
        axis.set_title(METRICS[key][0], fontsize=10)
        axis.axhline(0, color="black", linewidth=0.6)
        axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    first = next(iter(summaries.values()))
    figure.suptitle(f"{first['catalog']} ({first['split']}, {first['queries']} queries)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _format(value: Any, style: str) -> str:
    if value is None:
        return "n/a"
    return style.format(value)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
