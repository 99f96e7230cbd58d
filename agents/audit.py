"""Reward-fidelity audit (``leser reward audit``): does a reward order expansions as human labels do?

For each labelled query (one with at least one product labelled relevant) among the first
``limit`` queries of a split, a pool of candidate expansion sets Y is built:

- ``none``: [q], the query itself (reward 0 by construction);
- ``prf`` / ``rm3``: the prf baseline's expansions (Bo1 / RM3), [q] when it derives none;
- ``random``: three one-word expansions, words drawn from the catalog's titles with a generator
  seeded by crc32 of the query id (the same pool on every run);
- ``prf_single_i``: each prf expansion alone, i = 1..5;
- ``junk``: the generic probes ["set"], ["black"], ["product"], ["new"];
- ``near_duplicates``: prf's first expansion, its words reversed, and its first word repeated;
- ``drop_word_i``: the query with its i-th word dropped (queries of 2+ words, i = 1..4);
- ``oracle`` (test split only, an upper bound): up to 5 titles (first 8 words, at most 100
  characters) of the products labelled relevant, highest grade first.

Each candidate is checked against the action format (1..5 distinct expansions of 1..100
characters): invalid ones are skipped, and a set proposed twice (compared case-insensitively,
order ignored, as the reward ignores order) is kept once, under every kind that proposed it.

Human gains of a candidate, from the catalog's labels (grade - the catalog's lowest grade is an
nDCG gain; "relevant" is grade above the catalog's threshold), with R(x) the reward's top-D
results, U(Y) = R(q) ∪ R(y1) ∪ ..., and "served" meaning ranked by the reward's relevance model:
- h1 = recall of U(Y) - recall of R(q);
- h2 = nDCG@10 of the served page of U(Y) - nDCG@10 of the served page of R(q);
- h3 = nDCG@10 of the round-robin merge of R(q), R(y1), ... - nDCG@10 of R(q) in engine order.
R(x) depends only on depth and match mode, and the served order only on the relevance model, so
the gains are read off the first reward config's results (the presets share all three).

Per reward config (all of a query's candidates are scored in one ``score_group`` call):
- tau h1/h2/h3: the mean over queries of Kendall's tau-b between the pool's rewards and its
  gains, the oracle included (a query counts only when neither side is constant), with a percentile bootstrap 95%
  interval over queries (2000 resamples, seed 0);
- differences: each config's per-query tau minus the first config's, on the queries where both
  count, resampled jointly; an interval above 0 means it agrees with the labels better;
- junk/prf: the junk probes' mean reward divided by prf's mean reward, separately on zero-result
  queries (|R(q)| = 0) and on the others (n/a when prf's mean is not positive): how much of what
  an informed expansion earns generic words earn too (negative: junk is penalised);
- farmed share: among all candidates except ``none`` and ``oracle``, the share with reward > 0
  while h1 <= 0 and h2 <= 0 (paid, though humans see no gain);
- oracle: its mean reward next to prf's on the same queries. The oracle reads the test labels, so
  it marks an upper bound on what a policy could know, not on reward: a reward that pays it less
  than prf values something other than the labelled products.

Outputs (in ``out``): ``audit.json`` (the report), ``audit.md`` (the tables), ``audit.png`` (mean
tau per gain per config with the intervals) and ``candidates.jsonl`` (one line per candidate).
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau

from agents.baselines import PLACEHOLDER, PseudoRelevanceFeedbackAgent, fit_expansion, lowercase_letter_words
from agents.evaluate import BOOTSTRAP_RESAMPLES
from agents.progress import progress_bar
from catalogs import Catalog, Split, load_catalog, split_of
from catalogs.storage import atomic_file, png_figure, write_atomically, write_json_atomically
from leser_env.actions import validate_expansions
from leser_env.metrics import interleave, ndcg_at_k, recall
from leser_env.relevance import grade_range
from leser_env.resources import reward_for
from leser_env.reward import Reward, RewardBreakdown, RewardConfig

JUNK_PROBES = ("set", "black", "product", "new")
GAINS = ("h1", "h2", "h3")
GAIN_LABELS = {"h1": "recall of U(Y)", "h2": "nDCG@10 served page", "h3": "nDCG@10 merged list"}
RANDOM_WORDS = 3
MAX_SINGLE_EXPANSIONS = 5
MAX_DROPPED_WORDS = 4
ORACLE_TITLES = 5
ORACLE_TITLE_WORDS = 8
BOOTSTRAP_SEED = 0


@dataclass
class Candidate:
    """One expansion set of a query's pool, with every kind that proposed it (the first names it)."""

    kinds: list[str]
    expansions: tuple[str, ...]


