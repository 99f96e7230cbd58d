"""The evaluation harness: run agents over every query of a split and report DESIGN.md's metrics.

Numbers a researcher can trust: every agent sees the same queries in the same order; the
ratios are micro-averaged (sums over queries, then divided) so zero-result queries count; an
invalid action counts as serving the original query alone (its reward is the format penalty).
Human-label metrics use the catalog's labels, which no policy trains on for test queries.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import subprocess
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agents.base import Agent
from agents.progress import progress_bar
from catalogs.storage import atomic_file, png_figure, write_atomically, write_json_atomically
from leser_env.env import LeserEnv
from leser_env.reward import RewardConfig

# metric key -> (label in tables and plots, format)
METRICS: dict[str, tuple[str, str]] = {
    "mean_reward": ("mean reward", "{:+.4f}"),
    "r_rel": ("r_rel (mean)", "{:+.4f}"),
    "r_page": ("r_page (mean)", "{:+.4f}"),
    "r_size": ("r_size (mean)", "{:+.4f}"),
    "retrieval_gain": ("retrieval gain", "{:+.2%}"),
    "relevance_gain": ("relevance gain (model-judged)", "{:+.2%}"),
    "recall_query": ("recall@D of R(q) (human labels)", "{:.2%}"),
    "recall_union": ("recall@D of U(Y) (human labels)", "{:.2%}"),
    "ndcg@10_query": ("nDCG@10 of R(q)", "{:.4f}"),
    "ndcg@10_served": ("nDCG@10 served page (U(Y) ranked by the judge)", "{:.4f}"),
    "ndcg@10_served_query": ("nDCG@10 served page of R(q)", "{:.4f}"),
    "ndcg@10_merged": ("nDCG@10 merged list (round robin)", "{:.4f}"),
    "format_valid_rate": ("format-valid rate", "{:.1%}"),
    "expansions_per_query": ("expansions per query", "{:.2f}"),
    "zero_result_rescued": ("zero-result queries rescued", "{:.1%}"),
    "latency_ms": ("latency per query (ms)", "{:.1f}"),
}
PLOTTED = ("mean_reward", "relevance_gain", "recall_union", "ndcg@10_served", "ndcg@10_merged", "format_valid_rate")
# Paired comparisons: metric -> (per-query numerator, per-query denominator or None for a plain mean, labelled only)
PAIRED: dict[str, tuple[str, str | None, bool]] = {
    "mean_reward": ("reward", None, False),
    "recall_union": ("relevant_in_union", "relevant", True),
    "ndcg@10_served": ("ndcg@10_served", None, True),
    "ndcg@10_merged": ("ndcg@10_merged", None, True),
}
BOOTSTRAP_RESAMPLES = 2000


def run_agent(
    agent: Agent,
    catalog: str,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    reward: str | RewardConfig | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One record per query of the split (catalog order, first ``limit``): action, reward, metrics, latency.

    An agent that records ``engine_check`` (an LLM run trained with it) is scored with the
    environment's engine check on, as it was trained.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    engine_check = True if getattr(agent, "engine_check", False) else None
    env = LeserEnv(catalog=catalog, data_dir=data_dir, split=split, reward=reward, engine_check=engine_check)
    query_ids = env.query_ids[:limit] if limit else env.query_ids
    records: list[dict[str, Any]] = []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"{agent.label} on {env.catalog.name} ({split})", total=len(query_ids))
        for start in range(0, len(query_ids), batch_size):
            batch = query_ids[start : start + batch_size]
            observations = [env.observe(query_id)[0] for query_id in batch]
            began = time.perf_counter()
            actions = agent.act(observations)
            act_seconds = (time.perf_counter() - began) / len(batch)
            if len(actions) != len(batch):
                raise RuntimeError(f"agent {agent.name!r} returned {len(actions)} actions for {len(batch)} queries")
            for query_id, observation, action in zip(batch, observations, actions, strict=True):
                began = time.perf_counter()
                rewards, infos = env.score_group(observation["query"], [action], query_id)
                step_seconds = time.perf_counter() - began
                info = infos[0]
                records.append(
                    {
                        "query_id": query_id,
                        "query": info["query"],
                        "action": action if isinstance(action, str) else json.dumps(action),
                        "expansions": info["expansions"],
                        "reward": float(rewards[0]),
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
        "r_rel": float(np.mean([r["r_rel"] for r in records])),
        "r_page": float(np.mean([r["r_page"] for r in records])),
        "r_size": float(np.mean([r["r_size"] for r in records])),
        "ndcg@10_query": _mean(labelled, "ndcg@10_query"),
        "ndcg@10_served_query": _mean(labelled, "ndcg@10_served_query"),
        "ndcg@10_served": _mean(labelled, "ndcg@10_served"),
        "ndcg@10_merged": _mean(labelled, "ndcg@10_merged"),
        "expansions_per_query": float(np.mean([r["expansion_count"] for r in records])),
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
    reward: str | RewardConfig | None = None,
) -> dict[str, Any]:
    """Run one agent; with ``out``, write metrics.json, episodes.jsonl, results.md and metrics.png."""
    return compare([agent], catalog, split, data_dir, limit, out, progress, reward)[agent.label]


def compare(
    agents: Sequence[Agent],
    catalog: str,
    split: str = "test",
    data_dir: str | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    reward: str | RewardConfig | None = None,
    stored: Sequence[StoredAgents | tuple[str, str | Path]] = (),
) -> dict[str, dict[str, Any]]:
    """Run several agents on the same queries; with ``out``, one table, one chart and every episode.

    ``stored``: comparisons written earlier (``out``), as ``StoredAgents`` or (prefix, directory)
    pairs; their agents (all, or the labels a ``StoredAgents`` names) join this one from their stored
    episodes, not run again, labelled "prefix label" (the label alone when the prefix is empty). They
    must have been scored on the same catalog, split and reward, over the same queries in the same
    order. A stored agent that this comparison also runs (same label and config) is taken from this
    run. Each summary records the code that scored it (``code_version``);
    stored episodes that record none, or another commit, are used with a warning (``stale_code``).

    With two or more agents, each summary gets ``paired``: for every other agent, the difference
    of the paired metrics (``PAIRED``) with a bootstrap 95% interval over the queries.
    """
    names = [agent.label for agent in agents]
    if len(set(names)) != len(names):
        raise ValueError(f"agents to compare must have distinct names, got {names}")
    if not agents and not stored:
        raise ValueError("no agents to compare")
    expected = {"catalog": catalog, "split": split, "reward": _reward_name(reward)}
    # Every stored agent is checked before any agent runs, so a clash is reported in seconds, not
    # after the run it would have thrown away.
    joining = _stored_agents(stored, expected, {agent.label: agent.config for agent in agents})
    summaries: dict[str, dict[str, Any]] = {}
    episodes: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        episodes[agent.label] = run_agent(agent, catalog, split, data_dir, limit, reward=reward, progress=progress)
        summaries[agent.label] = {
            "agent": agent.label,
            "agent_config": agent.config,
            **expected,
            "code": code_version(),
            **summarize(episodes[agent.label]),
        }
    for name, directory, summary, records in joining:
        if stale := stale_code(summary.get("code")):
            warnings.warn(
                f"{directory}: {summary['agent']} {stale}; run it again if its agent or the reward changed since",
                stacklevel=2,
            )
        reference = next(iter(episodes.values()), records)
        if [r["query_id"] for r in records] != [r["query_id"] for r in reference]:
            raise ValueError(
                f"{directory}: {summary['agent']} was run on other queries ({len(records)}, not these "
                f"{len(reference)}): compare over the same --split and --limit"
            )
        episodes[name] = records
        summaries[name] = {
            "agent": name,
            "agent_config": summary.get("agent_config"),
            **expected,
            "code": summary.get("code"),
            "stored": str(directory),
            **summarize(records),
        }
        names.append(name)
    for index, name in enumerate(names):  # each pair once; the reverse direction is its negation
        for other in names[index + 1 :]:
            forward = paired_differences(episodes[name], episodes[other])
            backward = {
                m: {"difference": -d["difference"], "low": -d["high"], "high": -d["low"]} for m, d in forward.items()
            }
            summaries[name].setdefault("paired", {})[other] = forward
            summaries[other].setdefault("paired", {})[name] = backward
    if out is not None:
        write_report(Path(out), summaries, episodes)
    return summaries


def _stored_agents(
    stored: Sequence[StoredAgents | tuple[str, str | Path]], expected: dict[str, Any], running: dict[str, Any]
) -> list[tuple[str, Path, dict[str, Any], list[dict[str, Any]]]]:
    """The stored agents joining a comparison, as (name, directory, summary, episodes), checked
    against it: scored on ``expected``'s catalog, split and reward, and no name taken twice. One
    this comparison also runs (``running``: label -> config; the same label and config) is left
    out: it is taken from this run."""
    joining: list[tuple[str, Path, dict[str, Any], list[dict[str, Any]]]] = []
    taken = set(running)
    for entry in stored:
        prefix, directory, wanted = StoredAgents(*entry)
        comparison = load_comparison(directory)
        if unknown := [label for label in wanted if label not in comparison]:
            raise ValueError(f"{directory} holds no agent {unknown[0]!r}; it holds {', '.join(map(repr, comparison))}")
        for label, (summary, records) in comparison.items():
            if wanted and label not in wanted:
                continue
            for key, value in expected.items():
                if summary.get(key) != value:
                    raise ValueError(f"{directory}: {label} was scored with {key} {summary.get(key)!r}, not {value!r}")
            if label in running and running[label] == summary.get("agent_config"):
                continue  # the same agent, run again here
            name = f"{prefix} {label}" if prefix else label
            if name in taken:
                raise ValueError(
                    f"{directory}: an agent labelled {name!r} is already compared; give it a prefix "
                    f"(--with PREFIX={directory})"
                )
            taken.add(name)
            joining.append((name, Path(directory), {**summary, "agent": label}, records))
    return joining


class StoredAgents(NamedTuple):
    """Agents of a comparison written earlier (``compare``'s ``out``) to join a new comparison:
    labelled "prefix label", all of the directory's agents or only ``labels``."""

    prefix: str
    directory: str | Path
    labels: tuple[str, ...] = ()


def code_version() -> dict[str, Any]:
    """The code that scores a comparison, recorded in its metrics.json: the package's version and,
    run from a git checkout, the commit and whether tracked files had changes not committed
    (None where git or a checkout is missing). Looked up once per process; a fresh dict each call."""
    return dict(_code_version())


@functools.cache
def _code_version() -> dict[str, Any]:
    try:
        package: str | None = importlib.metadata.version("leser-gym")
    except importlib.metadata.PackageNotFoundError:
        package = None
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"package": package, "commit": commit, "modified": None if changes is None else bool(changes)}


