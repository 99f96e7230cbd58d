"""The reward-fidelity audit on the hand-written tiny catalog: complete report, sane taus, every output written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from agents.audit import GAINS, JUNK_PROBES, print_audit, run_audit
from catalogs import Catalog, write_catalog_dir

CONFIGS = ["paper", "default"]


@pytest.fixture(scope="module")
def tiny_dir(tiny_catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny catalog on disk (q1, q2 are test queries, q3 a train query)."""
    return str(write_catalog_dir(tiny_catalog, tmp_path_factory.mktemp("audit") / "tiny"))


def candidate_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]


def test_audit_report_is_complete_and_every_output_is_written(tiny_dir: str, tmp_path: Path) -> None:
    report = run_audit(tiny_dir, None, CONFIGS, None, tmp_path, "test", False)

    assert report["split"] == "test" and report["queries"] == report["labelled_queries"] == 2
    assert list(report["configs"]) == CONFIGS and report["reference_config"] == "paper"
    for stats in report["configs"].values():
        for gain in GAINS:
            tau = stats["tau"][gain]
            bounds = (tau["mean"], tau["low"], tau["high"])
            assert (tau["mean"] is None and tau["queries"] == 0) or all(-1 <= value <= 1 for value in bounds)
        assert set(stats["junk_vs_prf"]) == {"zero_result", "other"}
        assert 0 <= stats["farmed"]["share"] <= 1
        assert stats["oracle_upper_bound"]["queries"] == 2
    assert set(report["differences_vs_reference"]) == {"default"}
    assert set(report["differences_vs_reference"]["default"]) == set(GAINS)

    assert json.loads((tmp_path / "audit.json").read_text()) == report
    assert (tmp_path / "audit.png").stat().st_size > 0
    markdown = (tmp_path / "audit.md").read_text()
    for column in ("tau h1", "tau h2", "tau h3", "junk/prf zero-result", "junk/prf other", "farmed share"):
        assert column in markdown
    assert "default - paper" in markdown

    lines = candidate_lines(tmp_path)
    assert len(lines) == report["candidates"]
    assert {"oracle", "junk", "none", "prf"} <= {kind for line in lines for kind in line["kinds"]}
    junk = {line["expansions"][0] for line in lines if "junk" in line["kinds"]}
    assert junk == set(JUNK_PROBES)
    for line in lines:
        assert 1 <= len(line["expansions"]) <= 5 and all(1 <= len(text) <= 100 for text in line["expansions"])
        assert set(line["reward"]) == set(CONFIGS) and all(gain in line for gain in GAINS)
    console = Console(record=True, width=250)
    print_audit(report, console)
    assert "farmed share" in console.export_text()


def test_oracle_only_on_the_test_split(tiny_dir: str, tmp_path: Path) -> None:
    report = run_audit(tiny_dir, None, ["default"], None, tmp_path, "train", False)
    assert report["labelled_queries"] == 1 and report["differences_vs_reference"] == {}
    assert "oracle" not in report["pool_kinds"] and "junk" in report["pool_kinds"]
    assert all("oracle" not in line["kinds"] for line in candidate_lines(tmp_path))


def test_leser_reward_audit_command(tiny_dir: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agents.cli import app

    result = CliRunner().invoke(
        app, ["reward", "audit", "--catalog", tiny_dir, "--reward", "default,paper", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference_config"] == "default" and set(report["differences_vs_reference"]) == {"paper"}
    shown = CliRunner().invoke(app, ["reward", "audit", "--catalog", tiny_dir, "--out", str(tmp_path / "table")])
    assert shown.exit_code == 0 and "paired tau differences vs paper" in shown.stdout
    refused = CliRunner().invoke(app, ["reward", "audit", "--catalog", tiny_dir, "--reward", "x", "--out", "o"])
    assert refused.exit_code == 2 and "unknown reward preset" in refused.stderr
