"""Layer 3: agents (baselines, LLM policies, learning), evaluation, and the `leser` command line."""

from __future__ import annotations

from agents.base import Agent, agent_class, available, load, make, register

__all__ = ["Agent", "agent_class", "available", "load", "make", "register"]