def stale_code(stored: dict[str, Any] | None) -> str | None:
    """Why stored episodes may not be what this code would score (a sentence), or None: they record
    no code version, or another commit than this checkout's."""
    if not isinstance(stored, dict):
        return "records no code version (written before comparisons recorded one)"
    current = code_version()
    if stored.get("commit") and current["commit"] and stored["commit"] != current["commit"]:
        changed = " with changes not committed" if stored.get("modified") else ""
        return f"was scored at commit {stored['commit'][:10]}{changed}, this checkout is {current['commit'][:10]}"
    return None


def load_comparison(directory: str | Path) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """A comparison or evaluation written with ``out``: per agent label, its summary and its episodes."""
    directory = Path(directory)
    try:
        metrics = json.loads((directory / "metrics.json").read_text())
        lines = (directory / "episodes.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as error:
        raise ValueError(f"{directory}: not a readable comparison (metrics.json, episodes.jsonl): {error}") from error
    summaries = {metrics["agent"]: metrics} if isinstance(metrics, dict) and "agent" in metrics else metrics
    if not isinstance(summaries, dict) or not all(isinstance(s, dict) for s in summaries.values()):
        raise ValueError(f"{directory}/metrics.json: not a comparison's metrics")
    episodes: dict[str, list[dict[str, Any]]] = {label: [] for label in summaries}
    for record in records:
        label = record.pop("agent", None)
        if label not in episodes:
            raise ValueError(f"{directory}/episodes.jsonl: an episode of {label!r}, which metrics.json does not list")
        episodes[label].append(record)
    return {label: (summaries[label], episodes[label]) for label in summaries}


def paired_differences(
    first: Sequence[dict[str, Any]],
    second: Sequence[dict[str, Any]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """first minus second on the same queries, each paired metric with a percentile bootstrap 95% interval.

    Queries are resampled with replacement (the same draws for every metric); ratio metrics
    (recall) are recomputed micro-averaged on each resample.
    """
    if [r["query_id"] for r in first] != [r["query_id"] for r in second]:
        raise ValueError("paired comparisons need the same queries in the same order")
    draws = np.random.default_rng(seed).integers(0, len(first), size=(resamples, len(first)))
    result: dict[str, dict[str, float]] = {}
    for metric, (numerator, denominator, labelled_only) in PAIRED.items():
        keep = np.array([bool(r.get("labelled")) or not labelled_only for r in first])
        if not keep.any():
            continue
        a = np.array([float(r.get(numerator, 0.0)) for r in first]) * keep
        b = np.array([float(r.get(numerator, 0.0)) for r in second]) * keep
        weight = keep.astype(float) if denominator is None else np.array([float(r.get(denominator, 0)) for r in first])
        weight = weight * keep
        if weight.sum() == 0:
            continue
        difference = float((a.sum() - b.sum()) / weight.sum())
        totals = weight[draws].sum(axis=1)
        valid = totals > 0
        samples = (a[draws].sum(axis=1)[valid] - b[draws].sum(axis=1)[valid]) / totals[valid]
        low, high = np.percentile(samples, [2.5, 97.5])
        result[metric] = {"difference": difference, "low": float(low), "high": float(high)}
    return result


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
    caption = f"{first['catalog']}, {first['split']} split, {first['queries']} queries, reward {first['reward']}"
    return "\n".join([caption, "", header, rule, *rows]) + "\n"


def paired_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Markdown: each pair of agents, the difference of each paired metric with its bootstrap 95% interval."""
    names = list(summaries)
    if len(names) < 2:
        return ""
    header = "| A - B | " + " | ".join(METRICS[m][0] for m in PAIRED) + " |"
    rows = [header, "| --- |" + " ---: |" * len(PAIRED)]
    for index, name in enumerate(names):
        for other in names[index + 1 :]:
            cells = []
            for metric in PAIRED:
                entry = summaries[name].get("paired", {}).get(other, {}).get(metric)
                if entry is None:
                    cells.append("n/a")
                    continue
                style = "{:+.2%}" if metric == "recall_union" else "{:+.4f}"
                cells.append(
                    f"{style.format(entry['difference'])} [{style.format(entry['low'])}, {style.format(entry['high'])}]"
                )
            rows.append(f"| {name} - {other} | " + " | ".join(cells) + " |")
    return "Paired differences on the same queries, bootstrap 95% intervals:\n\n" + "\n".join(rows) + "\n"


def write_report(out: Path, summaries: dict[str, dict[str, Any]], episodes: dict[str, list[dict[str, Any]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "metrics.json", summaries if len(summaries) > 1 else next(iter(summaries.values())))
    with atomic_file(out / "episodes.jsonl") as stream:
        for name, records in episodes.items():
            for record in records:
                stream.write(json.dumps({"agent": name, **record}, ensure_ascii=False) + "\n")
    write_atomically(out / "results.md", markdown_table(summaries) + "\n" + paired_table(summaries))
    plot_comparison(summaries, out / "metrics.png")


def plot_comparison(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """One bar chart per metric, agents side by side."""
    names = list(summaries)
    first = next(iter(summaries.values()))
    with png_figure(path, nrows=2, ncols=3, figsize=(13, 7)) as (figure, axes):
        colours = [f"C{index % 10}" for index in range(len(names))]  # matplotlib's default cycle
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
        figure.suptitle(f"{first['catalog']} ({first['split']}, {first['queries']} queries)")
    return path


def _mean(records: Sequence[dict[str, Any]], key: str) -> float | None:
    return float(np.mean([r[key] for r in records])) if records else None


def _reward_name(reward: str | RewardConfig | None) -> str | dict[str, Any]:
    if reward is None or isinstance(reward, str):
        return reward or "default"
    return asdict(reward)


def _format(value: Any, style: str) -> str:
    if value is None:
        return "n/a"
    return style.format(value)
