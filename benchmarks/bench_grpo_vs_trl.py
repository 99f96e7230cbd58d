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

    python benchmarks/bench_grpo_vs_trl.py [--steps 3] [--no-context] [--json]      # needs: pip install -e ".[trl]"
        [--model NAME_OR_PATH | --random-init llama-3.2-3b] [--device cuda --dtype bfloat16] [--out DIR]
    python benchmarks/bench_grpo_vs_trl.py --plot REPORT.json [REPORT.json ...] --out DIR   # redraw saved reports

``--out DIR`` writes the report as ``throughput.json`` and the phases of both sides' step as
``throughput.png``; ``--plot`` draws reports saved before (``--json`` or ``--out``) into one
``throughput.png``, a pair of bars per report, without timing anything.

``--random-init NAME`` times a randomly initialised model of that configuration (no download;
its embeddings sized to the default model's tokenizer): ``smollm2-135m``, ``llama-3.2-3b`` or
``tiny`` (the test suite's).
Besides seconds per step, each side's generation throughput is reported (completion tokens per
second of generation).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from agents import grpo
from agents.model_loading import DEFAULT_MODEL, resolve_device, resolve_dtype, resolve_model
from agents.policy import LLMPolicy, PolicyConfig
from agents.trl import LeserReward
from catalogs.storage import png_figure, write_json_atomically
from leser_env.env import LeserEnv
from leser_env.prompt import render_messages

PROMPTS, GROUP, NEW_TOKENS, LORA_RANK, LORA_ALPHA = 4, 4, 48, 16, 32
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
DEFAULTS = grpo.GRPOConfig()  # our defaults, given to both sides
LEARNING_RATE, BETA, EPSILON = DEFAULTS.learning_rate, DEFAULTS.beta, DEFAULTS.epsilon
TEMPERATURE, MICRO_BATCH = DEFAULTS.temperature, DEFAULTS.micro_batch


# Configurations timed with random weights (no download): (hidden, layers, heads, kv heads, MLP width).
RANDOM_CONFIGS = {
    "smollm2-135m": (576, 30, 9, 3, 1536),
    "llama-3.2-3b": (3072, 28, 24, 8, 8192),
    "tiny": (64, 2, 4, 2, 128),  # seconds: what the test suite runs the benchmark with
}


def load_model(name: str, random_init: str | None, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    """A fresh copy of the benchmarked model (each side trains its own) and the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if random_init is None:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype), tokenizer
    hidden, layers, heads, kv_heads, width = RANDOM_CONFIGS[random_init]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=width,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        torch_dtype=dtype,
    )
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialise where it will run: faster
        model = LlamaForCausalLM(config).to(dtype)
    return model.cpu(), tokenizer


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


def ours(env: LeserEnv, prompts: list[dict[str, str]], steps: int, args: argparse.Namespace) -> tuple[list, float]:
    """Our GRPO: the same sample, group scoring and ``grpo.update`` that ``grpo.train`` runs each step."""
    model, tokenizer = load_model(args.model, args.random_init, resolve_dtype(args.dtype, resolve_device(args.device)))
    torch.manual_seed(0)
    settings = {"lora_rank": LORA_RANK, "lora_alpha": LORA_ALPHA, "target_modules": TARGETS}
    placement = {"device": args.device, "dtype": args.dtype}
    policy = LLMPolicy(PolicyConfig(model=args.model, **settings, **placement), model=model, tokenizer=tokenizer)
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


def trl(env: LeserEnv, prompts: list[dict[str, str]], steps: int, args: argparse.Namespace) -> tuple[list, float]:
    """TRL's GRPOTrainer on the same prompts and reward, timed by a callback and the same wrappers."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list(
        [
            {"prompt": render_messages(observation, env.action_limits), "query": observation["query"]}
            for observation in prompts
        ]
    )
    lengths: list[int] = []

    scorer = LeserReward(env=env)  # the reward function TRL users train with (agents/trl.py)

    def leser_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        with TIMER.phase("reward"):
            lengths.extend(len(ids) for ids in completion_ids)
            return scorer(**kwargs)

    results: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            TIMER.take()
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            phases = TIMER.take()
            phases["step"] = time.perf_counter() - self.start
            results.append(split(phases))

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer = load_model(args.model, args.random_init, dtype)
    tokenizer.pad_token = "<|im_end|>"
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
            bf16=dtype == torch.bfloat16,
            gradient_checkpointing=False,
            use_cpu=device.type == "cpu",
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
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="a causal LM name or path (its tokenizer for --random-init)"
    )
    parser.add_argument("--random-init", choices=sorted(RANDOM_CONFIGS), help="random weights of this configuration")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, auto")
    parser.add_argument("--out", type=Path, help="write throughput.json and throughput.png to this folder")
    parser.add_argument("--plot", type=Path, nargs="+", metavar="REPORT", help="draw saved reports (needs --out)")
    args = parser.parse_args()
    if args.plot and args.out is None:
        parser.error("--plot draws into --out DIR/throughput.png; give --out")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    if args.plot:
        reports = [json.loads(path.read_text()) for path in args.plot]
        plot(reports, [path.stem.removeprefix("throughput_") for path in args.plot], args.out / "throughput.png")
        print(f"wrote {args.out / 'throughput.png'}")
        return

    env = LeserEnv(catalog="synthetic", split="train")
    prompts = observations(env, context=not args.no_context)
    console = Console(stderr=True)
    console.print("TRL GRPOTrainer ...")
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs; stdout carries only the report
        trl_steps, trl_tokens = trl(env, prompts, args.steps, args)
        console.print("ours ...")
        our_steps, our_tokens = ours(env, prompts, args.steps, args)
    phases = ["step", "generation", "forward", "backward", "reward"]
    mean = {
        "trl": {p: float(np.mean([s[p] for s in trl_steps])) for p in phases},
        "ours": {p: float(np.mean([s[p] for s in our_steps])) for p in phases},
    }
    report = {
        "seconds_per_step": mean,
        "ratio_ours_over_trl": mean["ours"]["step"] / mean["trl"]["step"],
        "completion_tokens_mean": {"trl": trl_tokens, "ours": our_tokens},
        "generation_tokens_per_second": {
            "trl": PROMPTS * GROUP * trl_tokens / max(mean["trl"]["generation"], 1e-9),
            "ours": PROMPTS * GROUP * our_tokens / max(mean["ours"]["generation"], 1e-9),
        },
        "model": args.random_init or args.model,
        "weights": "random" if args.random_init else "as saved",  # a --model path may hold any weights
        "device": str(resolve_device(args.device)),
        "dtype": str(resolve_dtype(args.dtype, resolve_device(args.device))).removeprefix("torch."),
        "steps_measured": args.steps,
        "prompt_context": not args.no_context,
        "torch_threads": torch.get_num_threads(),
    }
    if args.out is not None:
        write_json_atomically(args.out / "throughput.json", report)
        plot([report], [report["model"]], args.out / "throughput.png")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"{report['model']} ({report['weights']} weights, {report['device']}, {report['dtype']}): "
        f"GRPO step, {PROMPTS} prompts x {GROUP} completions x <= {NEW_TOKENS} tokens, LoRA r={LORA_RANK}"
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
    rates = report["generation_tokens_per_second"]
    table.add_row(
        "generation tokens/s", f"{rates['trl']:.0f}", f"{rates['ours']:.0f}", f"{rates['ours'] / rates['trl']:.2f}x"
    )
    Console().print(table)