@dataclass
class QueryAudit:
    """A query's pool with its human gains and its reward under each config, candidate by candidate."""

    query_id: str
    query: str
    zero_result: bool
    candidates: list[Candidate]
    gains: dict[str, list[float]]  # h1/h2/h3 -> one per candidate
    rewards: dict[str, list[float]]  # reward config name -> one per candidate

    def rewards_of(self, config: str, kind: str) -> list[float]:
        """Rewards under one config of the candidates a kind proposed."""
        return [reward for c, reward in zip(self.candidates, self.rewards[config], strict=True) if kind in c.kinds]

    def records(self) -> list[dict[str, Any]]:
        """One ``candidates.jsonl`` line per candidate (``kind`` names it, ``kinds`` lists all that proposed it)."""
        return [
            {
                "query_id": self.query_id,
                "query": self.query,
                "kind": candidate.kinds[0],
                "kinds": candidate.kinds,
                "expansions": list(candidate.expansions),
                **{gain: self.gains[gain][i] for gain in GAINS},
                "reward": {config: rewards[i] for config, rewards in self.rewards.items()},
            }
            for i, candidate in enumerate(self.candidates)
        ]


def candidate_pool(
    catalog: Catalog,
    query_id: str,
    prf: PseudoRelevanceFeedbackAgent,
    rm3: PseudoRelevanceFeedbackAgent,
    vocabulary: list[str],
) -> list[Candidate]:
    """The query's valid, distinct candidate expansion sets (see the module docstring)."""
    query = catalog.queries[query_id]
    prf_expansions = prf.expand(query)[0] or [query]
    rng = random.Random(zlib.crc32(query_id.encode("utf-8")))
    proposals: list[tuple[str, list[str]]] = [
        ("none", [query]),
        ("prf", prf_expansions),
        ("rm3", rm3.expand(query)[0] or [query]),
        ("random", rng.sample(vocabulary, min(RANDOM_WORDS, len(vocabulary)))),
    ]
    proposals += [(f"prf_single_{i}", [text]) for i, text in enumerate(prf_expansions[:MAX_SINGLE_EXPANSIONS], 1)]
    proposals += [("junk", [word]) for word in JUNK_PROBES]
    first_words = prf_expansions[0].split()
    if first_words:
        near_copies = [" ".join(reversed(first_words)), " ".join([first_words[0], *first_words])]
        proposals.append(("near_duplicates", [prf_expansions[0], *near_copies]))
    query_words = query.split()
    if len(query_words) >= 2:
        for i in range(min(len(query_words), MAX_DROPPED_WORDS)):
            proposals.append((f"drop_word_{i + 1}", [" ".join(query_words[:i] + query_words[i + 1 :])]))
    if split_of(query_id) is Split.TEST:
        labels = catalog.qrels[query_id]
        best = sorted(catalog.relevant(query_id), key=lambda pid: (-labels[pid], pid))[:ORACLE_TITLES]
        titles = [fit_expansion(" ".join(catalog.product(pid).title.split()[:ORACLE_TITLE_WORDS])) for pid in best]
        proposals.append(("oracle", [title for title in titles if title]))
    pool: dict[frozenset[str], Candidate] = {}
    for kind, texts in proposals:
        parsed = validate_expansions(texts)
        if not parsed.valid:
            continue
        key = frozenset(text.casefold() for text in parsed.expansions)
        if key in pool:
            pool[key].kinds.append(kind)
        else:
            pool[key] = Candidate([kind], parsed.expansions)
    return list(pool.values())


