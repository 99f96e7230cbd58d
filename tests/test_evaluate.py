"""The evaluation harness: metrics computed as DESIGN.md defines them, reports written, CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import agents
from agents.cli import app, parse_stored
from agents.evaluate import StoredAgents, compare, paired_differences, summarize
from catalogs import synthetic_catalog, write_catalog_dir


def record(**values):
    base = {
        "reward": 0.0,
        "valid": True,
        "query_result_count": 0,
        "union_size": 0,
        "rel_query": 0.0,
        "rel_expansions": 0.0,
        "r_rel": 0.0,
        "r_page": 0.0,
        "r_size": 0.0,
        "expansion_count": 1,
        "labelled": True,
        "relevant": 2,
        "relevant_in_query_results": 0,
        "relevant_in_union": 0,
        "ndcg@10_query": 0.0,
        "ndcg@10_merged": 0.0,
        "ndcg@10_served": 0.0,
        "ndcg@10_served_query": 0.0,
        "latency_ms": 1.0,
    }
    return {**base, **values}


def test_summary_is_micro_averaged_so_zero_result_queries_count() -> None:
    records = [
        record(
            query_result_count=10,
            union_size=10,
            rel_query=0.5,
            rel_expansions=0.5,
            relevant_in_union=1,
            relevant_in_query_results=1,
        ),
        record(query_result_count=0, union_size=30, rel_query=0.0, rel_expansions=0.6, relevant_in_union=2),
        record(valid=False, reward=-2.0, query_result_count=10, union_size=10, rel_query=0.3, rel_expansions=0.3),
    ]
    summary = summarize(records)
    assert summary["retrieval_gain"] == pytest.approx(50 / 20 - 1)  # not the mean of per-query ratios
    assert summary["relevance_gain"] == pytest.approx(1.4 / 0.8 - 1)
    assert summary["recall_query"] == pytest.approx(1 / 6) and summary["recall_union"] == pytest.approx(3 / 6)
    assert summary["format_valid_rate"] == pytest.approx(2 / 3)
    assert summary["zero_result_queries"] == pytest.approx(1 / 3) and summary["zero_result_rescued"] == 1.0
    assert summary["mean_reward"] == pytest.approx(-2 / 3)


def test_all_zero_baselines_report_not_available_instead_of_dividing_by_zero() -> None:
    summary = summarize([record(labelled=False)])
    assert summary["retrieval_gain"] is None and summary["relevance_gain"] is None and summary["recall_union"] is None


def test_compare_runs_every_agent_on_the_same_queries(tmp_path: Path) -> None:
    baselines = [agents.make(name, catalog="synthetic") for name in ("none", "prf")]
    summaries = compare(baselines, "synthetic", "test", limit=25, out=tmp_path, progress=False)
    episodes = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    by_agent = {name: [e["query_id"] for e in episodes if e["agent"] == name] for name in ("none", "prf")}
    assert by_agent["none"] == by_agent["prf"] and len(by_agent["none"]) == 25
    assert summaries["none"]["mean_reward"] == 0.0 and summaries["none"]["retrieval_gain"] == 0.0
    assert summaries["prf"]["recall_union"] > summaries["none"]["recall_union"]
    assert summaries["prf"]["ndcg@10_served"] > summaries["none"]["ndcg@10_served"]  # h2 beside the merged list
    paired = summaries["prf"]["paired"]["none"]["mean_reward"]
    assert paired["low"] <= paired["difference"] <= paired["high"] and paired["low"] > 0  # prf is clearly ahead
    assert summaries["none"]["paired"]["prf"]["mean_reward"]["difference"] == -paired["difference"]
    report = (tmp_path / "results.md").read_text()
    assert "| mean reward |" in report and "| nDCG@10 served page" in report and "| none - prf |" in report
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_adds_agents_from_a_stored_comparison_without_running_them_again(tmp_path: Path) -> None:
    earlier, later = tmp_path / "earlier", tmp_path / "later"
    first = compare([agents.make(n, catalog="synthetic") for n in ("none", "prf")], "synthetic", limit=12, out=earlier)
    (earlier / "episodes.jsonl").write_text(
        "\n".join(
            json.dumps({**json.loads(line), "latency_ms": 1e6})  # marks the stored episodes
            for line in (earlier / "episodes.jsonl").read_text().splitlines()
        )
    )
    prf = agents.make("prf", catalog="synthetic")
    summaries = compare([prf], "synthetic", limit=12, out=later, progress=False, stored=[("", earlier)])
    assert list(summaries) == ["prf", "none"], "the stored prf is the same agent: this run's is kept"
    assert summaries["none"]["latency_ms"] == 1e6 and summaries["none"]["stored"] == str(earlier)
    assert summaries["prf"]["latency_ms"] < 1e6
    for metric, interval in first["prf"]["paired"]["none"].items():
        assert summaries["prf"]["paired"]["none"][metric] == pytest.approx(interval)
    rerun = json.loads((later / "metrics.json").read_text())
    assert set(rerun) == {"prf", "none"} and "| prf - none |" in (later / "results.md").read_text()

    prefixed = compare([prf], "synthetic", limit=12, progress=False, stored=[("v1", earlier)])
    assert list(prefixed) == ["prf", "v1 none"], "prefixed or not, the same agent is not compared twice"
    assert prefixed["v1 none"]["mean_reward"] == 0.0 and "v1 none" in prefixed["prf"]["paired"]
    only_stored = compare([], "synthetic", limit=12, progress=False, stored=[("", earlier)])
    assert only_stored["prf"]["mean_reward"] == first["prf"]["mean_reward"]

    with pytest.raises(ValueError, match="other queries"):
        compare([prf], "synthetic", limit=10, progress=False, stored=[("", earlier)])
    with pytest.raises(ValueError, match="with reward 'default', not 'paper'"):
        compare([prf], "synthetic", limit=12, progress=False, stored=[("", earlier)], reward="paper")
    clashing = agents.make("prf", catalog="synthetic", seed=3)  # another config under a stored label
    clashing.act = lambda observations: pytest.fail("the agent ran before the stored ones were checked")
    with pytest.raises(ValueError, match="give it a prefix"):
        compare([clashing], "synthetic", limit=12, stored=[("", earlier)])
    with pytest.raises(ValueError, match="not a readable comparison"):
        compare([prf], "synthetic", limit=12, progress=False, stored=[("", tmp_path / "missing")])
    result = CliRunner().invoke(app, ["compare", "--agents", "", "--with", f"v1={earlier}", "--limit", "12", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"v1 none", "v1 prf"}

    chosen = compare([], "synthetic", limit=12, progress=False, stored=[StoredAgents("v1", earlier, ("none",))])
    assert list(chosen) == ["v1 none"], "a label list takes only the agents it names"
    with pytest.raises(ValueError, match="holds no agent 'grpo'; it holds 'none', 'prf'"):
        compare([], "synthetic", limit=12, progress=False, stored=[StoredAgents("v1", earlier, ("grpo",))])
    result = CliRunner().invoke(
        app, ["compare", "--agents", "", "--with", f"v1={earlier}:prf", "--limit", "12", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"v1 prf"}


def test_with_reads_prefix_directory_and_labels() -> None:
    assert parse_stored("runs/a/comparison") == StoredAgents("", "runs/a/comparison")
    assert parse_stored("v1=runs/a") == StoredAgents("v1", "runs/a")
    assert parse_stored("v1=runs/a:grpo+check, v23 le") == StoredAgents("v1", "runs/a", ("grpo+check", "v23 le"))
    assert parse_stored(r"C:\runs\a") == StoredAgents("", r"C:\runs\a"), "a drive's colon is part of the path"
    with pytest.raises(ValueError, match="no agent label after the colon"):
        parse_stored("v1=runs/a:")


def test_stored_episodes_from_other_code_are_used_with_a_warning(tmp_path: Path) -> None:
    """A comparison records the code that scored it; episodes stored by another commit, or by code
    that recorded none, may be stale, and --with says so (it still uses them)."""
    import warnings

    from agents.evaluate import code_version

    earlier = tmp_path / "earlier"
    first = compare([agents.make("none", catalog="synthetic")], "synthetic", limit=4, out=earlier, progress=False)
    assert first["none"]["code"] == code_version() and code_version()["package"] is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same code: no warning
        assert compare([], "synthetic", limit=4, progress=False, stored=[("v1", earlier)])["v1 none"]["code"]
    metrics = json.loads((earlier / "metrics.json").read_text())
    del metrics["code"]
    (earlier / "metrics.json").write_text(json.dumps(metrics))
    with pytest.warns(UserWarning, match="none records no code version"):
        compare([], "synthetic", limit=4, progress=False, stored=[("v1", earlier)])
    if code_version()["commit"]:  # a git checkout
        metrics["code"] = {**code_version(), "commit": "0" * 40, "modified": True}
        (earlier / "metrics.json").write_text(json.dumps(metrics))
        with pytest.warns(UserWarning, match="scored at commit 0000000000 with changes not committed, this checkout"):
            compare([], "synthetic", limit=4, progress=False, stored=[("v1", earlier)])


def test_paired_differences_resample_queries_jointly() -> None:
    first = [record(query_id=str(i), reward=1.0 + (i % 3), relevant_in_union=2, relevant=2) for i in range(30)]
    second = [record(query_id=str(i), reward=0.5 + (i % 3), relevant_in_union=1, relevant=2) for i in range(30)]
    paired = paired_differences(first, second)
    # The same per-query offset: the interval has no width, however much the rewards vary across queries.
    assert paired["mean_reward"] == {"difference": 0.5, "low": 0.5, "high": 0.5}
    assert paired["recall_union"]["difference"] == pytest.approx(0.5)
    noisy = [record(query_id=str(i), reward=float(i % 5)) for i in range(30)]
    spread = paired_differences(noisy, [record(query_id=str(i)) for i in range(30)])["mean_reward"]
    assert spread["low"] < spread["difference"] < spread["high"]
    with pytest.raises(ValueError, match="same queries"):
        paired_differences(first, second[::-1])


def test_prf_on_home_depot_gains_retrieval_and_human_label_recall(real_data_dir: Path) -> None:
    baselines = [agents.make(name, catalog="homedepot", data_dir=str(real_data_dir)) for name in ("none", "prf")]
    summaries = compare(baselines, "homedepot", "test", str(real_data_dir), limit=200, progress=False)
    assert summaries["prf"]["retrieval_gain"] > 0.5
    assert summaries["prf"]["recall_union"] > summaries["none"]["recall_query"] + 0.05


def test_leser_evaluate_on_a_catalog_nobody_tuned_for(tmp_path: Path) -> None:
    directory = tmp_path / "my-shop"
    write_catalog_dir(synthetic_catalog(seed=21, n_products=900, n_queries=220), directory)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["evaluate", "--agent", "prf", "--catalog", str(directory), "--split", "test", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["agent"] == "prf" and summary["queries"] > 5 and summary["format_valid_rate"] == 1.0
    assert json.loads((out / "metrics.json").read_text())["mean_reward"] == summary["mean_reward"]
    for name in ("episodes.jsonl", "results.md", "metrics.png"):
        assert (out / name).stat().st_size > 0


def test_unknown_agent_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["evaluate", "--agent", "oracle", "--catalog", "synthetic"])
    assert result.exit_code == 2 and "unknown agent 'oracle'" in result.stderr