PHASES = ("generation", "forward", "backward", "reward")  # a step's parts, in the order they are drawn


def plot(reports: list[dict[str, Any]], names: list[str], path: Path) -> None:
    """Seconds per step of TRL's and ours, one pair of stacked bars (by phase) per report."""
    labels, bars = [], []
    for name, report in zip(names, reports, strict=True):
        setting = f"{report['weights']}, {report['device']}, {report['dtype']}"
        for side, title in (("trl", "TRL"), ("ours", "ours")):
            labels.append(f"{name} ({setting}): {title}")
            bars.append([report["seconds_per_step"][side][phase] for phase in PHASES])
    seconds = np.array(bars)
    rows = np.arange(len(labels))[::-1]  # the first report on top
    with png_figure(path, bbox_inches="tight", figsize=(10, 1.5 + 0.45 * len(labels))) as (_, axis):
        left = np.zeros(len(labels))
        for column, phase in enumerate(PHASES):
            axis.barh(rows, seconds[:, column], left=left, height=0.7, label=phase)
            left += seconds[:, column]
        for row, total in zip(rows, left, strict=True):
            axis.text(total, row, f" {total:.2f} s", va="center", fontsize=8)
        axis.set_yticks(rows, labels, fontsize=8)
        axis.set_xlim(0, left.max() * 1.15)
        axis.set_xlabel("seconds per GRPO step (mean of the measured steps)")
        axis.set_title(
            f"GRPO step, ours against TRL's: {PROMPTS} prompts x {GROUP} completions x <= {NEW_TOKENS} tokens",
            loc="left",
            fontsize=10,
            pad=22,
        )
        axis.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(PHASES), fontsize=8, frameon=False)


if __name__ == "__main__":
    main()
