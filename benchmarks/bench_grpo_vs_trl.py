"""Seconds per GRPO optimizer step: ours against TRL's GRPOTrainer, same work, same run.

Both sides get the same model (the untouched default SmolLM2-135M-Instruct, float32) with the
same fresh LoRA adapter (rank 16, alpha 32, q/k/v/o projections), the same 4 LESER prompts
(synthetic train queries with their product context, through the same chat template), 4
completions per prompt at temperature 0.9 and at most 48 new tokens, the same reward (the
environment's, group by group), the same loss (token-level clipped surrogate, epsilon 0.2,
per-completion mean, k3 KL with beta 0.04 to the adapter-disabled model, advantages not scaled
by the group std), one optimizer step over 2 micro-batches of 8 completions, AdamW, gradient
norm clipped at 1. TRL is set to float32 without gradient checkpointing, as ours runs (its
defaults are bfloat16 and checkpointing). The untouched model writes no valid action, so every
reward is the format penalty; that changes no timing, as both sides run every pass regardless.

Time is split the same way on both sides: generation (tokenising, prefill and sampling), the
reward, backward (time inside ``Tensor.backward``) and forward (the rest of the step: the
reference and policy log-probability passes, loss, optimizer). The first step of each side
is a warm-up and is not counted.

    python benchmarks/bench_grpo_vs_trl.py [--steps 3] [--no-context] [--json]      # needs: pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from agents import grpo
from agents.model_loading import default_model_path
from agents.policy import LLMPolicy, PolicyConfig
from leser_env.env import LeserEnv
from leser_env.prompt import render_messages

PROMPTS, GROUP, NEW_TOKENS, LORA_RANK, LORA_ALPHA = 4, 4, 48, 16, 32
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
DEFAULTS = grpo.GRPOConfig()  # our defaults, given to both sides
LEARNING_RATE, BETA, EPSILON = DEFAULTS.learning_rate, DEFAULTS.beta, DEFAULTS.epsilon
TEMPERATURE, MICRO_BATCH = DEFAULTS.temperature, DEFAULTS.micro_batch


class Timer:
    """Accumulates seconds per phase; ``wrap`` times every call of a function."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return function(*args, **kwargs)

        return timed

    def take(self) -> dict[str, float]:
        seconds, self.seconds = dict(self.seconds), defaultdict(float)
        return seconds


TIMER = Timer()
torch.Tensor.backward = TIMER.wrap("backward", torch.Tensor.backward)  # both sides' backward passes


def observations(env: LeserEnv, context: bool) -> list[dict[str, str]]:
    result = []
    for seed in range(PROMPTS):
        observation, _ = env.reset(seed=seed)
        result.append(observation if context else {**observation, "context": "", "evidence": ""})
    return result


def split(step: dict[str, float]) -> dict[str, float]:
    """Step total and its phases; forward is what the step spent outside generation, reward and backward."""
    total = step["step"]
    parts = {name: step.get(name, 0.0) for name in ("generation", "reward", "backward")}
    return {"step": total, **parts, "forward": total - sum(parts.values())}


def ours(env: LeserEnv, prompts: list[dict[str, str]], steps: int) -> tuple[list[dict[str, float]], float]:
    """Our GRPO: the same sample, group scoring and ``grpo.update`` that ``grpo.train`` runs each step."""
    torch.manual_seed(0)
    policy = LLMPolicy(PolicyConfig(lora_rank=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=TARGETS))
    policy.sample = TIMER.wrap("generation", policy.sample)
    config = grpo.GRPOConfig(
        num_generations=GROUP,
        temperature=TEMPERATURE,
        max_completion_length=NEW_TOKENS,
        learning_rate=LEARNING_RATE,
        epsilon=EPSILON,
        beta=BETA,
        micro_batch=MICRO_BATCH,
    )
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=config.learning_rate)
    results, lengths = [], []
    for _ in range(steps + 1):
        TIMER.take()
        with TIMER.phase("step"):
            samples = policy.sample(prompts, n=GROUP, temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS)
            with TIMER.phase("reward"):
                queries = [(observation["query"], None) for observation in prompts]
                rewards, _ = grpo.score_groups(env, queries, samples.texts, GROUP)
            grpo.update(policy, optimizer, samples, grpo.group_advantages(rewards), config)
        results.append(split(TIMER.take()))
        lengths.extend(len(ids) for ids in samples.completion_ids)
    return results[1:], float(np.mean(lengths))


