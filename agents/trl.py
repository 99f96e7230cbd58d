"""LESER for TRL: train with TRL's GRPOTrainer (accelerate, multi-GPU, DeepSpeed/FSDP, vLLM) on
LESER's reward, with LESER's prompts.

    from trl import GRPOConfig, GRPOTrainer
    from agents.trl import LeserReward, make_dataset

    trainer = GRPOTrainer(
        model="meta-llama/Llama-3.2-3B-Instruct",
        reward_funcs=LeserReward("homedepot"),
        train_dataset=make_dataset("homedepot", "train"),
        args=GRPOConfig(output_dir="runs/trl", num_generations=8, beta=0.04),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
    )
    trainer.train()

- ``make_dataset``: TRL's conversational format, one row per query: ``prompt`` (the system and
  user messages the environment renders for the query's observation, the same ones our own
  policy is given), ``query`` and ``query_id``. With ``tokenizer`` and ``max_prompt_tokens`` the
  product context is cut line by line to fit, exactly as our policy cuts it. ``exclude_query_ids``
  leaves queries out, e.g. ``agents.sft.queries_learnt_by(warm_up_run, env)``, the queries our
  trainers' ``skip_warm_up_queries`` leaves out.
- ``LeserReward``: a reward function with TRL's signature (``prompts``, ``completions``, the
  dataset's columns as keyword arguments; returns one float per completion). The completions of
  one query are scored as one group through the environment's reward (their searches and
  judgments shared), a malformed completion gets the format penalty and nothing raises; r_rel,
  r_page, r_size, the format-valid rate and the expansion count are logged through TRL's
  ``log_metric`` (as ``leser/r_rel`` ...) next to TRL's own metrics.
- ``save_as_leser_run``: write a trained adapter as a LESER run directory, so ``leser evaluate
  --checkpoint`` and ``leser compare`` evaluate a TRL-trained policy like one of ours.

TRL is an optional extra: ``pip install -e ".[trl]"``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from agents.policy import POLICY_FILE, PolicyConfig
from catalogs.storage import replace_directory, staging_directory, write_json_atomically
from leser_env.env import LeserEnv
from leser_env.prompt import fit_observation, render_messages
from leser_env.reward import RewardConfig, RewardFunction


def make_dataset(
    catalog: str = "synthetic",
    split: str = "train",
    data_dir: str | None = None,
    limit: int | None = None,
    env: LeserEnv | None = None,
    tokenizer: Any = None,
    max_prompt_tokens: int | None = None,
    exclude_query_ids: Collection[str] = (),
) -> Any:
    """A ``datasets.Dataset`` of the split's queries: ``prompt`` (messages), ``query``, ``query_id``;
    without those in ``exclude_query_ids``, then the first ``limit``."""
    from datasets import Dataset

    env = env or LeserEnv(catalog=catalog, data_dir=data_dir, split=split)
    if (tokenizer is None) != (max_prompt_tokens is None):
        raise ValueError("pass tokenizer and max_prompt_tokens together (to fit the context), or neither")

    def prompt_tokens(observation: Mapping[str, Any]) -> int:  # counted as our policy counts them
        messages = render_messages(observation, env.action_limits)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    excluded = set(exclude_query_ids)
    rows = []
    for query_id in [query_id for query_id in env.query_ids if query_id not in excluded][:limit]:
        observation, _ = env.observe(query_id)
        if tokenizer is not None and max_prompt_tokens is not None:
            observation = fit_observation(observation, prompt_tokens, max_prompt_tokens)
        rows.append(
            {
                "prompt": render_messages(observation, env.action_limits),
                "query": observation["query"],
                "query_id": query_id,
            }
        )
    if not rows:
        left_out = f" once {len(excluded)} are excluded" if excluded else ""
        raise ValueError(f"no {env.split} queries in catalog {env.catalog.name!r}{left_out}")
    return Dataset.from_list(rows)


class LeserReward:
    """LESER's reward as a TRL reward function (see the module docstring).

    ``reward`` is a preset name ("default", "paper"), a ``RewardConfig`` or any reward object the
    environment accepts; ``engine_check`` drops expansions that match nothing before scoring.
    """

    def __init__(
        self,
        catalog: str = "synthetic",
        data_dir: str | None = None,
        reward: str | RewardConfig | RewardFunction = "default",
        engine_check: bool | None = None,
        env: LeserEnv | None = None,
    ) -> None:
        self.env = env or LeserEnv(
            catalog=catalog, data_dir=data_dir, split="train", reward=reward, engine_check=engine_check
        )
        self.__name__ = "leser"  # TRL names the reward's log columns after it
        self.last_breakdowns: list[dict[str, Any]] = []

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        query: Sequence[str] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float]:
        if query is None:
            raise ValueError("LeserReward needs the dataset's 'query' column (use agents.trl.make_dataset)")
        texts = [completion_text(completion) for completion in completions or []]
        if len(texts) != len(query):
            raise ValueError(f"{len(texts)} completions but {len(query)} queries")
        rewards = [0.0] * len(texts)
        breakdowns: list[dict[str, Any]] = [{}] * len(texts)
        for text_query in dict.fromkeys(query):  # one group per query: shared searches and judgments
            rows = [i for i, q in enumerate(query) if q == text_query]
            values, infos = self.env.score_group(str(text_query), [texts[i] for i in rows])
            for row, value, info in zip(rows, values, infos, strict=True):
                rewards[row] = float(value)
                breakdowns[row] = info["reward_breakdown"]
        self.last_breakdowns = breakdowns
        if log_metric is not None and breakdowns:
            for name in ("r_rel", "r_page", "r_size"):
                log_metric(f"leser/{name}", float(np.mean([b[name] for b in breakdowns])))
            log_metric("leser/valid_rate", float(np.mean([b["valid"] for b in breakdowns])))
            log_metric("leser/expansions", float(np.mean([len(b["expansions"]) for b in breakdowns])))
        return rewards


def completion_text(completion: Any) -> Any:
    """The text of a TRL completion: a string, or the last message's content in conversational form.

    Anything else is passed through, and the reward gives it the format penalty."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        return completion[-1].get("content", completion)
    return completion


def save_as_leser_run(
    model: Any,
    out: str | Path,
    base_model: str,
    catalog: str,
    data_dir: str | None = None,
    engine_check: bool = False,
    **policy_settings: Any,
) -> Path:
    """Write a peft model trained by TRL as a LESER run (``policy/`` and ``agent.json``).

    ``base_model``: the name or path the adapter was trained on; ``policy_settings``:
    ``PolicyConfig`` fields (generation settings for evaluation; the LoRA shape is read from the
    adapter's own config)."""
    from agents.grpo import GRPOAgent

    out = Path(out)
    lora = model.peft_config["default"]
    known = {item.name for item in fields(PolicyConfig)}
    unknown = sorted(set(policy_settings) - known)
    if unknown:
        raise ValueError(f"not PolicyConfig fields: {unknown}")
    targets = lora.target_modules
    config = PolicyConfig(
        model=base_model,
        lora_rank=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=sorted(targets) if isinstance(targets, set | list | tuple) else targets,
        **policy_settings,
    )
    staging = staging_directory(out / "policy")
    try:
        model.save_pretrained(staging)
        write_json_atomically(staging / POLICY_FILE, {**asdict(config), "frozen_adapters": []})
        replace_directory(staging, out / "policy")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    GRPOAgent.describe(out, catalog, data_dir, engine_check=engine_check)
    return out
