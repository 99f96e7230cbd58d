"""GRPO for LESER, as published: groups of completions scored by the search engine, no critic.

Per optimizer step:
1. sample ``queries_per_step`` train queries; for each, ``group_size`` (N=4) completions at
   temperature 0.9, with the log-probabilities of their tokens at sampling time;
2. score each group with the environment (``LeserEnv.score_group``): shared expansions are
   searched and judged once (train with ``LeserEnv(engine_check=True)`` to score completions
   without the expansions that match nothing, as a search system would serve them);
3. advantage of each completion = its reward minus its group's mean (optionally divided by the
   group's standard deviation, ``scale_by_std``); a group whose rewards are all equal carries
   no learning signal (logged as ``zero_signal``);
4. loss per token: the PPO-style clipped surrogate (epsilon 0.2) on the probability ratio to
   the sampling-time policy, minus ``kl_beta`` times the k3 estimate of the KL to the reference
   policy (the base model: the same weights with the LoRA adapter disabled); averaged over a
   completion's tokens, then over completions (``loss_aggregation="sequence"``, as published),
   or averaged over all the batch's tokens (``"token"``, as in DAPO): the published average gives
   each token of a short completion more weight than a token of a long one, which pulls the
   policy towards short answers (Liu et al. 2025, "Understanding R1-Zero-like training");
   gradients accumulated over micro-batches; ``inner_epochs`` > 1 reuses the sampled
   log-probabilities for several updates.
An invalid completion simply gets the format penalty as its reward: it flows through training
like any other sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from agents.base import register
from agents.llm_agent import LLMAgent
from agents.policy import LLMPolicy, Samples
from agents.training import (
    RunLog,
    episode_stats,
    has_checkpoint,
    load_checkpoint,
    plot_learning_curve,
    save_checkpoint,
)
from leser_env.env import LeserEnv


@dataclass
class GRPOConfig:
    steps: int = 40
    queries_per_step: int = 4
    group_size: int = 4
    temperature: float = 0.9
    max_new_tokens: int = 96
    learning_rate: float = 2e-4  # LoRA (B starts at zero) within tens of CPU steps; KL and clipping hold it
    clip_epsilon: float = 0.2
    kl_beta: float = 0.04
    scale_by_std: bool = False
    loss_aggregation: str = "sequence"  # or "token": every completion token weighs the same
    inner_epochs: int = 1
    micro_batch: int = 8  # completions per forward/backward pass (gradient accumulation)
    max_grad_norm: float = 1.0
    checkpoint_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss_aggregation not in ("sequence", "token"):
            raise ValueError(f"loss_aggregation must be 'sequence' or 'token', not {self.loss_aggregation!r}")


def group_advantages(rewards: np.ndarray, scale_by_std: bool = False) -> np.ndarray:
    """Reward minus the group mean, per row (one row per query); optionally over the group's std."""
    rewards = np.asarray(rewards, dtype=np.float64)
    advantages = rewards - rewards.mean(axis=1, keepdims=True)
    if scale_by_std:
        advantages = advantages / (rewards.std(axis=1, keepdims=True) + 1e-4)
    return advantages


