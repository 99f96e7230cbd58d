"""Run directories: a checkpoint survives a kill at any instant, and a damaged one is refused by name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import agents
from agents import grpo, training
from agents.llm_agent import LLMAgent
from agents.policy import LLMPolicy
from agents.training import STATE_FILE, RunLog, has_checkpoint, load_checkpoint, save_checkpoint
from catalogs.storage import file_digest


class Killed(BaseException):
    """The process dies here: nothing after this point touches the disk (finally blocks included)."""


def freeze_disk_after(monkeypatch: pytest.MonkeyPatch, operations: int) -> None:
    """Let ``operations`` renames or removals happen, then die at the next; afterwards every rename
    and removal is a no-op, as in a killed process whose clean-up code never runs."""
    real = {"rename": os.rename, "replace": os.replace, "unlink": os.unlink, "rmdir": os.rmdir}
    real_rmtree = shutil.rmtree
    state = {"left": operations, "dead": False}

    def gate() -> bool:
        if state["dead"]:
            return False
        if state["left"] == 0:
            state["dead"] = True
            raise Killed
        state["left"] -= 1
        return True

    def wrap(name: str):
        def operation(*args, **kwargs):
            if gate():
                return real[name](*args, **kwargs)

        return operation

    for name in real:
        monkeypatch.setattr(os, name, wrap(name))
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: real_rmtree(*args, **kwargs) if gate() else None)


def adapter_digest(policy_dir: Path) -> str:
    return file_digest(policy_dir / "adapter_model.safetensors")


def test_a_checkpoint_survives_a_kill_at_every_instant_of_a_save(tiny_policy, tmp_path: Path) -> None:
    policy = tiny_policy()
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=1e-3)
    reference = tmp_path / "reference"
    reference.mkdir()

    def step_to(run: Path, step: int) -> None:
        with torch.no_grad():
            for name, parameter in policy.model.named_parameters():
                if "lora_B" in name:
                    parameter.fill_(0.01 * step)
        log = RunLog(run, [{"step": s, "loss": 1.0 / s} for s in range(1, step + 1)])
        save_checkpoint(run, policy, optimizer, step, {"steps": 5}, log, np.random.default_rng(step))
        log.close()

    step_to(reference, 1)
    step_one = adapter_digest(reference / "policy")
    step_to(reference, 2)
    step_two = adapter_digest(reference / "policy")
    assert step_one != step_two

    instants = 0
    while True:
        run = tmp_path / f"run-{instants}"
        shutil.copytree(reference, run)
        step_to(run, 1)  # a complete checkpoint at step 1 ...
        with pytest.MonkeyPatch.context() as patch:
            freeze_disk_after(patch, instants)  # ... and a save of step 2 killed after `instants` operations
            try:
                step_to(run, 2)
                finished = True
            except Killed:
                finished = False
        assert has_checkpoint(run), f"killed after {instants} operations: no checkpoint"
        fresh = torch.optim.AdamW(list(policy.trainable_parameters()), lr=1e-3)
        step, records, _ = load_checkpoint(run, fresh, np.random.default_rng(0), total_steps=5)
        assert step in (1, 2) and [r["step"] for r in records] == list(range(1, step + 1))
        assert adapter_digest(run / "policy") == (step_one if step == 1 else step_two), f"after {instants} operations"
        assert LLMPolicy.load(run / "policy", model=tiny_policy(base_only=True), tokenizer=policy.tokenizer)
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "staged files left behind"
        if finished:
            assert step == 2
            break
        instants += 1
    assert instants >= 6  # every rename and removal of the save was a kill point


@pytest.fixture
def finished_run(tiny_policy, tmp_path: Path) -> Path:
    config = grpo.GRPOConfig(max_steps=1, queries_per_step=1, num_generations=2, max_completion_length=4, save_steps=1)
    grpo.train(tiny_policy(), grpo_env(), config, tmp_path / "run", progress=False)
    return tmp_path / "run"


def grpo_env():
    from leser_env.env import LeserEnv

    return LeserEnv(catalog="synthetic", split="train")


def resume(tiny_policy, run: Path, steps: int = 2) -> dict:
    config = grpo.GRPOConfig(
        max_steps=steps, queries_per_step=1, num_generations=2, max_completion_length=4, save_steps=1
    )
    return grpo.train(tiny_policy(), grpo_env(), config, run, resume=True, progress=False)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("garbage_optimizer", r"optimizer.pt: damaged"),
        ("truncated_optimizer", r"optimizer.pt: damaged"),
        ("truncated_adapter", r"adapter_model.safetensors: damaged"),
        ("missing_rng", r"rng.pt: missing"),
        ("garbage_state", r"trainer_state.json: unreadable checkpoint state"),
        ("state_not_an_object", r"trainer_state.json: not a checkpoint state"),
        ("step_edited", r"trainer_state.json: says step 99, but its log ends at step 1"),
    ],
)
def test_a_damaged_checkpoint_is_refused_naming_the_file(
    tiny_policy, finished_run: Path, damage: str, message: str
) -> None:
    state_file = finished_run / STATE_FILE
    if damage == "garbage_optimizer":
        (finished_run / "optimizer.pt").write_bytes(b"\x00garbage" * 40)
    elif damage == "truncated_optimizer":
        (finished_run / "optimizer.pt").write_bytes((finished_run / "optimizer.pt").read_bytes()[:100])
    elif damage == "truncated_adapter":
        adapter = finished_run / "policy" / "adapter_model.safetensors"
        adapter.write_bytes(adapter.read_bytes()[:64])
    elif damage == "missing_rng":
        (finished_run / "rng.pt").unlink()
    elif damage == "garbage_state":
        state_file.write_bytes(b"\xff\xfe{ not json")
    elif damage == "state_not_an_object":
        state_file.write_text("[1, 2, 3]")
    else:
        state = json.loads(state_file.read_text())
        state_file.write_text(json.dumps({**state, "step": 99}))
    with pytest.raises(ValueError, match=message):
        has_checkpoint(finished_run)
    with pytest.raises(ValueError, match=message):
        resume(tiny_policy, finished_run)


def test_a_checkpoint_past_the_runs_length_is_refused(tiny_policy, finished_run: Path) -> None:
    config = grpo.GRPOConfig(max_steps=2, queries_per_step=1, num_generations=2, max_completion_length=4, save_steps=1)
    grpo.train(tiny_policy(), grpo_env(), config, finished_run, resume=True, progress=False)
    with pytest.raises(ValueError, match="at step 2, past this run's 1 steps"):
        resume(tiny_policy, finished_run, steps=1)


def test_a_copied_run_loads_its_own_weights(tiny_policy, finished_run: Path, tmp_path: Path) -> None:
    grpo.GRPOAgent.describe(finished_run, "synthetic", None)
    assert json.loads((finished_run / "agent.json").read_text())["config"]["policy_dir"] == "policy"
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(finished_run)  # the original is gone: the copy still loads, from itself
    loaded: dict[str, Path] = {}

    def fake_init(self, catalog="synthetic", data_dir=None, seed=0, policy_dir=None, **config) -> None:
        loaded["policy_dir"] = Path(policy_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LLMAgent, "__init__", fake_init)
        agents.load(copy)
    assert loaded["policy_dir"] == copy / "policy"


def test_an_absolute_policy_dir_from_an_older_run_still_loads(finished_run: Path) -> None:
    record = {
        "name": "grpo",
        "config": {"catalog": "synthetic", "policy_dir": str((finished_run / "policy").resolve())},
    }
    (finished_run / "agent.json").write_text(json.dumps(record))
    loaded: dict[str, Path] = {}

    def fake_init(self, catalog="synthetic", data_dir=None, seed=0, policy_dir=None, **config) -> None:
        loaded["policy_dir"] = Path(policy_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LLMAgent, "__init__", fake_init)
        agents.load(finished_run)
    assert loaded["policy_dir"] == (finished_run / "policy").resolve()


def test_a_kill_between_the_policy_swaps_keeps_the_checkpoint(tiny_policy, finished_run: Path) -> None:
    """The case a hostile probe found: `.policy.old` left by a kill used to restart the run from 0."""
    (finished_run / "policy").rename(finished_run / ".policy.old")
    assert has_checkpoint(finished_run)
    result = resume(tiny_policy, finished_run)
    assert [r["step"] for r in result["log"]] == [1, 2]
    assert training.read_state(finished_run)["step"] == 2


def test_each_gpus_random_state_is_saved_and_restored(tiny_policy, tmp_path: Path) -> None:
    """Resuming on GPUs continues each device's sampling stream (the CUDA calls are recorded here; a
    checkpoint written without GPUs, or by an older version without the entry, still loads)."""
    policy = tiny_policy()
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=1e-3)

    def save(run: Path) -> None:
        run.mkdir(exist_ok=True)
        log = RunLog(run, [{"step": 1}])
        save_checkpoint(run, policy, optimizer, 1, {}, log)
        log.close()

    saved = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored: dict[int, torch.Tensor] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        patch.setattr(torch.cuda, "device_count", lambda: 2)
        patch.setattr(torch.cuda, "get_rng_state_all", lambda: [state.clone() for state in saved])
        patch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.__setitem__(device, state))
        save(tmp_path / "gpus")
        load_checkpoint(tmp_path / "gpus", optimizer)
        assert sorted(restored) == [0, 1] and all(torch.equal(restored[d], saved[d]) for d in (0, 1))
        restored.clear()
        patch.setattr(torch.cuda, "device_count", lambda: 1)  # resumed on a machine with fewer GPUs
        load_checkpoint(tmp_path / "gpus", optimizer)
        assert list(restored) == [0]
    save(tmp_path / "cpu")
    restored.clear()
    assert torch.load(tmp_path / "cpu" / "rng.pt", weights_only=True)["cuda"] is None
    load_checkpoint(tmp_path / "cpu", optimizer)  # nothing of CUDA to restore, and no call made
    assert not restored
