"""The examples a newcomer runs first keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_quickstart_plays_ten_episodes(synthetic) -> None:
    lines = [line for line in run("quickstart.py").splitlines() if "reward" in line]
    assert len(lines) == 10


def test_compare_baselines_writes_its_report(synthetic, tmp_path: Path) -> None:
    output = run("compare_baselines.py", "--limit", "10", "--out", str(tmp_path))
    assert "| mean reward |" in output and (tmp_path / "metrics.png").is_file()


def test_swap_agents_runs_the_baselines_and_explains_missing_runs(synthetic, tmp_path: Path) -> None:
    output = run("swap_agents.py", "--agents", "none,prf,grpo", "--episodes", "2", "--runs", str(tmp_path))
    assert "none: mean reward +0.000" in output and "prf: mean reward" in output
    assert "skipping grpo: train it first with `leser train --agent grpo" in output


def test_train_with_trl_runs_trls_trainer_and_writes_a_leser_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    import agents

    pytest.importorskip("trl", reason="the trl extra: pip install -e '.[trl]'")
    out = tmp_path / "trl-run"
    args = ["--model", str(tiny_model_dir), "--steps", "1", "--limit", "2", "--max-completion-length", "8"]
    output = run("train_with_trl.py", *args, "--lora-rank", "4", "--out", str(out))
    assert "1 steps; mean reward per step: -2.000" in output  # a random tiny model writes no valid action
    assert agents.load(out).name == "grpo" and (out / "policy" / "adapter_model.safetensors").is_file()


def test_train_with_trl_from_a_warm_up_leaves_out_the_queries_it_learnt(tiny_model_dir: Path, tmp_path: Path) -> None:
    import agents
    from agents import sft
    from agents.policy import PolicyConfig
    from leser_env.env import LeserEnv

    pytest.importorskip("trl", reason="the trl extra: pip install -e '.[trl]'")
    env = LeserEnv(catalog="synthetic", split="train")
    policy_config = PolicyConfig(model=str(tiny_model_dir), max_new_tokens=4, max_prompt_tokens=256, lora_rank=4)
    warm_up = tmp_path / "sft"
    sft.run(
        sft.SFTConfig(examples=8, per_device_train_batch_size=8),
        env,
        warm_up,
        policy_config=policy_config,
        validation_queries=1,
        progress=False,
    )
    assert len(sft.queries_learnt_by(warm_up, env)) == 8
    out = tmp_path / "trl-run"
    args = ["--init", str(warm_up), "--skip-warm-up-queries", "--steps", "1", "--limit", "2"]
    output = run("train_with_trl.py", *args, "--max-completion-length", "8", "--out", str(out))
    assert f"leaving out the 8 train queries {warm_up} learnt targets for" in output
    assert "1 steps; mean reward per step:" in output and agents.load(out).name == "grpo"


def test_observation_headroom_measures_the_three_edits(synthetic, tmp_path: Path) -> None:
    """The oracle edit is the best of the same neighbours (never below 0), so it is at least the
    learned and the fixed edit on every query, and the report has the table, the JSON and the chart."""
    import json

    output = run("observation_headroom.py", "--train", "40", "--limit", "12", "--out", str(tmp_path))
    assert "| learned edit (reads the observation) |" in output and "| oracle edit (reads the reward) |" in output
    report = json.loads((tmp_path / "headroom.json").read_text())
    gains = report["gain_over_prf"]
    assert report["test_queries"] >= 10 and report["train_edits"] > 40 * 20
    assert gains["oracle"]["mean"] >= max(gains["learned"]["mean"], gains["fixed"]["mean"], 0)
    assert gains["oracle"]["mean"] > 0, "some edit of prf's set pays on a dozen queries"
    paired = report["learned_minus_fixed"]
    assert paired["mean"] == pytest.approx(gains["learned"]["mean"] - gains["fixed"]["mean"])
    assert paired["low"] <= paired["mean"] <= paired["high"] and "learned - fixed, paired:" in output
    assert (tmp_path / "headroom.png").stat().st_size > 1000 and (tmp_path / "headroom.md").is_file()
    further = tmp_path / "two-edits"
    output = run("observation_headroom.py", "--train", "20", "--limit", "6", "--edits", "2", "--out", str(further))
    assert "| oracle edits (up to 2) (reads the reward) |" in output
    two = json.loads((further / "headroom.json").read_text())["gain_over_prf"]
    assert two["oracle"]["mean"] >= max(two["fixed"]["mean"], 0), "the oracle's first edit is the best one"


def test_train_grpo_runs_the_main_job_guided_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`make run`'s script, end to end on the tiny model: warm-up, GRPO, comparison, all decoded
    within the action format; run again, it finds every stage done and only compares."""
    import agents

    args = ["--model", str(tiny_model_dir), "--out", str(tmp_path), "--engine-check", "--guided-decoding"]
    args += ["--sft-steps", "1", "--sft-examples", "4", "--max-edits", "0", "--start-with-core", "--validation", "1"]
    args += ["--grpo-steps", "1", "--limit", "3"]
    output = run("train_grpo.py", *args)
    assert "3/3 comparison on 3 held-out test queries (guided decoding)" in output
    assert "| sft+check+guided |" in output and "| grpo+check+guided |" in output
    assert "grpo+check+guided - prf, mean reward on 3 test queries:" in output
    assert agents.load(tmp_path / "grpo").decoding == "guided", "a guided GRPO run is served guided"
    episodes = (tmp_path / "comparison" / "episodes.jsonl").read_text().splitlines()
    assert len(episodes) == 4 * 3
    again = run("train_grpo.py", *args)
    assert "1/3 warm-up" not in again and "3/3 comparison" in again
