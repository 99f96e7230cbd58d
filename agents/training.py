"""What every training loop shares: atomic checkpoints that resume, step logs, a learning curve.

A run directory holds ``policy/`` (the peft adapter and policy config), ``optimizer.pt``,
``rng.pt`` (torch and numpy generator states), ``trainer_state.json`` (step, config, log; written
last, so a checkpoint exists only once everything it points at is on disk), ``log.jsonl`` and,
at the end, ``learning_curve.png``. ``--resume`` continues from the last complete checkpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import write_json_atomically
from agents.policy import LLMPolicy

STATE_FILE = "trainer_state.json"


class RunLog:
    """Step records to a JSONL file, to TensorBoard when it is installed, and kept for the checkpoint."""

    def __init__(self, out: Path, records: list[dict[str, Any]] | None = None) -> None:
        self.out = out
        self.records = list(records or [])
        # Rewrite the file from the checkpoint's records: steps after the last checkpoint are redone.
        with open(out / "log.jsonl", "w") as stream:
            for record in self.records:
                stream.write(json.dumps(record) + "\n")
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # TensorBoard is optional
            pass

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.out / "log.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def episode_stats(
    rewards: np.ndarray, infos: Sequence[dict[str, Any]], completions: Sequence[list[int]]
) -> dict[str, float]:
    """What every RL step logs about its episodes: reward and its parts, validity, completion length."""
    breakdowns = [info["reward_breakdown"] for info in infos]
    return {
        "reward_mean": float(np.mean(rewards)),
        "reward_std": float(np.std(rewards)),
        "r_rel": float(np.mean([b["r_rel"] for b in breakdowns])),
        "r_page": float(np.mean([b["r_page"] for b in breakdowns])),
        "r_size": float(np.mean([b["r_size"] for b in breakdowns])),
        "valid_rate": float(np.mean([b["valid"] for b in breakdowns])),
        "completion_tokens": float(np.mean([len(ids) for ids in completions])),
    }


def save_checkpoint(
    out: Path,
    policy: LLMPolicy,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: dict[str, Any],
    log: RunLog,
    generator: np.random.Generator | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Everything needed to resume at ``step``; the state file is replaced last."""
    policy.save(out / "policy")
    _torch_save_atomically({"optimizer": optimizer.state_dict(), **(extra or {})}, out / "optimizer.pt")
    _torch_save_atomically(
        {"torch": torch.get_rng_state(), "numpy": generator.bit_generator.state if generator is not None else None},
        out / "rng.pt",
    )
    write_json_atomically(out / STATE_FILE, {"step": step, "config": config, "log": log.records})


def load_checkpoint(
    out: Path, optimizer: torch.optim.Optimizer, generator: np.random.Generator | None = None
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Restore optimizer and random state; returns (step, log records, extra tensors).

    The ``.pt`` files are read with ``weights_only=True``: tensors and plain containers only, so a
    crafted file in a run directory cannot run code on ``--resume``; anything else is refused
    with an error naming the file.
    """
    state = json.loads((out / STATE_FILE).read_text())
    saved = _torch_load(out / "optimizer.pt")
    optimizer.load_state_dict(saved.pop("optimizer"))
    rng = _torch_load(out / "rng.pt")
    torch.set_rng_state(rng["torch"])
    if generator is not None and rng.get("numpy") is not None:
        generator.bit_generator.state = rng["numpy"]
    return state["step"], state["log"], saved


def has_checkpoint(out: Path) -> bool:
    return (out / STATE_FILE).is_file() and (out / "policy").is_dir()


def plot_learning_curve(records: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Reward, validity, KL and entropy against the step, smoothed by a short moving average."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    panels = [
        ("reward_mean", "mean reward"),
        ("valid_rate", "format-valid rate"),
        ("kl", "KL to reference"),
        ("entropy", "entropy (nats/token)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(16, 3.6))
    for axis, (key, label) in zip(axes, panels, strict=True):
        values = np.array([r.get(key, np.nan) for r in records], dtype=float)
        axis.plot(steps, values, color="#9bb7e0", linewidth=1, label="per step")
        window = max(1, len(values) // 10)
        if window > 1:
            smooth = np.convolve(np.nan_to_num(values), np.ones(window) / window, mode="valid")
            axis.plot(steps[window - 1 :], smooth, color="#1f4e9c", linewidth=2, label=f"mean of {window}")
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("step")
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _torch_load(path: Path) -> Any:
    """A checkpoint file of tensors and plain containers; a clear error for anything else."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # a GPU run resumes anywhere
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing from the checkpoint (resume needs it)") from None
    except Exception as error:  # pickle.UnpicklingError for code, RuntimeError for a damaged archive
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a checkpoint file this project wrote ({first_line})") from None


def _torch_save_atomically(payload: Any, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(payload, temporary)
    temporary.replace(path)
