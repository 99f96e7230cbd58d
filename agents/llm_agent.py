"""The agent adapter: an LLM policy behind the ``Agent`` interface (sft, grpo and ppo agents): greedy,
guided or by vote."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from agents.base import AGENT_FILE, Agent, read_agent_file
from agents.policy import LLMPolicy, PolicyConfig
from catalogs.storage import write_json_atomically
from leser_env.actions import ActionLimits, encode_action, parse_action

DECODINGS = ("greedy", "guided", "vote")


class LLMAgent(Agent):
    """An agent acting with an LLM policy: a trained run's ``policy/`` or, if allowed, a fresh one.

    ``decoding``: "greedy" (the default) writes the most likely completion; "guided" the most
    likely completion in the action format (``agents.guided_decoding``: it cannot write an invalid
    answer, though one cut by the token limit stays unfinished); "vote" samples
    ``vote_samples`` completions at ``vote_temperature`` and answers with the expansions they
    agree on most: each distinct expansion (case-folded) counts the valid samples that wrote it,
    and the most written go first, up to the format's limit (ties: first written first). It is
    self-consistency for a set: it asks nothing of the reward or the labels, only of the policy
    itself, and costs one prefill and ``vote_samples`` decodes per query. Sampling is seeded by
    the agent's seed, so an evaluation is reproducible.

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
        decoding: str = "greedy",
        vote_samples: int = 8,
        vote_temperature: float = 0.7,
        **config: Any,
    ) -> None:
        """``device`` and ``dtype`` (see ``PolicyConfig``) say where this process runs the policy; they
        are not part of the agent's description, so a run trained on a GPU is evaluated anywhere."""
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}")
        described = {} if decoding == "greedy" else {"decoding": decoding}
        if decoding == "vote":
            described.update(vote_samples=vote_samples, vote_temperature=vote_temperature)
        super().__init__(
            catalog,
            data_dir,
            seed,
            policy_dir=policy_dir,
            model=model,
            engine_check=engine_check,
            **config,
            **described,
        )
        self.engine_check = bool(engine_check)
        self.decoding, self.vote_samples, self.vote_temperature = decoding, int(vote_samples), float(vote_temperature)
        placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value}
        if policy_dir:
            self.policy = LLMPolicy.load(policy_dir, **placement)
        elif self.needs_training:
            raise ValueError(f"the {self.name} agent needs a trained policy: pass --checkpoint RUN_DIR")
        else:
            self.policy = LLMPolicy(PolicyConfig(**({"model": model} if model else {}), **placement))

    @property
    def label(self) -> str:
        return super().label + ("" if self.decoding == "greedy" else f"+{self.decoding}")

    def act(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        if self.decoding != "vote":
            return self.policy.act(observations, guided=self.decoding == "guided")
        generator_state = torch.get_rng_state()
        torch.manual_seed(self.seed)
        try:
            samples = self.policy.sample(observations, n=self.vote_samples, temperature=self.vote_temperature)
        finally:
            torch.set_rng_state(generator_state)
        n = self.vote_samples
        return [vote(samples.texts[i * n : (i + 1) * n], self.policy.limits) for i in range(len(observations))]

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> LLMAgent:
        """A saved run; a relative ``policy_dir`` in its agent.json is read from the run directory."""
        config = dict(read_agent_file(path)["config"])
        policy_dir = config.get("policy_dir")
        if isinstance(policy_dir, str) and policy_dir and not Path(policy_dir).is_absolute():
            config["policy_dir"] = str(Path(path) / policy_dir)
        return cls(**{**config, **overrides})

    @classmethod
    def describe(
        cls, run_dir: Path, catalog: str, data_dir: str | None, engine_check: bool = False, guided: bool = False
    ) -> None:
        """Write a run's agent.json, so `leser evaluate --checkpoint RUN_DIR` finds its trained policy;
        a policy trained on guided samples is recorded to act guided."""
        config: dict[str, Any] = {
            "catalog": catalog,
            "data_dir": data_dir,
            "seed": 0,
            "policy_dir": "policy",  # relative to the run directory: a copied run loads its own weights
        }
        if engine_check:
            config["engine_check"] = True
        if guided:
            config["decoding"] = "guided"
        write_json_atomically(run_dir / AGENT_FILE, {"name": cls.name, "config": config})


def vote(texts: Sequence[str], limits: ActionLimits) -> str:
    """The action the sampled completions agree on (see ``LLMAgent``); the first sample when none is valid."""
    counts: dict[str, int] = {}
    spelling: dict[str, str] = {}
    for text in texts:
        parsed = parse_action(text, limits)
        for expansion in parsed.expansions if parsed.valid else ():
            key = expansion.casefold()
            counts[key] = counts.get(key, 0) + 1
            spelling.setdefault(key, expansion)
    if not counts:
        return texts[0]
    ranked = sorted(counts, key=lambda key: -counts[key])  # stable: ties keep the order first written
    chosen = [spelling[key] for key in ranked[: limits.max_expansions]]
    return encode_action(chosen, think=f"agreed by {len(texts)} samples")