def human_gains(breakdown: RewardBreakdown, relevant: set[str], grades: dict[str, float]) -> dict[str, float]:
    """h1, h2, h3 of one scored candidate (see the module docstring)."""
    merged = interleave([breakdown.query_results, *breakdown.expansion_results])
    return {
        "h1": recall(breakdown.union_results, relevant) - recall(breakdown.query_results, relevant),
        "h2": ndcg_at_k(breakdown.served_results, grades, 10) - ndcg_at_k(breakdown.served_query_results, grades, 10),
        "h3": ndcg_at_k(merged, grades, 10) - ndcg_at_k(breakdown.query_results, grades, 10),
    }


def audit_query(
    catalog: Catalog, query_id: str, candidates: list[Candidate], rewards: dict[str, Reward], lowest_grade: float
) -> QueryAudit:
    """Score the pool under every reward config (one group call each) and measure its human gains."""
    query = catalog.queries[query_id]
    actions = [list(candidate.expansions) for candidate in candidates]
    scored = {name: reward.score_group(query, actions) for name, reward in rewards.items()}
    grades = {pid: grade - lowest_grade for pid, grade in catalog.qrels[query_id].items()}
    relevant = catalog.relevant(query_id)
    first = next(iter(scored.values()))
    per_candidate = [human_gains(breakdown, relevant, grades) for breakdown in first]
    return QueryAudit(
        query_id,
        query,
        zero_result=first[0].query_result_count == 0,  # every breakdown carries |R(q)|
        candidates=candidates,
        gains={gain: [gains[gain] for gains in per_candidate] for gain in GAINS},
        rewards={name: [breakdown.reward for breakdown in breakdowns] for name, breakdowns in scored.items()},
    )


def tau_b(rewards: list[float], gains: list[float]) -> float:
    """Kendall's tau-b of one pool; nan when either side is constant."""
    if len(set(rewards)) < 2 or len(set(gains)) < 2:
        return float("nan")
    return float(kendalltau(rewards, gains, variant="b").statistic)


def bootstrap_mean(values: np.ndarray) -> dict[str, Any]:
    """Mean of per-query values with a percentile bootstrap 95% interval over queries."""
    if not len(values):
        return {"mean": None, "low": None, "high": None, "queries": 0}
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    low, high = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high), "queries": len(values)}


def counted(values: np.ndarray) -> np.ndarray:
    """The per-query values that count (tau is nan where a side is constant)."""
    return values[~np.isnan(values)]


def mean_reward(audits: list[QueryAudit], config: str, kind: str) -> float | None:
    values = [reward for audit in audits for reward in audit.rewards_of(config, kind)]
    return float(np.mean(values)) if values else None


def junk_versus_prf(audits: list[QueryAudit], config: str) -> dict[str, Any]:
    """Junk probes' mean reward over prf's, on the zero-result queries and on the others."""
    result = {}
    for group, zero_result in (("zero_result", True), ("other", False)):
        chosen = [audit for audit in audits if audit.zero_result == zero_result]
        junk, prf = mean_reward(chosen, config, "junk"), mean_reward(chosen, config, "prf")
        ratio = junk / prf if junk is not None and prf is not None and prf > 0 else None
        result[group] = {"junk_mean": junk, "prf_mean": prf, "ratio": ratio, "queries": len(chosen)}
    return result


