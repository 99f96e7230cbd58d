"""What every training loop shares: one trainer shape, atomic checkpoints that resume, step logs,
a learning curve.

Every trainer (SFT, GRPO, PPO) is a function ``run(config, env, out, resume=False, *, policy=None,
init=None, policy_config=None, progress=True) -> dict`` registered with its config dataclass
(``register_trainer``), so ``leser train --agent NAME --set field=value ...`` builds any of them
the same way (``configure`` turns the ``--set`` strings into the config's field types).
``learned-edit`` (``agents.learned_edit``, no language model) registers the same way; its run is one
LightGBM fit, so what follows about checkpoints is the LLM trainers'.

A run directory holds ``policy/`` (the peft adapter and policy config), ``optimizer.pt``,
``rng.pt`` (the generator states of torch's CPU, of each GPU, and of numpy), ``trainer_state.json``
(step, config, log and the content digest of every checkpoint file), ``log.jsonl`` and, at the
end, ``learning_curve.png``; an RL run also ``skipped_queries.json`` (the train queries it does
not draw: with ``skip_warm_up_queries``, those its warm-up learnt targets for). ``--resume``
continues from the last complete checkpoint.

A checkpoint survives a kill at any instant. Saving step N writes every file under a staged
name (``.policy.step-N``, ``.optimizer.pt.step-N``, ``.rng.pt.step-N``), then commits by
replacing ``trainer_state.json`` (one atomic rename), then moves the staged files into place.
Whoever opens the run next (``has_checkpoint``) finishes that: staged files of the committed
step are moved into place, those of an uncommitted step deleted. A checkpoint whose files do not
match the digests its state recorded (truncated, replaced, edited), or whose state is not this
project's, is refused with an error naming the file, never resumed from.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import shutil
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.policy import LLMPolicy, PolicyConfig
from catalogs.storage import (
    atomic_file,
    file_digest,
    png_figure,
    recover_directory,
    replace_directory,
    tree_digests,
    write_atomically,
    write_json_atomically,
)

STATE_FILE = "trainer_state.json"
POLICY_DIR = "policy"
STATE_BLOBS = ("optimizer.pt", "rng.pt")
SKIPPED_QUERIES_FILE = "skipped_queries.json"


TRAINER_MODULES = ("agents.sft", "agents.grpo", "agents.ppo", "agents.learned_edit")


@dataclasses.dataclass(frozen=True)
class Trainer:
    name: str
    config_class: type
    run: Callable[..., dict[str, Any]]
    scores_samples: bool  # trains on rewards of its own samples (so the engine check applies)


TRAINERS: dict[str, Trainer] = {}


def register_trainer(name: str, config_class: type, scores_samples: bool = True) -> Callable:
    """Decorator for a module's ``run``: makes it ``leser train --agent NAME``."""

    def decorate(run: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        TRAINERS[name] = Trainer(name, config_class, run, scores_samples)
        return run

    return decorate


def trainer(name: str) -> Trainer:
    for module in TRAINER_MODULES:
        importlib.import_module(module)
    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r}: use one of {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name]


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    """``["beta=0.04", "loss_type=dapo"]`` -> ``{"beta": "0.04", "loss_type": "dapo"}``."""
    settings = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--set takes FIELD=VALUE, not {pair!r}")
        settings[name.strip()] = value.strip()
    return settings


def configure(config_class: type, settings: Mapping[str, Any]) -> Any:
    """A config with ``settings`` applied; strings are converted to each field's type."""
    hints = typing.get_type_hints(config_class)
    names = [field.name for field in dataclasses.fields(config_class)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"{config_class.__name__} has no field {', '.join(unknown)}; its fields: {', '.join(names)}")
    values = {
        name: _convert(name, value, hints[name]) if isinstance(value, str) else value
        for name, value in settings.items()
    }
    return config_class(**values)


def _convert(name: str, text: str, kind: Any) -> Any:
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    options = typing.get_args(kind) if union else (kind,)
    if type(None) in options and text.lower() in ("none", "null", ""):
        return None
    for option in (o for o in options if o is not type(None)):
        try:
            if option is bool:
                if text.lower() in ("true", "1", "yes", "on"):
                    return True
                if text.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(text)
            if option is float:
                number = float(text)
                if not math.isfinite(number):  # nan and inf pass float() but no setting means them
                    raise ValueError(text)
                return number
            if option in (int, str):
                return option(text)
        except ValueError:
            continue
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"--set {name}={text}: expected {expected}")


