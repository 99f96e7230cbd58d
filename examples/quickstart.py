"""Quickstart: LESER-v0 with a random agent, ten episodes.

python examples/quickstart.py [--catalog synthetic]
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import agents
import leser_env  # noqa: F401  (registers LESER-v0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="synthetic")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    env = gym.make("LESER-v0", catalog=args.catalog, data_dir=args.data_dir, split="test")
    agent = agents.make("random", catalog=args.catalog, data_dir=args.data_dir, seed=0)
    observation, info = env.reset(seed=0)
    for episode in range(10):
        (action,) = agent.act([observation])
        _, reward, _, _, info = env.step(action)
        breakdown = info["reward_breakdown"]
        print(
            f"{episode}: {observation['query']!r} -> {info['expansions']} "
            f"reward {reward:+.3f} (r_rel {breakdown['r_rel']:+.3f}, r_size {breakdown['r_size']:.3f}"
            f"{'' if breakdown['valid'] else ', invalid: ' + breakdown['error']})"
        )
        observation, info = env.reset()
    env.close()


if __name__ == "__main__":
    main()
