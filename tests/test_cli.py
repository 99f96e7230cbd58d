"""The `leser` command line, as a user runs it: JSON for machines, clear errors for people."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.cli import app
from catalogs import Catalog, read_catalog_dir, synthetic_catalog, write_catalog_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generic-format catalog on disk, as a user would write one."""
    directory = tmp_path_factory.mktemp("user-catalog") / "shop"
    write_catalog_dir(synthetic_catalog(seed=11, n_products=1200, n_queries=250), directory)
    return directory


def invoke(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


def test_catalog_info_json(catalog_dir: Path) -> None:
    result = invoke("catalog", "info", "--catalog", str(catalog_dir), "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["products"] == 1200 and stats["queries"] == 250
    assert sum(split["queries"] for split in stats["splits"].values()) == 250


def test_catalog_info_table_and_real_data(real_data_dir: Path) -> None:
    result = invoke("catalog", "info", "--catalog", "homedepot", "--data-dir", str(real_data_dir))
    assert result.exit_code == 0 and "54,667 products" in result.stdout


def test_catalog_export_round_trips(tmp_path: Path, tiny_catalog: Catalog, catalog_dir: Path) -> None:
    result = invoke("catalog", "export", "--catalog", str(catalog_dir), "--out", str(tmp_path / "copy"))
    assert result.exit_code == 0, result.output
    assert read_catalog_dir(tmp_path / "copy").content_hash == read_catalog_dir(catalog_dir).content_hash


def test_search_json(catalog_dir: Path) -> None:
    catalog = read_catalog_dir(catalog_dir)
    title = catalog.products[5].title
    result = invoke("search", title, "--catalog", str(catalog_dir), "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert catalog.products[5].id in [row["id"] for row in payload["results"]]
    assert payload["total"] >= 1 and len(payload["results"]) <= 3


def test_search_with_query_syntax_does_not_fail(catalog_dir: Path) -> None:
    result = invoke("search", 'title:"sofa" AND (NOT -x) \\', "--catalog", str(catalog_dir), "--mode", "or", "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("catalog", "info", "--catalog", "/no/such/dir"), "unknown catalog"),
        (("search", "sofa", "--catalog", "synthetic", "--mode", "xor"), "mode must be 'and' or 'or'"),
        (("catalog", "download", "homedepot"), "Kaggle"),
        (("evaluate", "--agent", "prf", "--engine-check", "--limit", "1"), "--engine-check is for LLM agents"),
        (
            ("train", "--agent", "sft", "--out", "/tmp/never", "--engine-check"),
            "--engine-check trains agents that score their own samples, not sft",
        ),
    ],
)
def test_user_errors_are_one_clear_line(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_score_reads_json_lines_and_survives_bad_lines(catalog_dir: Path) -> None:
    catalog = read_catalog_dir(catalog_dir)
    query = next(iter(catalog.queries.values()))
    lines = [
        json.dumps({"query": query, "expansions": [query]}),
        "this is not json",
        json.dumps({"query": query, "action": '<think>t</think><answer>["grey sofa", "oak desk"]</answer>'}),
        json.dumps({"query": query, "action": "no answer here"}),
        json.dumps({"expansions": ["x"]}),
        json.dumps({"query": query, "expansions": "not a list"}),
    ]
    result = invoke("score", "--catalog", str(catalog_dir), "--json", stdin="\n".join(lines) + "\n")
    assert result.exit_code == 1  # some lines were malformed; all were answered
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["line"] for record in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["reward"] == 0.0 and records[0]["valid"]
    assert "error" in records[1] and "reward" not in records[1]
    assert records[2]["valid"] and records[2]["expansions"] == ["grey sofa", "oak desk"]
    assert records[3]["reward"] == -2.0 and records[3]["error"] == "no_answer"
    assert "query" in records[4]["error"] and "list" in records[5]["error"]


@pytest.mark.parametrize("name", ["synthetic", "homedepot"])
def test_score_on_named_catalogs(name: str, real_data_dir: Path) -> None:
    line = json.dumps({"query": "grey sofa", "expansions": ["grey couch", "sofa"]})
    result = invoke("score", "--catalog", name, "--data-dir", str(real_data_dir), "--json", stdin=line + "\n")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    total = record["r_rel"] + record["r_page"] + 0.1 * record["r_size"]
    assert record["valid"] and record["reward"] == pytest.approx(total)


def test_relevance_evaluate_writes_metrics_and_plot(catalog_dir: Path, tmp_path: Path) -> None:
    result = invoke("relevance", "evaluate", "--catalog", str(catalog_dir), "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["ndcg@10"]) == {"gbdt_cross_entropy", "gbdt_lambdarank", "bm25"}
    assert json.loads((tmp_path / "metrics.json").read_text())["ndcg@10"] == report["ndcg@10"]
    assert (tmp_path / "feature_importance.png").stat().st_size > 1000


def test_score_gives_every_hostile_line_its_own_error_and_goes_on(catalog_dir: Path) -> None:
    """Lines that used to stop the run (and lose every line after them) now each get one error line."""
    good = json.dumps({"query": "grey sofa", "expansions": ["grey couch"]}).encode()
    hostile = [
        b'{"query": "chair\\ud800", "expansions": ["chair"]}',  # a lone surrogate
        b'{"query": "chair", "expansions": [' + b"9" * 5000 + b"]}",  # a 5,000-digit integer
        b'{"query": "chair", "expansions": ' + b"[" * 1000 + b"]" * 1000 + b"}",  # nesting 1,000 deep
        b'{"query": "chair\xff", "expansions": ["chair"]}',  # not UTF-8
    ]
    lines = b"\n".join([good, *hostile, good]) + b"\n"
    result = runner.invoke(app, ["score", "--catalog", str(catalog_dir), "--json"], input=lines)
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout_bytes.decode("utf-8").splitlines()]
    assert [record["line"] for record in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["valid"] and records[5]["valid"] and records[0]["reward"] == records[5]["reward"]
    for record in records[1:5]:
        assert set(record) == {"line", "error"}
    assert "surrogate" in records[1]["error"] and "UTF-8" in records[4]["error"]


def test_markup_in_user_and_catalog_text_is_shown_as_text(catalog_dir: Path) -> None:
    searched = invoke("search", "[/] [red]chair", "--catalog", str(catalog_dir))
    assert searched.exit_code == 0, searched.output
    assert "[red]chair" in searched.stdout
    line = json.dumps({"query": "[/]", "expansions": ["[red]chair"]})
    scored = runner.invoke(app, ["score", "--catalog", str(catalog_dir)], input=line + "\n", env={"COLUMNS": "300"})
    assert scored.exit_code == 0, scored.output
    assert "[red]chair" in scored.stdout and "[/]" in scored.stdout


@pytest.mark.parametrize("k", ["-1", "10001", "4294967296", "9223372036854775807", "99999999999999999999"])
def test_search_bounds_k(catalog_dir: Path, k: str) -> None:
    result = invoke("search", "sofa", "--catalog", str(catalog_dir), "-k", k)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_search_json_is_valid_utf8_for_undecodable_arguments(catalog_dir: Path) -> None:
    result = invoke("search", "chair\udcff", "--catalog", str(catalog_dir), "--json")  # how Python passes b"\xff"
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout_bytes.decode("utf-8"))["query"] == "chair\ufffd"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("evaluate", "--agent", "prf", "--limit", "0"), "--limit"),
        (("evaluate", "--agent", "prf", "--limit", "-1"), "--limit"),
        (("evaluate", "--checkpoint", __file__), "not a directory"),
        (("compare", "--agents", ""), "no agents to compare"),
    ],
)
def test_evaluation_arguments_are_checked(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.output + result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("agent", "settings", "expected"),
    [
        ("sft", ["max_steps=1", "per_device_train_batch_size=2", "learning_rate=1e-3"], {"learning_rate": 1e-3}),
        (
            "grpo",
            [
                "max_steps=1",
                "queries_per_step=1",
                "num_generations=2",
                "max_completion_length=4",
                "beta=0",
                "loss_type=dapo",
                "scale_rewards=group",
            ],
            {"beta": 0.0, "loss_type": "dapo", "scale_rewards": "group", "num_generations": 2},
        ),
        (
            "ppo",
            ["max_steps=1", "queries_per_step=2", "response_length=4", "cliprange=0.1", "num_ppo_epochs=1"],
            {"cliprange": 0.1, "num_ppo_epochs": 1, "response_length": 4},
        ),
    ],
)
def test_train_sets_any_config_field_for_every_agent(
    tiny_model_dir: Path, tmp_path: Path, agent: str, settings: list[str], expected: dict
) -> None:
    args = ["train", "--agent", agent, "--model", str(tiny_model_dir), "--out", str(tmp_path / agent)]
    result = invoke(*args, *[item for setting in settings for item in ("--set", setting)])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / agent / "trainer_state.json").read_text())
    assert state["step"] == 1 and {key: state["config"][key] for key in expected} == expected
    assert json.loads((tmp_path / agent / "agent.json").read_text())["name"] == agent


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("bta=0.1", "GRPOConfig has no field bta; its fields: max_steps"),
        ("beta=high", "--set beta=high: expected float"),
        ("beta=nan", "--set beta=nan: expected float"),
        ("learning_rate=inf", "--set learning_rate=inf: expected float"),
        ("loss_type=mean", "loss_type must be one of grpo, dapo, dr_grpo"),
        ("num_generations=1", "GRPOConfig.num_generations must be an integer >= 2, got 1"),
        ("learning_rate=-1", "GRPOConfig.learning_rate must be a finite number > 0, got -1.0"),
        ("beta", "--set takes FIELD=VALUE"),
    ],
)
def test_train_refuses_a_bad_setting_by_name(tmp_path: Path, setting: str, message: str) -> None:
    result = invoke("train", "--agent", "grpo", "--out", str(tmp_path / "run"), "--set", setting)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_compare_runs_a_trained_checkpoint_with_the_engine_check_and_each_decoding(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "sft"
    trained = invoke("train", "--agent", "sft", "--model", str(tiny_model_dir), "--out", str(run), "--steps", "1")
    assert trained.exit_code == 0, trained.output
    args = [
        "compare",
        "--agents",
        "prf",
        "--checkpoint",
        str(run),
        "--engine-check",
        "--decoding",
        "greedy,guided,vote",
    ]
    result = invoke(*args, "--limit", "2", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert list(summaries) == ["prf", "sft+check", "sft+check+guided", "sft+check+vote"]
    assert all(summary["queries"] == 2 for summary in summaries.values())
    assert set(summaries["sft+check+vote"]["paired"]) == {"prf", "sft+check", "sft+check+guided"}


def test_reward_search_is_built_with_the_reward_and_engine_check_it_is_scored_under() -> None:
    from dataclasses import replace

    from agents.cli import build_agent
    from leser_env.reward import RewardConfig

    agent = build_agent("reward-search", None, "synthetic", None, 0, True, reward="paper")
    assert agent.env.reward.config == replace(RewardConfig.resolve("paper"), engine_check=True)
    assert agent.label == "reward-search+check" and build_agent("prf", None, "synthetic", None, 0, reward="paper")
    result = invoke("compare", "--agents", "prf,reward-search", "--engine-check", "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)) == ["prf", "reward-search+check"]


def test_compare_refuses_the_engine_check_without_a_checkpoint() -> None:
    result = invoke("compare", "--agents", "prf", "--engine-check")
    assert result.exit_code == 2 and "--engine-check applies to the --checkpoint agents" in result.stderr