def run_rl_stage(
    title: str,
    train: Callable[..., dict[str, Any]],
    agent_class: Any,
    config: Any,
    env: Any,
    out: str | Path,
    resume: bool,
    policy: LLMPolicy | None,
    init: str | Path | None,
    policy_config: PolicyConfig | None,
    progress: bool,
) -> dict[str, Any]:
    """What GRPO's and PPO's ``run`` share: the policy (resumed, started from ``init`` or fresh),
    ``train`` on ``env``'s train queries (less the warm-up's if asked, see ``rl_query_ids``), the
    run's agent.json, and a one-line summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    policy = policy or start_policy(out, resume, Path(init) if init else None, policy_config)
    query_ids = rl_query_ids(env, out, resume, init, config.skip_warm_up_queries)
    result = train(policy, env, config, out, resume=resume, progress=progress, query_ids=query_ids)
    guided = getattr(config, "guided_decoding", False)  # GRPO's option; PPO samples unguided
    agent_class.describe(out, env.catalog_spec, env.data_dir, engine_check=env.engine_check, guided=guided)
    last = result["log"][-1] if result["log"] else {}
    result["summary"] = (
        f"{title} on {env.catalog.name}: {result['steps']} steps drawn from "
        f"{result.get('drawn_from', len(query_ids)):,} train queries; "
        f"last reward {last.get('reward_mean', 0):+.3f}, valid {last.get('valid_rate', 0):.0%}; "
        f"curve: {out / 'learning_curve.png'}"
    )
    return result


def rl_query_ids(env: Any, out: Path, resume: bool, init: str | Path | None, skip_warm_up_queries: bool) -> list[str]:
    """The train queries an RL stage draws from: every one of ``env``'s, less those whose targets
    the warm-up it starts from (``init``) learnt, when ``skip_warm_up_queries``.

    The warm-up fitted the policy to label-derived targets on those; RL practises on queries whose
    answer the policy has to work out, as on test queries (measured on synthetic: level with
    drawing from every train query, within run-to-run noise). The skipped ids are written to the run
    (``skipped_queries.json``) when it starts, and a resumed run reads them back, so it draws from
    the same queries with or without ``init``. If the warm-up used every train query, nothing is
    skipped.
    """
    from agents.sft import queries_learnt_by

    file = out / SKIPPED_QUERIES_FILE
    saved = saved_query_ids(
        file, resume, "the list of skipped queries", "delete it and resume with the same --init to write it again"
    )
    if saved is not None:
        skipped = set(saved)
    else:
        learnt = queries_learnt_by(init, env) if init is not None and skip_warm_up_queries else []
        write_json_atomically(file, {"warm_up": str(init) if learnt else None, "query_ids": learnt})
        skipped = set(learnt)
    kept = [query_id for query_id in env.query_ids if query_id not in skipped]
    return kept or list(env.query_ids)


def saved_query_ids(file: Path, resume: bool, what: str, remedy: str, required: bool = False) -> list[str] | None:
    """The query ids a run wrote to ``file`` when it started (``{"query_ids": [...]}``), when it is
    being resumed from a checkpoint in ``file``'s directory and the file is there; None otherwise,
    so the caller works them out (and writes them) afresh. A file that is not what this project
    writes raises, naming ``what`` it should hold and the ``remedy``; so does a missing one when
    ``required`` (ids that cannot be worked out again once the run has trained)."""
    if not (resume and has_checkpoint(file.parent)):
        return None
    if not file.is_file():
        if required:
            raise ValueError(
                f"{file}: missing; {what} this run started from is written there when it starts. "
                f"Restore it, or {remedy}"
            )
        return None
    try:
        return list(json.loads(file.read_text())["query_ids"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{file}: not {what} this project writes ({error}); restore it, or {remedy}") from None


def start_policy(
    out: Path, resume: bool, init: Path | None = None, policy_config: PolicyConfig | None = None
) -> LLMPolicy:
    """The policy a run trains: its own checkpoint when resuming, else a saved policy to start from
    (``init``: merged into the base, a fresh adapter on top), else a fresh one from ``policy_config``."""
    config = policy_config or PolicyConfig()
    placement = {"device": config.device, "dtype": config.dtype}
    if resume and has_checkpoint(out):
        return LLMPolicy.load(Path(out) / "policy", **placement)
    if init is not None:
        init = Path(init)
        return LLMPolicy.continue_from(init / "policy" if (init / "policy").is_dir() else init, **placement)
    return LLMPolicy(config)


class RunLog:
    """Step records to a JSONL file, to TensorBoard when it is installed, and kept for the checkpoint.
    Each record gets ``step_seconds``: wall time since the previous record (the first: since the log
    opened, after the model and any checkpoint were loaded), so a run's throughput is in its log."""

    def __init__(self, out: Path, records: list[dict[str, Any]] | None = None) -> None:
        self.out = out
        self.last_record_time = time.monotonic()
        self.records = list(records or [])
        # Rewrite the file from the checkpoint's records: steps after the last checkpoint are redone.
        write_atomically(out / "log.jsonl", "".join(json.dumps(record) + "\n" for record in self.records))
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # TensorBoard is optional
            pass

    def add(self, record: dict[str, Any]) -> None:
        now = time.monotonic()
        record = {**record, "step_seconds": round(now - self.last_record_time, 3)}
        self.last_record_time = now
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
    """Everything needed to resume at ``step``: staged, committed by the state file, then published."""
    policy.save(_staged(out, POLICY_DIR, step))
    with atomic_file(_staged(out, "optimizer.pt", step), "wb") as stream:
        torch.save({"optimizer": optimizer.state_dict(), **(extra or {})}, stream)
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,  # one state per GPU
        "numpy": generator.bit_generator.state if generator is not None else None,
    }
    with atomic_file(_staged(out, "rng.pt", step), "wb") as stream:
        torch.save(rng, stream)
    files = {f"{POLICY_DIR}/{name}": digest for name, digest in tree_digests(_staged(out, POLICY_DIR, step)).items()}
    for name in STATE_BLOBS:
        files[name] = file_digest(_staged(out, name, step))
    state = {"step": step, "config": config, "log": log.records, "files": files}
    write_json_atomically(out / STATE_FILE, state)  # the commit
    _publish(out, step)


