"""learned-edit: the supervised edit of prf's set, trained on the reward, acting on the observation."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from typer.testing import CliRunner

import agents
import leser_env  # noqa: F401  (registers LESER-v0)
from agents.cli import app
from agents.learned_edit import EDIT_FEATURES, MODEL_FILE, LearnedEditConfig, run
from leser_env.actions import parse_action
from leser_env.env import LeserEnv


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A learned-edit run on 60 synthetic train queries, behind the engine check."""
    out = tmp_path_factory.mktemp("learned-edit") / "run"
    env = LeserEnv("synthetic", split="train", engine_check=True)
    return out, run(LearnedEditConfig(train_queries=60), env, out, progress=False)


def test_it_learns_from_every_edit_of_prf_and_writes_a_loadable_run(trained: tuple[Path, dict]) -> None:
    out, result = trained
    report = json.loads((out / "report.json").read_text())
    assert report["train_queries"] > 40 and report["train_edits"] > 20 * report["train_queries"]
    assert report["engine_check"] is True and report["config"]["train_queries"] == 60
    assert set(report["feature_gain_share"]) == set(EDIT_FEATURES)
    assert math.isclose(sum(report["feature_gain_share"].values()), 1.0)
    # In sample the edits it predicts to gain do gain, and never more than the best edit could.
    assert 0 < report["in_sample_gain_over_prf"] <= report["best_edit_gain_over_prf"]
    assert "train queries" in result["summary"]
    agent = agents.load(out)
    assert agent.name == "learned-edit" and agent.label == "learned-edit+check" and agent.max_edits == 1
    assert (out / MODEL_FILE).is_file()


def test_it_sends_prf_set_or_an_edit_of_it_composed_from_the_evidence(trained: tuple[Path, dict]) -> None:
    """Every action is prf's set, or that set with the one edit the model picks, of evidence phrases;
    a saved and reloaded agent acts the same."""
    out, _ = trained
    agent = agents.load(out)
    prf = agents.make("prf", catalog="synthetic")
    env = gym.make("LESER-v0", catalog="synthetic", split="test").unwrapped
    observations = [env.observe(query_id)[0] for query_id in env.query_ids[:40]]
    actions = agent.act(observations)
    edited = 0
    for observation, action, prf_action in zip(observations, actions, prf.act(observations), strict=True):
        ours, theirs = parse_action(action), parse_action(prf_action)
        assert ours.valid
        shown = set(re.findall(r"[^\W_]+", f"{observation['query']} {observation['evidence']}".lower()))
        for expansion in ours.expansions:
            assert set(re.findall(r"[^\W_]+", expansion.lower())) <= shown, (observation["query"], expansion)
        changed = set(ours.expansions) ^ set(theirs.expansions)
        assert len(changed) <= 2, (ours.expansions, theirs.expansions)  # one drop, add or replacement
        edited += bool(changed)
    assert 0 < edited < len(observations)
    again = agents.load(out)
    assert again.act(observations[:10]) == actions[:10]
    twice = agents.load(out, max_edits=3).act(observations)
    assert twice != actions and all(parse_action(action).valid for action in twice)  # more edits somewhere


def test_adversarial_observations_give_valid_actions(
    trained: tuple[Path, dict], adversarial_queries: tuple[str, ...]
) -> None:
    agent = agents.load(trained[0])
    odd: list[Any] = [{"query": query, "context": query} for query in adversarial_queries]
    odd += [{}, {"query": None, "context": 5}, {"context": "- Grey Sofa | Furniture"}, "not a mapping", None]
    for observation, action in zip(odd, agent.act(odd), strict=True):
        assert parse_action(action).valid, (observation, action)


def test_it_refuses_what_it_cannot_do_with_clear_errors(trained: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no model: train one with `leser train --agent learned-edit"):
        agents.make("learned-edit").act([{"query": "chair"}])
    with pytest.raises(ValueError, match="max_edits must be an integer >= 1"):
        agents.make("learned-edit", max_edits=0)
    with pytest.raises(ValueError, match="--decoding vote is for LLM agents"):
        agents.load(trained[0], decoding="vote")
    assert agents.load(trained[0], decoding="greedy", device="cpu").config == agents.load(trained[0]).config
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "agent.json").write_text((trained[0] / "agent.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"model\.txt: not found"):
        agents.load(damaged)
    (damaged / "policy").mkdir()
    (damaged / MODEL_FILE).write_text("tree\nnot a model\n")
    with pytest.raises(ValueError, match=r"model\.txt: not a LightGBM model"):
        agents.load(damaged)
    env = LeserEnv("synthetic", split="train")
    with pytest.raises(ValueError, match="already holds a run"):
        run(LearnedEditConfig(train_queries=5), env, trained[0], progress=False)
    resumed = run(LearnedEditConfig(train_queries=5), env, trained[0], resume=True, progress=False)
    assert resumed["train_queries"] == trained[1]["train_queries"]  # the finished run's report, not a new fit
    with pytest.raises(ValueError, match="no language model to start from"):
        run(LearnedEditConfig(), env, tmp_path / "x", init=trained[0])
    with pytest.raises(ValueError, match="num_leaves must be an integer >= 2"):
        LearnedEditConfig(num_leaves=1)


def test_learn_fits_in_memory_and_save_writes_a_run_that_loads(tmp_path: Path) -> None:
    agent = agents.make("learned-edit")
    report = agent.learn(LeserEnv("synthetic", split="train"), LearnedEditConfig(train_queries=20), progress=False)
    assert report["train_queries"] > 10 and report["engine_check"] is False
    observations = [{"query": "office chair"}, {"query": "grey sofa"}]
    agent.save(tmp_path / "run")
    assert agents.load(tmp_path / "run").act(observations) == agent.act(observations)
    (tmp_path / "run" / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a learned-edit report"):
        run(LearnedEditConfig(), LeserEnv("synthetic", split="train"), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ValueError, match="feedback evidence"):
        agent.learn(LeserEnv("synthetic", split="train", feedback_evidence=False), progress=False)


def test_leser_train_and_evaluate_it_from_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--agent", "learned-edit", "--out", str(out), "--set", "train_queries=30"])
    assert result.exit_code == 0, result.output
    assert "learned-edit: " in result.output and json.loads((out / "agent.json").read_text())["name"] == "learned-edit"
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(out), "--limit", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["format_valid_rate"] == 1.0
    refused = runner.invoke(app, ["train", "--agent", "learned-edit", "--out", str(tmp_path / "m"), "--model", "gpt2"])
    assert refused.exit_code == 2 and "no language model" in refused.stderr and "Traceback" not in refused.output
