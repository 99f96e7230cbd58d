"""Layer 2: the environment. Importing it registers ``LESER-v0`` with Gymnasium.

import gymnasium as gym
import leser_env  # noqa: F401
env = gym.make("LESER-v0", catalog="synthetic", split="train")
"""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "LESER-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="leser_env.env:LeserEnv", disable_env_checker=False)

__all__ = ["ENV_ID"]
