"""Warm up the default model on the action format, then train it with GRPO, then compare it.

    python examples/train_grpo.py [--catalog synthetic] [--sft-steps 100] [--grpo-steps 40] [--limit 100]

On a 2-core CPU expect about 25 minutes of warm-up and about a minute per GRPO step; every stage
shows progress, checkpoints atomically, and can be resumed by running the script again.
The same as `leser train --agent sft ...`, `leser train --agent grpo --init ...` and `leser compare`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import agents
from agents import grpo, sft
from agents.evaluate import compare, markdown_table
from agents.policy import LLMPolicy
from agents.training import has_checkpoint
from leser_env.env import LeserEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    parser.add_argument("--sft-steps", type=int, default=100)
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--limit", type=int, default=100, help="test queries in the final comparison")
    parser.add_argument("--validation", type=int, default=40, help="validation queries for the format-valid rate")
    args = parser.parse_args()

    sft_dir, grpo_dir = args.out / "sft", args.out / "grpo"
    sft_config = sft.SFTConfig(examples=args.sft_steps * sft.SFTConfig().batch_size)
    if not (sft_dir / "sft_report.json").is_file():
        report = sft.run(args.catalog, sft_dir, sft_config, resume=True, validation_queries=args.validation)
        print(f"warm-up: format-valid {report['format_valid_before']:.0%} -> {report['format_valid_after']:.0%}")

    resume = has_checkpoint(grpo_dir)
    policy = LLMPolicy.load(grpo_dir / "policy") if resume else LLMPolicy.continue_from(sft_dir / "policy")
    env = LeserEnv(catalog=args.catalog, split="train")
    grpo.train(policy, env, grpo.GRPOConfig(steps=args.grpo_steps), grpo_dir, resume=resume)
    grpo.GRPOAgent.describe(grpo_dir, args.catalog, None)

    contenders = [
        agents.make("none", catalog=args.catalog),
        agents.make("prf", catalog=args.catalog),
        agents.load(sft_dir, catalog=args.catalog),
        agents.load(grpo_dir, catalog=args.catalog),
    ]
    summaries = compare(contenders, args.catalog, "test", limit=args.limit, out=args.out / "comparison")
    print(markdown_table(summaries))


if __name__ == "__main__":
    main()
