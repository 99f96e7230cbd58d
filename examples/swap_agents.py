"""The same environment, one word changes the agent: none, random, prf, sft, grpo, ppo.

    python examples/swap_agents.py --agents none,prf [--runs runs] [--episodes 5]

LLM agents load their trained run from RUNS/<name> (made by `leser train --agent <name> --out RUNS/<name>`);
an agent whose run does not exist yet is skipped with the command that makes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym

import agents
import leser_env  # noqa: F401  (registers LESER-v0)

LLM_AGENTS = ("sft", "grpo", "ppo")


def build(name: str, catalog: str, runs: Path) -> agents.Agent | None:
    if name not in LLM_AGENTS:
        return agents.make(name, catalog=catalog)
    if not (runs / name / "agent.json").is_file():
        print(
            f"skipping {name}: train it first with `leser train --agent {name} --catalog {catalog}"
            + (" --init runs/sft" if name != "sft" else "")
            + f" --out {runs / name}`"
        )
        return None
    return agents.load(runs / name, catalog=catalog)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="none,random,prf,sft,grpo,ppo")
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()

    env = gym.make("LESER-v0", catalog=args.catalog, split="test")
    for name in args.agents.split(","):
        agent = build(name.strip(), args.catalog, args.runs)
        if agent is None:
            continue
        total = 0.0
        observation, _ = env.reset(seed=0)  # every agent sees the same queries
        for _ in range(args.episodes):
            (action,) = agent.act([observation])
            _, reward, _, _, info = env.step(action)
            total += reward
            observation, _ = env.reset()
        print(
            f"{agent.name:>6}: mean reward {total / args.episodes:+.3f} over {args.episodes} test queries "
            f"(last expansions: {info['expansions']})"
        )


if __name__ == "__main__":
    main()