def trl(env: LeserEnv, prompts: list[dict[str, str]], steps: int) -> tuple[list[dict[str, float]], float]:
    """TRL's GRPOTrainer on the same prompts and reward, timed by a callback and the same wrappers."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list(
        [
            {"prompt": render_messages(observation, env.action_limits), "query": observation["query"]}
            for observation in prompts
        ]
    )
    lengths: list[int] = []

    def leser_reward(
        prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], query: list[str], **_: Any
    ) -> list[float]:
        with TIMER.phase("reward"):
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            lengths.extend(len(ids) for ids in completion_ids)
            rewards = [0.0] * len(texts)
            for text_query in dict.fromkeys(query):
                rows = [i for i, q in enumerate(query) if q == text_query]
                scored, _ = env.score_group(text_query, [texts[i] for i in rows])
                for row, value in zip(rows, scored, strict=True):
                    rewards[row] = float(value)
            return rewards

    results: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            TIMER.take()
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            phases = TIMER.take()
            phases["step"] = time.perf_counter() - self.start
            results.append(split(phases))

    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(
            output_dir=output_dir,
            max_steps=steps + 1,
            per_device_train_batch_size=MICRO_BATCH,
            gradient_accumulation_steps=PROMPTS * GROUP // MICRO_BATCH,
            num_generations=GROUP,
            max_completion_length=NEW_TOKENS,
            temperature=TEMPERATURE,
            top_p=1.0,
            learning_rate=LEARNING_RATE,
            lr_scheduler_type="constant",
            beta=BETA,
            epsilon=EPSILON,
            loss_type="grpo",
            scale_rewards="none",
            max_grad_norm=1.0,
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            shuffle_dataset=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=leser_reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=TARGETS),
            callbacks=[StepTimer()],
        )
        trainer._generate = TIMER.wrap("generation", trainer._generate)
        trainer.train()
    return results[1:], float(np.mean(lengths)) if lengths else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="measured optimizer steps per side (after one warm-up)")
    parser.add_argument("--no-context", action="store_true", help="prompts without their product context (short)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    env = LeserEnv(catalog="synthetic", split="train")
    prompts = observations(env, context=not args.no_context)
    console = Console(stderr=True)
    console.print("TRL GRPOTrainer ...")
    trl_steps, trl_tokens = trl(env, prompts, args.steps)
    console.print("ours ...")
    our_steps, our_tokens = ours(env, prompts, args.steps)
    phases = ["step", "generation", "forward", "backward", "reward"]
    mean = {
        "trl": {p: float(np.mean([s[p] for s in trl_steps])) for p in phases},
        "ours": {p: float(np.mean([s[p] for s in our_steps])) for p in phases},
    }
    report = {
        "seconds_per_step": mean,
        "ratio_ours_over_trl": mean["ours"]["step"] / mean["trl"]["step"],
        "completion_tokens_mean": {"trl": trl_tokens, "ours": our_tokens},
        "steps_measured": args.steps,
        "prompt_context": not args.no_context,
        "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"GRPO step, {PROMPTS} prompts x {GROUP} completions x <= {NEW_TOKENS} tokens, LoRA r={LORA_RANK}"
    )
    table.add_column("seconds")
    for name in ("TRL GRPOTrainer", "ours", "ours / TRL"):
        table.add_column(name, justify="right")
    for phase in phases:
        table.add_row(
            phase,
            f"{mean['trl'][phase]:.2f}",
            f"{mean['ours'][phase]:.2f}",
            f"{mean['ours'][phase] / max(mean['trl'][phase], 1e-9):.2f}x",
        )
    table.add_row("completion tokens (mean)", f"{trl_tokens:.1f}", f"{our_tokens:.1f}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