def grpo_loss(
    new_logprobs: Sequence[torch.Tensor],
    old_logprobs: Sequence[torch.Tensor],
    ref_logprobs: Sequence[torch.Tensor],
    advantages: Sequence[float],
    clip_epsilon: float,
    kl_beta: float,
    token_normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate with a k3 KL penalty, per token.

    Averaged per completion then over completions; or, given ``token_normalizer`` (the number of
    completion tokens in the whole batch, micro-batches included), summed over tokens and divided
    by it, so that every token weighs the same whatever the length of its completion.
    """
    losses, kls, clipped, tokens = [], [], 0, 0
    for new, old, ref, advantage in zip(new_logprobs, old_logprobs, ref_logprobs, advantages, strict=True):
        if new.numel() == 0:
            continue
        ratio = torch.exp(new - old)
        surrogate = torch.minimum(ratio * advantage, torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * advantage)
        log_ratio_ref = ref - new
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1  # k3: unbiased, always >= 0
        per_token = -(surrogate - kl_beta * kl)
        losses.append(per_token.mean() if token_normalizer is None else per_token.sum() / token_normalizer)
        kls.append(kl.mean().detach())
        clipped += int(((ratio - 1).abs() > clip_epsilon).sum())
        tokens += new.numel()
    if not losses:
        zero = torch.zeros((), requires_grad=True)
        return zero, {"kl": 0.0, "clip_fraction": 0.0}
    loss = torch.stack(losses).mean() if token_normalizer is None else torch.stack(losses).sum()
    return loss, {"kl": float(torch.stack(kls).mean()), "clip_fraction": clipped / max(tokens, 1)}


def draw_queries(env: LeserEnv, count: int) -> list[str]:
    """``count`` train query ids drawn with the environment's generator (seeded and checkpointed)."""
    return [env.query_ids[int(index)] for index in env.np_random.integers(len(env.query_ids), size=count)]


def collect(policy: LLMPolicy, env: LeserEnv, config: GRPOConfig) -> tuple[Samples, np.ndarray, list[dict[str, Any]]]:
    """Sample groups for fresh train queries and score each group with the environment."""
    query_ids = draw_queries(env, config.queries_per_step)
    observations = [env.observe(query_id)[0] for query_id in query_ids]
    samples = policy.sample(
        observations, n=config.group_size, temperature=config.temperature, max_new_tokens=config.max_new_tokens
    )
    queries = [(observation["query"], query_id) for observation, query_id in zip(observations, query_ids, strict=True)]
    rewards, infos = score_groups(env, queries, samples.texts, config.group_size)
    return samples, rewards, infos


def score_groups(
    env: LeserEnv, queries: Sequence[tuple[str, str | None]], texts: Sequence[str], group_size: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rewards (one row per query) for consecutive groups of ``group_size`` completions.

    ``queries`` holds each group's (query text, query id or None); each group is scored in one
    ``score_group`` call, so expansions shared within it are searched and judged once.
    """
    if len(texts) != len(queries) * group_size:
        raise ValueError(f"{len(texts)} completions for {len(queries)} groups of {group_size}")
    rewards, infos = [], []
    for index, (query, query_id) in enumerate(queries):
        group = texts[index * group_size : (index + 1) * group_size]
        group_rewards, group_infos = env.score_group(query, group, query_id)
        rewards.append(group_rewards)
        infos.extend(group_infos)
    return np.array(rewards, dtype=np.float64).reshape(len(queries), group_size), infos


def update(
    policy: LLMPolicy, optimizer: torch.optim.Optimizer, samples: Samples, advantages: np.ndarray, config: GRPOConfig
) -> dict[str, float]:
    """One or more gradient steps on a collected batch; returns loss, KL, clip fraction, entropy."""
    prompts = [prompt for prompt in samples.prompt_ids for _ in range(samples.n)]
    flat_advantages = advantages.reshape(-1).tolist()
    reference = policy.completion_logprobs(prompts, samples.completion_ids, grad=False, reference=True)
    total = len(prompts)
    scored = max(sum(1 for ids in samples.completion_ids if ids), 1)  # an empty completion has no token to learn on
    token_normalizer = (
        float(max(sum(len(ids) for ids in samples.completion_ids), 1)) if config.loss_aggregation == "token" else None
    )
    stats: dict[str, float] = {}
    policy.model.train()
    for _ in range(config.inner_epochs):
        optimizer.zero_grad()
        sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
        for start in range(0, total, config.micro_batch):
            part = slice(start, start + config.micro_batch)
            new, entropies = policy.completion_logprobs(
                prompts[part], samples.completion_ids[part], grad=True, return_entropy=True
            )
            loss, part_stats = grpo_loss(
                new,
                samples.logprobs[part],
                reference[part],
                flat_advantages[part],
                config.clip_epsilon,
                config.kl_beta,
                token_normalizer,
            )
            weight = sum(1 for ids in samples.completion_ids[part] if ids) / scored
            contribution = loss if token_normalizer else loss * weight  # a token-normalised loss is already a share
            contribution.backward()
            sums["loss"] += contribution.item()
            sums["kl"] += part_stats["kl"] * weight
            sums["clip_fraction"] += part_stats["clip_fraction"] * weight
            sums["entropy"] += torch.cat(entropies).mean().item() * weight if entropies else 0.0
        torch.nn.utils.clip_grad_norm_(list(policy.trainable_parameters()), config.max_grad_norm)
        optimizer.step()
        stats = sums
    return stats


def train(
    policy: LLMPolicy, env: LeserEnv, config: GRPOConfig, out: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """The GRPO loop with logging, atomic checkpoints and resume (see ``agents.training``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    env.reset(seed=config.seed)
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=config.learning_rate)
    start, records = 0, []
    if resume and has_checkpoint(out):
        start, records, _ = load_checkpoint(out, optimizer, env.np_random, total_steps=config.steps)
    log = RunLog(out, records)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("GRPO", total=config.steps, completed=start)
        for step in range(start, config.steps):
            samples, rewards, infos = collect(policy, env, config)
            advantages = group_advantages(rewards, config.scale_by_std)
            stats = update(policy, optimizer, samples, advantages, config)
            record = {
                "step": step + 1,
                **episode_stats(rewards, infos, samples.completion_ids),
                "zero_signal": float(np.mean(np.ptp(rewards, axis=1) == 0)),
                **stats,
            }
            log.add(record)
            bar.update(
                task,
                advance=1,
                description=f"GRPO reward {record['reward_mean']:+.3f} valid {record['valid_rate']:.0%}",
            )
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                save_checkpoint(out, policy, optimizer, step + 1, asdict(config), log, env.np_random)
    log.close()
    plot_learning_curve(log.records, out / "learning_curve.png", f"GRPO on {env.catalog.name}")
    return {"steps": config.steps, "log": log.records}


@register("grpo")
class GRPOAgent(LLMAgent):
    """The LLM policy trained by GRPO, acting greedily."""
