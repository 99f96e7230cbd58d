"""TRL's GRPOTrainer on LESER-v0's reward and prompts, with LoRA: a few steps on a CPU, many GPUs
through accelerate. Needs the trl extra: pip install -e ".[trl]".

    python examples/train_with_trl.py --init runs/main/sft --steps 2             # this CPU, from a warm-up
    accelerate launch --num_processes 8 examples/train_with_trl.py \\
        --model meta-llama/Llama-3.2-3B-Instruct --catalog homedepot --steps 500 --bf16 [--use-vllm]

The policy is built as our trainers build it (``agents.policy.LLMPolicy``: the model by name or
path, LoRA on the attention projections; ``--init RUN`` merges a run's policy, e.g. a warm-up,
into the base so that it is also the KL reference) and handed to TRL as a peft model. The
settings are TRL's GRPOConfig fields under the same names (num_generations, beta, epsilon,
temperature, max_completion_length, learning_rate, max_steps); the reward is LESER's (the default
preset unless --reward), each query's completions scored as one group. The trained adapter is
written as a LESER run to --out, so `leser evaluate --checkpoint OUT` and `leser compare` take it
like a run of our own trainers.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from agents.grpo import GRPOAgent
from agents.grpo import GRPOConfig as OurGRPOConfig
from agents.model_loading import DEFAULT_MODEL
from agents.policy import LLMPolicy, PolicyConfig
from agents.sft import queries_learnt_by
from agents.trl import LeserReward, make_dataset
from leser_env.env import LeserEnv

OURS = OurGRPOConfig()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a Hugging Face causal LM name or path")
    parser.add_argument("--init", type=Path, default=None, help="start from this run's policy (e.g. an SFT run)")
    parser.add_argument("--out", type=Path, default=Path("runs/trl"))
    parser.add_argument("--steps", type=int, default=2, help="max_steps: optimizer steps")
    parser.add_argument("--num-generations", type=int, default=OURS.num_generations)
    parser.add_argument("--prompts-per-step", type=int, default=1, help="queries per device per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=OURS.learning_rate)
    parser.add_argument("--beta", type=float, default=OURS.beta, help="KL coefficient")
    parser.add_argument("--epsilon", type=float, default=OURS.epsilon, help="clipping range")
    parser.add_argument("--temperature", type=float, default=OURS.temperature)
    parser.add_argument("--max-completion-length", type=int, default=OURS.max_completion_length)
    parser.add_argument("--max-prompt-tokens", type=int, default=640, help="the product context is cut to fit")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--reward", default="default", help="a reward preset: default or paper")
    parser.add_argument("--engine-check", action="store_true", help="drop expansions that match nothing")
    parser.add_argument("--limit", type=int, default=None, help="train queries (default: all)")
    parser.add_argument(
        "--skip-warm-up-queries",
        action="store_true",
        help="with --init RUN, a warm-up: leave out the train queries it learnt targets for (as our trainers' option)",
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 (GPUs)")
    parser.add_argument("--use-vllm", action="store_true", help="generate with vLLM (where installed)")
    args = parser.parse_args()
    if args.skip_warm_up_queries and args.init is None:
        parser.error("--skip-warm-up-queries needs --init RUN, the warm-up whose queries to leave out")

    import torch
    from trl import GRPOConfig, GRPOTrainer

    settings = {"max_new_tokens": args.max_completion_length, "max_prompt_tokens": args.max_prompt_tokens}
    if args.init is not None:
        policy = LLMPolicy.continue_from(args.init / "policy" if (args.init / "policy").is_dir() else args.init)
    else:
        policy = LLMPolicy(PolicyConfig(model=args.model, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank))
    policy.config = replace(policy.config, **settings)  # what evaluation generates with
    # One environment for the prompts and the reward (the catalog and its index built once).
    env = LeserEnv(catalog=args.catalog, split="train", reward=args.reward, engine_check=args.engine_check or None)
    learnt: list[str] = []
    if args.skip_warm_up_queries:  # with --init (checked above); not a finished warm-up: every query stays, as ours
        learnt = queries_learnt_by(args.init, env)
        print(f"leaving out the {len(learnt)} train queries {args.init} learnt targets for")
    dataset = make_dataset(
        env=env,
        limit=args.limit,
        tokenizer=policy.tokenizer,
        max_prompt_tokens=args.max_prompt_tokens,
        exclude_query_ids=learnt,
    )
    reward = LeserReward(env=env)
    config = GRPOConfig(
        output_dir=str(args.out / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        learning_rate=args.learning_rate,
        beta=args.beta,
        epsilon=args.epsilon,
        scale_rewards=OURS.scale_rewards,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        use_vllm=args.use_vllm,
        logging_steps=1,
        save_strategy="steps",
        save_steps=max(1, args.steps // 4),
        report_to="none",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=policy.model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=policy.tokenizer
    )
    trainer.train()
    if trainer.accelerator.is_main_process:
        policy.model = trainer.accelerator.unwrap_model(trainer.model)
        policy.save(args.out / "policy")
        GRPOAgent.describe(args.out, args.catalog, None, engine_check=args.engine_check)
        run = args.out
        rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
        print(f"{args.steps} steps; mean reward per step: {', '.join(f'{r:+.3f}' for r in rewards)}")
        print(f"wrote {run}: evaluate with  leser evaluate --checkpoint {run} --catalog {args.catalog}")


if __name__ == "__main__":
    main()