def load_checkpoint(
    out: Path,
    optimizer: torch.optim.Optimizer,
    generator: np.random.Generator | None = None,
    total_steps: int | None = None,
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Restore optimizer and random state; returns (step, log records, extra tensors).

    The ``.pt`` files are read with ``weights_only=True``: tensors and plain containers only, so a
    crafted file in a run directory cannot run code on ``--resume``; anything else is refused
    with an error naming the file. ``total_steps``: the run's length, which the step must not pass.
    """
    state = read_state(out)
    step = state["step"]
    if total_steps is not None and step > total_steps:
        raise ValueError(
            f"{out / STATE_FILE}: the checkpoint is at step {step}, past this run's {total_steps} steps "
            "(ask for more steps to continue it)"
        )
    saved = _torch_load(out / "optimizer.pt")
    try:
        optimizer.load_state_dict(saved.pop("optimizer"))
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{out / 'optimizer.pt'}: does not fit this run's optimizer ({error})") from None
    rng = _torch_load(out / "rng.pt")
    try:
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():  # a run resumed on other hardware restores what fits
            states = list(rng["cuda"])[: torch.cuda.device_count()]
            for device, cuda_state in enumerate(states):
                torch.cuda.set_rng_state(cuda_state, device)
        if generator is not None and rng.get("numpy") is not None:
            generator.bit_generator.state = rng["numpy"]
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ValueError(f"{out / 'rng.pt'}: not a random state this project wrote ({error})") from None
    return step, state["log"], saved


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a complete checkpoint (after finishing a save a kill interrupted).

    Raises ValueError, naming the file, when it holds a damaged one.
    """
    out = Path(out)
    if not out.is_dir():
        return False
    recover_checkpoint(out)
    if not (out / STATE_FILE).exists():
        return False
    read_state(out)
    return True


def read_state(out: Path) -> dict[str, Any]:
    """The checkpoint's state, checked: its own fields, and every file against its recorded digest."""
    path = Path(out) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: unreadable checkpoint state ({error})") from None
    step, records = (state.get("step"), state.get("log")) if isinstance(state, dict) else (None, None)
    if (
        not isinstance(step, int)
        or isinstance(step, bool)
        or step < 1
        or not isinstance(records, list)
        or not isinstance(state.get("config"), dict)
        or not all(isinstance(record, dict) for record in records)
    ):
        raise ValueError(f"{path}: not a checkpoint state this project wrote (step, config and log expected)")
    if records and records[-1].get("step") != step:
        raise ValueError(f"{path}: says step {step}, but its log ends at step {records[-1].get('step')}")
    files = state.get("files", {})  # runs saved before the digests were recorded have none
    if not isinstance(files, dict):
        raise ValueError(f"{path}: 'files' must map checkpoint files to digests")
    for name, digest in files.items():
        file = Path(out) / name
        if not file.is_file() or file_digest(file) != digest:
            raise ValueError(
                f"{file}: {'missing' if not file.is_file() else 'damaged'}: it is not what step {step} saved, "
                "so the run cannot resume from it (start a new run, or restore the file)"
            )
    return state


def recover_checkpoint(out: Path) -> None:
    """Finish or undo a save that a kill interrupted (see the module docstring)."""
    recover_directory(out / POLICY_DIR)
    try:
        step = json.loads((out / STATE_FILE).read_text(encoding="utf-8")).get("step")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        step = None
    if isinstance(step, int) and not isinstance(step, bool):
        _publish(out, step)
    for pattern in (".*.step-*", ".*.tmp", ".*.staging"):  # staged, half-written, half-built by a killed save
        for leftover in out.glob(pattern):
            _remove(leftover)


def _staged(out: Path, name: str, step: int) -> Path:
    return out / f".{name}.step-{step}"


def _publish(out: Path, step: int) -> None:
    """Move the staged files of committed ``step`` into place; remove any other staged files."""
    staged = _staged(out, POLICY_DIR, step)
    if staged.is_dir():
        replace_directory(staged, out / POLICY_DIR)
    for name in STATE_BLOBS:
        if _staged(out, name, step).is_file():
            _staged(out, name, step).replace(out / name)
    for leftover in out.glob(".*.step-*"):
        _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def plot_learning_curve(records: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Reward, validity, KL and entropy against the step, smoothed by a short moving average (and the
    off-policy guide's reward beside the policy's, when the run had one; GRPO's share of the advantage
    on invalid completions beside the valid rate, when the log has it)."""
    if not records:
        return None
    steps = [r["step"] for r in records]
    panels = [
        ("reward_mean", "mean reward"),
        ("valid_rate", "format-valid rate"),
        ("kl", "KL to reference"),
        ("entropy", "entropy (nats/token)"),
    ]
    with png_figure(path, ncols=len(panels), figsize=(16, 3.6)) as (figure, axes):
        for axis, (key, label) in zip(axes, panels, strict=True):
            axis.plot(steps, [r.get(key, np.nan) for r in records], color="#9bb7e0", linewidth=1, label="per step")
            window, smooth = _moving_average([r.get(key, np.nan) for r in records])
            if window > 1:
                axis.plot(steps[window - 1 :], smooth, color="#1f4e9c", linewidth=2, label=f"mean of {window}")
            axis.set_title(label, fontsize=10)
            axis.set_xlabel("step")
        if any("guide_reward" in r for r in records):  # GRPO's off-policy guide, for comparison
            window, smooth = _moving_average([r.get("guide_reward", np.nan) for r in records])
            axes[0].plot(steps[window - 1 :], smooth, color="#c0392b", linewidth=1.5, label=f"guide, mean of {window}")
        if any("invalid_advantage_share" in r for r in records):  # how much of GRPO's signal is the format
            shares = [r.get("invalid_advantage_share", np.nan) for r in records]
            axes[1].plot(steps, shares, color="#c0392b", linewidth=1, linestyle="--", label="on invalid")
            axes[1].set_title("format-valid rate; share of the advantage on invalid completions", fontsize=9)
            axes[1].legend(fontsize=8)
        axes[0].legend(fontsize=8)
        figure.suptitle(title)
    return path


def _moving_average(values: Sequence[float]) -> tuple[int, np.ndarray]:
    """The window the learning curve smooths over (a tenth of the run) and the smoothed values."""
    window = max(1, len(values) // 10)
    return window, np.convolve(np.nan_to_num(np.array(values, dtype=float)), np.ones(window) / window, mode="valid")


def _torch_load(path: Path) -> Any:
    """A checkpoint file of tensors and plain containers; a clear error for anything else."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # a GPU run resumes anywhere
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing from the checkpoint (resume needs it)") from None
    except Exception as error:  # pickle.UnpicklingError for code, RuntimeError for a damaged archive
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a checkpoint file this project wrote ({first_line})") from None
