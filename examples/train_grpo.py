"""Warm up a language model (by default SmolLM2-135M) on the action format, then train it with GRPO, then compare it.

    python examples/train_grpo.py [--catalog synthetic] [--model NAME|PATH] [--sft-steps 100] [--sft-epochs 1]
                                  [--sft-examples 400] [--grpo-steps 40]
                                  [--max-edits 2] [--start-with-core] [--num-generations 4]
                                  [--loss-type dr_grpo] [--limit 100] [--engine-check] [--guided-decoding]

On a 2-core CPU a warm-up step takes about 11 s and a GRPO step about 32 s (16 completions); the
defaults take about an hour, `make run`'s settings about 22 minutes. Every stage shows progress,
checkpoints atomically, and is resumed by running the script again with the same --out.
The same as `leser train --agent sft ...`, `leser train --agent grpo --init ...` and `leser compare`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import agents
from agents import grpo, sft
from agents.evaluate import compare, markdown_table, paired_table
from agents.policy import PolicyConfig
from leser_env.env import LeserEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    parser.add_argument(
        "--model", default=PolicyConfig.model, help="a Hugging Face causal LM, by name or path (default: SmolLM2-135M)"
    )
    parser.add_argument("--sft-steps", type=int, default=100)
    parser.add_argument("--sft-epochs", type=int, default=1, help="warm-up passes over its targets")
    parser.add_argument(
        "--sft-examples", type=int, default=sft.SFTConfig.examples, help="train queries the warm-up makes targets for"
    )
    parser.add_argument(
        "--min-edit-gain",
        type=float,
        default=sft.SFTConfig.min_edit_gain,
        help="the reward an edit of prf's expansions must add to a warm-up target to be made",
    )
    parser.add_argument(
        "--max-edits",
        type=int,
        default=sft.SFTConfig.max_edits,
        help="edits of prf's expansions the warm-up's target search may make",
    )
    parser.add_argument(
        "--start-with-core",
        action="store_true",
        help="warm-up targets start from prf's set with the evidence's core phrase in place of its last "
        "(with --max-edits 0 that set is the target)",
    )
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument(
        "--num-generations", type=int, default=grpo.GRPOConfig.num_generations, help="GRPO completions per query"
    )
    parser.add_argument(
        "--loss-type",
        default="dr_grpo",
        choices=grpo.LOSS_TYPES,
        help="GRPO's loss normalisation (TRL's names); dr_grpo does not favour short completions",
    )
    parser.add_argument(
        "--skip-warm-up-queries",
        action="store_true",
        help="GRPO draws only train queries the warm-up learnt no target for",
    )
    parser.add_argument("--limit", type=int, default=100, help="test queries in the final comparison")
    parser.add_argument("--validation", type=int, default=40, help="validation queries for the format-valid rate")
    parser.add_argument(
        "--engine-check",
        action="store_true",
        help="GRPO scores, and both LLM agents send, actions without the expansions that match nothing",
    )
    parser.add_argument(
        "--guided-decoding",
        action="store_true",
        help="GRPO samples, and both LLM agents answer, within the action format (agents.guided_decoding)",
    )
    args = parser.parse_args()

    sft_dir, grpo_dir = args.out / "sft", args.out / "grpo"
    train_env = LeserEnv(catalog=args.catalog, split="train", engine_check=args.engine_check or None)
    if not sft.finished(sft_dir):
        print(f"1/3 warm-up: {args.sft_steps} steps, format-valid rate measured before and after")
        warm_up_env = LeserEnv(catalog=args.catalog, split="train")  # the warm-up imitates fixed targets
        report = sft.run(
            sft.SFTConfig(
                examples=args.sft_examples,
                max_steps=args.sft_steps,
                num_train_epochs=args.sft_epochs,
                min_edit_gain=args.min_edit_gain,
                max_edits=args.max_edits,
                start_with_core=args.start_with_core,
            ),
            warm_up_env,
            sft_dir,
            resume=True,
            validation_queries=args.validation,
            policy_config=PolicyConfig(model=args.model),
        )
        print(report["summary"])

    print(f"2/3 GRPO: {args.grpo_steps} steps from the warmed-up policy")
    grpo.run(
        grpo.GRPOConfig(
            max_steps=args.grpo_steps,
            num_generations=args.num_generations,
            loss_type=args.loss_type,
            skip_warm_up_queries=args.skip_warm_up_queries,
            guided_decoding=args.guided_decoding,
        ),
        train_env,
        grpo_dir,
        resume=True,
        init=sft_dir,
    )

    decoding = "guided" if args.guided_decoding else "greedy"
    print(f"3/3 comparison on {args.limit} held-out test queries ({decoding} decoding)")
    llm = {"catalog": args.catalog, "engine_check": args.engine_check, "decoding": decoding}
    contenders = [
        agents.make("none", catalog=args.catalog),
        agents.make("prf", catalog=args.catalog),
        agents.load(sft_dir, **llm),
        agents.load(grpo_dir, **llm),
    ]
    summaries = compare(contenders, args.catalog, "test", limit=args.limit, out=args.out / "comparison")
    print(markdown_table(summaries))
    print(paired_table(summaries))
    trained, prf = contenders[-1].label, "prf"
    difference = summaries[trained]["paired"][prf]["mean_reward"]
    if difference["low"] > 0:
        verdict = "ahead of prf (the whole interval is above 0)"
    elif difference["high"] < 0:
        verdict = "behind prf (the whole interval is below 0)"
    else:
        verdict = "not distinguishable from prf on these queries (the interval contains 0)"
    print(
        f"{trained} - prf, mean reward on {summaries[prf]['queries']} test queries: {difference['difference']:+.4f} "
        f"[{difference['low']:+.4f}, {difference['high']:+.4f}]: {verdict}. {args.grpo_steps} GRPO steps"
        + (
            "; the README's Results section records longer runs ahead of prf (runs/v18; runs/v27-v29, guided)."
            if args.grpo_steps < 40
            else "."
        )
    )
    print(f"wrote {args.out / 'comparison'}: results.md, metrics.png, metrics.json, episodes.jsonl")


if __name__ == "__main__":
    main()