def farmed_share(audits: list[QueryAudit], config: str) -> dict[str, Any]:
    """Share of candidates (not none, not oracle) paid a positive reward while h1 <= 0 and h2 <= 0."""
    farmed = probes = 0
    for audit in audits:
        for i, candidate in enumerate(audit.candidates):
            if {"none", "oracle"} & set(candidate.kinds):
                continue
            probes += 1
            unseen_by_humans = audit.gains["h1"][i] <= 0 and audit.gains["h2"][i] <= 0
            farmed += int(audit.rewards[config][i] > 0 and unseen_by_humans)
    return {"share": farmed / probes if probes else None, "farmed": farmed, "candidates": probes}


def oracle_upper_bound(audits: list[QueryAudit], config: str) -> dict[str, Any]:
    """The oracle's mean reward next to prf's, on the queries that have an oracle (an upper bound)."""
    chosen = [audit for audit in audits if audit.rewards_of(config, "oracle")]
    prf, oracle = mean_reward(chosen, config, "prf"), mean_reward(chosen, config, "oracle")
    return {"oracle_mean": oracle, "prf_mean": prf, "queries": len(chosen)}


def summarize(catalog: Catalog, split: str, queries: int, audits: list[QueryAudit], configs: list[str]) -> dict:
    """The JSON-ready report: per-config agreement, probes and oracle, and differences vs the first config."""
    taus = {
        config: {gain: np.array([tau_b(a.rewards[config], a.gains[gain]) for a in audits]) for gain in GAINS}
        for config in configs
    }
    reference = configs[0]
    differences = {  # per-query differences are nan where either config's tau does not count
        config: {gain: bootstrap_mean(counted(taus[config][gain] - taus[reference][gain])) for gain in GAINS}
        for config in configs[1:]
    }
    return {
        "catalog": catalog.name,
        "split": split,
        "queries": queries,
        "labelled_queries": len(audits),
        "zero_result_queries": sum(audit.zero_result for audit in audits),
        "candidates": sum(len(audit.candidates) for audit in audits),
        "pool_kinds": list(dict.fromkeys(kind for a in audits for c in a.candidates for kind in c.kinds)),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": "percentile 95%"},
        "reference_config": reference,
        "configs": {
            config: {
                "reward_config": asdict(RewardConfig.preset(config)),
                "tau": {gain: bootstrap_mean(counted(values)) for gain, values in taus[config].items()},
                "junk_vs_prf": junk_versus_prf(audits, config),
                "farmed": farmed_share(audits, config),
                "oracle_upper_bound": oracle_upper_bound(audits, config),
            }
            for config in configs
        },
        "differences_vs_reference": differences,
    }


def _interval(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:+.3f} [{stats['low']:+.3f}, {stats['high']:+.3f}] n={stats['queries']}"


def _number(value: float | None, style: str) -> str:
    return "n/a" if value is None else style.format(value)


def summary_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per-config table, shared by the Markdown file and the console."""
    header = [
        "reward",
        *(f"tau {gain} ({GAIN_LABELS[gain]}) [95% CI]" for gain in GAINS),
        "junk/prf zero-result",
        "junk/prf other",
        "farmed share",
        "oracle / prf reward (upper bound)",
    ]
    rows = []
    for config, stats in report["configs"].items():
        farmed, oracle = stats["farmed"], stats["oracle_upper_bound"]
        rows.append(
            [
                config,
                *(_interval(stats["tau"][gain]) for gain in GAINS),
                _number(stats["junk_vs_prf"]["zero_result"]["ratio"], "{:.2f}"),
                _number(stats["junk_vs_prf"]["other"]["ratio"], "{:.2f}"),
                f"{_number(farmed['share'], '{:.1%}')} ({farmed['farmed']}/{farmed['candidates']})",
                f"{_number(oracle['oracle_mean'], '{:+.3f}')} / {_number(oracle['prf_mean'], '{:+.3f}')}",
            ]
        )
    return header, rows


def difference_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the paired tau differences against the first config."""
    reference = report["reference_config"]
    header = ["difference", *(f"Δ tau {gain} [95% CI]" for gain in GAINS)]
    rows = [
        [f"{config} - {reference}", *(_interval(stats[gain]) for gain in GAINS)]
        for config, stats in report["differences_vs_reference"].items()
    ]
    return header, rows


