"""The agent adapter: an LLM policy acting greedily behind the ``Agent`` interface (sft, grpo and ppo agents)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.base import AGENT_FILE, Agent, read_agent_file
from agents.policy import LLMPolicy, PolicyConfig
from catalogs.storage import write_json_atomically


class LLMAgent(Agent):
    """An agent acting greedily with an LLM policy: a trained run's ``policy/`` or, if allowed, a fresh one.

    ``engine_check=True`` records that the policy is meant to be served behind the engine check
    (the environment's ``engine_check``: expansions that match nothing are dropped before
    scoring); a run trained that way records it in its agent.json, and the evaluation harness
    scores it with the check, as it was trained.
    """

    needs_training = True  # the untouched model is only the sft agent's starting point

    def __init__(
        self,
        catalog: str = "synthetic",
        data_dir: str | None = None,
        seed: int = 0,
        policy_dir: str | None = None,
        model: str | None = None,
        engine_check: bool = False,
        device: str | None = None,
        dtype: str | None = None,
        **config: Any,
    ) -> None:
        """``device`` and ``dtype`` (see ``PolicyConfig``) say where this process runs the policy; they
        are not part of the agent's description, so a run trained on a GPU is evaluated anywhere."""
        super().__init__(
            catalog, data_dir, seed, policy_dir=policy_dir, model=model, engine_check=engine_check, **config
        )
        self.engine_check = bool(engine_check)
        placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value}
        if policy_dir:
            self.policy = LLMPolicy.load(policy_dir, **placement)
        elif self.needs_training:
            raise ValueError(f"the {self.name} agent needs a trained policy: pass --checkpoint RUN_DIR")
        else:
            self.policy = LLMPolicy(PolicyConfig(**({"model": model} if model else {}), **placement))

    @property
    def label(self) -> str:
        return f"{self.name}+check" if self.engine_check else self.name

    def act(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        return self.policy.act(observations)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> LLMAgent:
        """A saved run; a relative ``policy_dir`` in its agent.json is read from the run directory."""
        config = dict(read_agent_file(path)["config"])
        policy_dir = config.get("policy_dir")
        if isinstance(policy_dir, str) and policy_dir and not Path(policy_dir).is_absolute():
            config["policy_dir"] = str(Path(path) / policy_dir)
        return cls(**{**config, **overrides})

    @classmethod
    def describe(cls, run_dir: Path, catalog: str, data_dir: str | None, engine_check: bool = False) -> None:
        """Write a run's agent.json, so `leser evaluate --checkpoint RUN_DIR` finds its trained policy."""
        config: dict[str, Any] = {
            "catalog": catalog,
            "data_dir": data_dir,
            "seed": 0,
            "policy_dir": "policy",  # relative to the run directory: a copied run loads its own weights
        }
        if engine_check:
            config["engine_check"] = True
        write_json_atomically(run_dir / AGENT_FILE, {"name": cls.name, "config": config})