def markdown(report: dict) -> str:
    lines = [
        f"# Reward audit: {report['catalog']}, {report['split']} split",
        "",
        f"{report['labelled_queries']} labelled of {report['queries']} queries "
        f"({report['zero_result_queries']} zero-result), {report['candidates']} candidates; "
        f"pool: {', '.join(report['pool_kinds'])}.",
        "",
    ]
    for header, rows in (summary_table(report), difference_table(report)):
        if rows:
            lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Grouped bars: mean tau per gain, one bar per config, 95% intervals as error bars."""
    configs = list(report["configs"])
    width = 0.8 / len(configs)
    with png_figure(path, figsize=(8, 4.5)) as (_, axis):
        for index, config in enumerate(configs):
            stats = [report["configs"][config]["tau"][gain] for gain in GAINS]
            means = [np.nan if s["mean"] is None else s["mean"] for s in stats]
            errors = [[0.0 if s["mean"] is None else s["mean"] - s["low"] for s in stats]]
            errors.append([0.0 if s["mean"] is None else s["high"] - s["mean"] for s in stats])
            positions = np.arange(len(GAINS)) + (index - (len(configs) - 1) / 2) * width
            axis.bar(positions, means, width, yerr=errors, capsize=4, label=config)
        axis.set_xticks(np.arange(len(GAINS)), [f"{gain}: {GAIN_LABELS[gain]}" for gain in GAINS])
        axis.axhline(0, color="black", linewidth=0.6)
        axis.set_ylabel("mean Kendall tau-b (reward vs human gain)")
        axis.set_title(f"{report['catalog']} ({report['split']}, {report['labelled_queries']} labelled queries)")
        axis.legend()


def print_audit(report: dict, console: Console) -> None:
    for title, (header, rows) in (
        (f"reward audit: {report['catalog']}, {report['split']} split", summary_table(report)),
        (f"paired tau differences vs {report['reference_config']}", difference_table(report)),
    ):
        if rows:
            table = Table(title=title)
            for index, name in enumerate(header):
                table.add_column(name, justify="left" if index == 0 else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)


def run_audit(
    catalog: str, data_dir: str | None, rewards: list[str], limit: int | None, out: Path, split: str, progress: bool
) -> dict:
    """Audit the reward configs on a split's first ``limit`` queries; write the outputs; return the report."""
    if not rewards:
        raise ValueError("name at least one reward preset to audit")
    configs = list(dict.fromkeys(rewards))
    scorers = {name: reward_for(catalog, data_dir, RewardConfig.preset(name)) for name in configs}
    loaded = load_catalog(catalog, data_dir)
    query_ids = loaded.query_ids(split)[:limit]
    prf = PseudoRelevanceFeedbackAgent(catalog, data_dir)
    rm3 = PseudoRelevanceFeedbackAgent(catalog, data_dir, method="rm3")
    vocabulary = sorted({word for p in loaded.products for word in lowercase_letter_words(p.title)}) or [PLACEHOLDER]
    lowest_grade = grade_range(loaded)[0]
    out.mkdir(parents=True, exist_ok=True)
    audits = []
    with progress_bar(progress) as bar, atomic_file(out / "candidates.jsonl") as lines:
        task = bar.add_task(f"auditing {split} queries", total=len(query_ids))
        for query_id in query_ids:
            if loaded.relevant(query_id):
                pool = candidate_pool(loaded, query_id, prf, rm3, vocabulary)
                audit = audit_query(loaded, query_id, pool, scorers, lowest_grade)
                audits.append(audit)
                lines.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in audit.records())
            bar.advance(task)
    report = summarize(loaded, split, len(query_ids), audits, configs)
    write_json_atomically(out / "audit.json", report)
    write_atomically(out / "audit.md", markdown(report))
    plot(report, out / "audit.png")
    return report
