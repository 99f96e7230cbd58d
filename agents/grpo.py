"""GRPO for LESER, as published: groups of completions scored by the search engine, no critic.

Per optimizer step:
1. sample ``queries_per_step`` train queries (with ``skip_warm_up_queries``, only those the
   warm-up it started from learnt no target for: ``agents.training.rl_query_ids``); for each,
   ``num_generations`` (N=4) completions at temperature 0.9, with the log-probabilities of their
   tokens at sampling time;
2. score each group with the environment (``LeserEnv.score_group``): shared expansions are
   searched and judged once (train with ``LeserEnv(engine_check=True)`` to score completions
   without the expansions that match nothing, as a search system would serve them);
3. advantage of each completion = its reward minus its group's mean, optionally divided by the
   standard deviation of its group or of the whole batch (``scale_rewards="group" | "batch"``;
   "none" by default, as Dr. GRPO recommends); a group whose rewards are all equal carries no
   learning signal (logged as ``zero_signal``); the share of the advantage mass on format-invalid
   completions is logged as ``invalid_advantage_share`` (under the default baseline at most
   about 0.5; near it, the step teaches the format and little else); with ``valid_baseline``, a
   valid completion's baseline is the mean of its group's valid rewards only, so the valid answers
   are compared with one another and an invalid one's penalty does not lift them all alike;
4. loss per token: the PPO-style clipped surrogate (epsilon 0.2) on the probability ratio to
   the sampling-time policy, minus ``beta`` times the k3 estimate of the KL to the reference
   policy (the base model: the same weights with the LoRA adapter disabled); ``loss_type``, as
   TRL names them: "grpo" averages over a completion's tokens, then over completions (as
   published); "dapo" averages over all the batch's tokens; "dr_grpo" sums over tokens and
   divides by completions x ``max_completion_length``. The published average gives each token
   of a short completion more weight than a token of a long one, which pulls the policy towards
   short answers (Liu et al. 2025, "Understanding R1-Zero-like training");
   gradients accumulated over micro-batches; ``num_iterations`` > 1 reuses the sampled
   log-probabilities for several updates.
An invalid completion simply gets the format penalty as its reward: it flows through training
like any other sample. With ``guided_decoding`` (off by default) the policy samples only
completions in the action format (``agents.guided_decoding``; TRL does the same through vLLM's
guided decoding): no group then spends its advantage on the format, every group compares valid
sets, and the log-probabilities stay the model's own, before the format's mask; the run's
agent.json records decoding "guided", so it is evaluated and served as it was trained.

With ``off_policy_guide="prf"`` (off by default), each group gets one more completion: the prf
baseline's expansion set for the query, written as the warm-up writes its targets
(``agents.sft.target_action``). It is scored with the group, counts in the group's mean and is
trained on with the same clipped surrogate, its sampling-time log-probabilities being the
current policy's (LUFFY, Yan et al. 2025, "Learning to Reason under Off-Policy Guidance"). Where
the guide's set beats the policy's samples the policy is pulled towards it, where the samples
beat it they are pushed up and it down; where they write the same set nothing moves. The logged
rewards are the policy's samples only; ``guide_reward`` and ``guide_advantage`` say how the guide
fared. ``off_policy_guide="reward-search"`` makes the guide the best set of the phrases the
observation's evidence composes that the environment's own reward finds (``agents.baselines``'s
``reward-search``: +0.10 a query above prf's on synthetic train queries, where prf's own set is
close to what a warmed-up policy writes), a guide that knows which of the phrases the policy
can read pay: the search costs about 0.06 s a query, a small part of a step. A trained agent's run
directory makes that agent the guide (``off_policy_guide=runs/learned_edit``: a ``learned-edit``
run, whose per-query choice is read off the observation, as the warm-up's ``teacher`` is).

With ``screen_departures=N`` (0, off, by default) the stage first answers N of the train queries
it may draw (a seeded sample) with the starting policy, greedily as it is evaluated, and keeps
those where the expansion set it would serve (after the engine check, when the environment has
one) differs from prf's: GRPO then practises only where the policy's own answer is not the
baseline's, the queries whose outcome decides whether it beats prf (a policy warmed up on prf's
sets copies them on most queries, where GRPO's groups teach little). The screen's ids, its size
and the departures' mean reward minus prf's are written to ``departure_queries.json`` in the run;
a resumed run reads them back.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import Agent, agent_class, make, register
from agents.llm_agent import LLMAgent
from agents.policy import LLMPolicy, PolicyConfig, Samples
from agents.precompute import load_agent
from agents.progress import progress_bar, track
from agents.sft import target_action
from agents.training import (
    RunLog,
    episode_stats,
    has_checkpoint,
    load_checkpoint,
    plot_learning_curve,
    register_trainer,
    run_rl_stage,
    save_checkpoint,
    saved_query_ids,
)
from catalogs.storage import write_json_atomically
from leser_env.actions import parse_action
from leser_env.config_ranges import NON_NEGATIVE, POSITIVE, Range, check_ranges
from leser_env.env import LeserEnv
from leser_env.reward import RewardConfig

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
DEPARTURE_QUERIES_FILE = "departure_queries.json"
GUIDE_AGENTS = ("prf", "reward-search")  # agents that need no trained checkpoint and write real expansions
SCALE_REWARDS = ("none", "group", "batch")


@dataclass
class GRPOConfig:
    max_steps: int = 40
    queries_per_step: int = 4
    num_generations: int = 4
    temperature: float = 0.9
    max_completion_length: int = 96
    learning_rate: float = 2e-4  # LoRA (B starts at zero) within tens of CPU steps; KL and clipping hold it
    epsilon: float = 0.2
    beta: float = 0.04
    scale_rewards: str = "none"  # "group" or "batch": divide advantages by that standard deviation
    loss_type: str = "grpo"  # "dapo", "dr_grpo": every completion token weighs the same
    num_iterations: int = 1
    micro_batch: int = 8  # completions per forward/backward pass (gradient accumulation), whole groups (micro_batches)
    max_grad_norm: float = 1.0
    save_steps: int = 5
    seed: int = 0
    # Started from a warm-up (--init): draw only train queries it learnt no target for. Off by
    # default: measured level with drawing from all of them (see the README's Results).
    skip_warm_up_queries: bool = False
    # "prf", "reward-search" or a trained agent's run directory: its expansion set joins every group
    # as one more completion (see the module docstring); "" for none. Off by default: measured level
    # with v12's recipe without it (README, runs/v16).
    off_policy_guide: str = ""
    # True: a valid completion's advantage is taken against its group's valid rewards only, so an
    # invalid answer's penalty does not lift the valid ones (see invalid_advantage_share). Off by
    # default: measured no better than it (README, runs/v25: -0.006 against v24, one query most of it).
    valid_baseline: bool = False
    # > 0: before the first step the starting policy answers this many of the train queries it may
    # draw, greedily, and GRPO draws only those where its served expansion set departs from prf's
    # (see the module docstring). 0: no screening.
    screen_departures: int = 0
    # True: the policy's samples (and its answers when screening) are only completions in the action
    # format (agents.guided_decoding; TRL's guided decoding through vLLM does the same), so every
    # completion is a valid set and a group's advantages compare sets; the run is then evaluated
    # and served guided (its agent.json records decoding "guided").
    guided_decoding: bool = False

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                **dict.fromkeys(
                    (
                        "max_steps",
                        "queries_per_step",
                        "max_completion_length",
                        "num_iterations",
                        "micro_batch",
                        "save_steps",
                        "temperature",
                        "learning_rate",
                        "epsilon",
                        "max_grad_norm",
                    ),
                    POSITIVE,
                ),
                "num_generations": Range(2),  # one completion per query has no group to compare with
                "beta": NON_NEGATIVE,
                "screen_departures": NON_NEGATIVE,
            },
        )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, not {self.loss_type!r}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, not {self.scale_rewards!r}")
        guide = self.off_policy_guide
        if guide and guide not in GUIDE_AGENTS and not (Path(guide) / "agent.json").is_file():
            raise ValueError(
                f"off_policy_guide must be one of {', '.join(GUIDE_AGENTS)}, a trained agent's run directory "
                f"(with its agent.json) or empty, not {guide!r}"
            )


def group_advantages(rewards: np.ndarray, scale_rewards: str = "none", valid: np.ndarray | None = None) -> np.ndarray:
    """Reward minus the group mean, per row (one row per query); optionally over the group's or
    the batch's standard deviation. With ``valid`` (a boolean array shaped like ``rewards``: which
    completions are format-valid), a valid completion's baseline is the mean of its group's valid
    rewards only (``GRPOConfig.valid_baseline``), so the valid answers of a group are compared with
    one another and not lifted by an invalid answer's penalty; an invalid one keeps the whole
    group's mean. A group's only valid answer then has advantage 0: the group teaches by pushing
    its invalid answers down."""
    rewards = np.asarray(rewards, dtype=np.float64)
    advantages = rewards - rewards.mean(axis=1, keepdims=True)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        counts = valid.sum(axis=1, keepdims=True)
        valid_means = np.where(valid, rewards, 0.0).sum(axis=1, keepdims=True) / np.maximum(counts, 1)
        advantages = np.where(valid, rewards - valid_means, advantages)
    if scale_rewards == "group":
        advantages = advantages / (rewards.std(axis=1, keepdims=True) + 1e-4)
    elif scale_rewards == "batch":
        advantages = advantages / (rewards.std() + 1e-4)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, not {scale_rewards!r}")
    return advantages


def grpo_loss(
    new_logprobs: Sequence[torch.Tensor],
    old_logprobs: Sequence[torch.Tensor],
    ref_logprobs: Sequence[torch.Tensor],
    advantages: Sequence[float],
    epsilon: float,
    beta: float,
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
        surrogate = torch.minimum(ratio * advantage, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * advantage)
        log_ratio_ref = ref - new
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1  # k3: unbiased, always >= 0
        per_token = -(surrogate - beta * kl)
        losses.append(per_token.mean() if token_normalizer is None else per_token.sum() / token_normalizer)
        kls.append(kl.mean().detach())
        clipped += int(((ratio - 1).abs() > epsilon).sum())
        tokens += new.numel()
    if not losses:
        zero = torch.zeros((), requires_grad=True)
        return zero, {"kl": 0.0, "clip_fraction": 0.0}
    loss = torch.stack(losses).mean() if token_normalizer is None else torch.stack(losses).sum()
    return loss, {"kl": float(torch.stack(kls).mean()), "clip_fraction": clipped / max(tokens, 1)}


def draw_queries(env: LeserEnv, count: int, query_ids: Sequence[str] | None = None) -> list[str]:
    """``count`` of ``query_ids`` (default: all the environment's) drawn with the environment's
    generator (seeded and checkpointed)."""
    pool = env.query_ids if query_ids is None else query_ids
    return [pool[int(index)] for index in env.np_random.integers(len(pool), size=count)]


def collect(
    policy: LLMPolicy,
    env: LeserEnv,
    config: GRPOConfig,
    query_ids: Sequence[str] | None = None,
    guide: Agent | None = None,
) -> tuple[Samples, np.ndarray, list[dict[str, Any]]]:
    """Sample groups for train queries drawn from ``query_ids`` and score each group with the
    environment; with a ``guide``, its completion is the last of each group (``Samples.n`` is then
    ``num_generations`` + 1)."""
    query_ids = draw_queries(env, config.queries_per_step, query_ids)
    observations = [env.observe(query_id)[0] for query_id in query_ids]
    samples = policy.sample(
        observations,
        n=config.num_generations,
        temperature=config.temperature,
        max_new_tokens=config.max_completion_length,
        guided=config.guided_decoding,
    )
    if guide is not None:
        samples = with_guide_completions(policy, samples, guide_texts(guide, observations, policy), config)
    queries = [(observation["query"], query_id) for observation, query_id in zip(observations, query_ids, strict=True)]
    rewards, infos = score_groups(env, queries, samples.texts, samples.n)
    return samples, rewards, infos


def guide_agent(name: str, env: LeserEnv) -> Agent:
    """The off-policy guide ``name`` for ``env``'s catalog: a trained agent's run directory or a
    registered name; one that reads the reward while it acts (``Agent.reads_reward``: reward-search)
    searches with ``env``'s own reward."""
    if Path(name).is_dir():
        return load_agent(name, env.catalog_spec, env.data_dir)
    if not agent_class(name).reads_reward:
        return make(name, catalog=env.catalog_spec, data_dir=env.data_dir)
    config = getattr(env.reward, "config", None)
    if not isinstance(config, RewardConfig):
        raise ValueError(f"the {name} guide needs an environment whose reward is a RewardConfig's (a Reward)")
    return make(name, catalog=env.catalog_spec, data_dir=env.data_dir, reward=asdict(config))


def guide_texts(guide: Agent, observations: Sequence[dict[str, Any]], policy: LLMPolicy) -> list[str]:
    """The guide's expansion set for each observation, written as a warm-up target."""
    texts = []
    for observation, action in zip(observations, guide.act(observations), strict=True):
        query = observation["query"]
        expansions = parse_action(action, policy.limits).expansions
        texts.append(target_action([text for text in expansions if text.casefold() != query.casefold()], query))
    return texts


def with_guide_completions(policy: LLMPolicy, samples: Samples, texts: Sequence[str], config: GRPOConfig) -> Samples:
    """``samples`` with one more completion per prompt, ``texts[p]`` after prompt p's own, and the
    current policy's log-probabilities of its tokens as its sampling-time ones. A text longer than
    ``max_completion_length`` tokens is cut there and scored as cut, as a sample would be."""
    ids = [policy.encode_completion(text)[: config.max_completion_length] for text in texts]
    logprobs = policy.completion_logprobs(samples.prompt_ids, ids, grad=False)
    n = samples.n

    def interleave(own: Sequence[Any], guide: Sequence[Any]) -> list[Any]:
        return [item for p, extra in enumerate(guide) for item in [*own[p * n : (p + 1) * n], extra]]

    return Samples(
        texts=interleave(samples.texts, [policy.tokenizer.decode(row, skip_special_tokens=True) for row in ids]),
        prompt_ids=samples.prompt_ids,
        completion_ids=interleave(samples.completion_ids, ids),
        logprobs=interleave(samples.logprobs, [row.detach() for row in logprobs]),
        n=n + 1,
    )


def score_groups(
    env: LeserEnv, queries: Sequence[tuple[str, str | None]], texts: Sequence[str], num_generations: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rewards (one row per query) for consecutive groups of ``num_generations`` completions.

    ``queries`` holds each group's (query text, query id or None); each group is scored in one
    ``score_group`` call, so expansions shared within it are searched and judged once.
    """
    if len(texts) != len(queries) * num_generations:
        raise ValueError(f"{len(texts)} completions for {len(queries)} groups of {num_generations}")
    rewards, infos = [], []
    for index, (query, query_id) in enumerate(queries):
        group = texts[index * num_generations : (index + 1) * num_generations]
        group_rewards, group_infos = env.score_group(query, group, query_id)
        rewards.append(group_rewards)
        infos.extend(group_infos)
    return np.array(rewards, dtype=np.float64).reshape(len(queries), num_generations), infos


def update(
    policy: LLMPolicy, optimizer: torch.optim.Optimizer, samples: Samples, advantages: np.ndarray, config: GRPOConfig
) -> dict[str, float]:
    """One or more gradient steps on a collected batch; returns loss, KL, clip fraction, entropy."""
    prompts = [prompt for prompt in samples.prompt_ids for _ in range(samples.n)]
    flat_advantages = advantages.reshape(-1).tolist()
    reference = policy.completion_logprobs(prompts, samples.completion_ids, grad=False, reference=True)
    total = len(prompts)
    scored = max(sum(1 for ids in samples.completion_ids if ids), 1)  # an empty completion has no token to learn on
    token_normalizer = {
        "grpo": None,
        "dapo": float(max(sum(len(ids) for ids in samples.completion_ids), 1)),
        "dr_grpo": float(total * config.max_completion_length),
    }[config.loss_type]
    stats: dict[str, float] = {}
    policy.model.train()
    for _ in range(config.num_iterations):
        optimizer.zero_grad()
        sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
        for part in micro_batches(len(samples.prompt_ids), samples.n, config):
            new, entropies = policy.completion_logprobs(
                prompts[part], samples.completion_ids[part], grad=True, return_entropy=True
            )
            loss, part_stats = grpo_loss(
                new,
                samples.logprobs[part],
                reference[part],
                flat_advantages[part],
                config.epsilon,
                config.beta,
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


def micro_batches(groups: int, n: int, config: GRPOConfig) -> list[slice]:
    """The rows of each forward/backward pass over ``groups`` groups of ``n`` completions, laid out
    group after group. A pass never holds part of a group it could hold whole, as a group's prompt is
    encoded once per pass (``LLMPolicy.completion_outputs``): with ``micro_batch`` at least the
    policy's own ``num_generations``, a pass is ``micro_batch // num_generations`` whole groups,
    each with its off-policy guide's completion when there is one (so 9 rows for 8 samples and
    a guide, where passes of 8 rows would encode 8 prompts a step instead of 4); with less, each
    group is cut into passes of ``micro_batch`` rows."""
    own = min(config.num_generations, n)
    if config.micro_batch >= own:
        per = config.micro_batch // own
        return [slice(first * n, min(first + per, groups) * n) for first in range(0, groups, per)]
    return [
        slice(group * n + start, min(group * n + start + config.micro_batch, (group + 1) * n))
        for group in range(groups)
        for start in range(0, n, config.micro_batch)
    ]


def departure_query_ids(
    policy: LLMPolicy,
    env: LeserEnv,
    count: int,
    out: Path,
    resume: bool = False,
    query_ids: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = False,
    guided: bool = False,
) -> list[str]:
    """Of ``count`` train queries drawn from ``query_ids`` (default: all of ``env``'s; a seeded
    sample), those where the policy's greedy answer (``guided``: in the action format) serves another
    expansion set than prf's (the expansions ``env.score_group`` keeps, compared without case or
    order; an invalid answer departs). Written to ``out/departure_queries.json`` with the screen's
    size and the departures' mean reward minus prf's; a resumed run (``resume`` and a checkpoint in
    ``out``) reads the ids back instead, and refuses to go on without the file."""
    file = out / DEPARTURE_QUERIES_FILE
    # Required: screening again now would ask the trained policy, not the starting one.
    saved = saved_query_ids(file, resume, "the departure screen", "start the run again", required=True)
    if saved is not None:
        return saved
    pool = list(env.query_ids if query_ids is None else query_ids)
    screened = random.Random(seed).sample(pool, min(count, len(pool)))
    baseline = make("prf", catalog=env.catalog_spec, data_dir=env.data_dir)
    departures, gains = [], []
    starts = range(0, len(screened), batch_size)
    for start in track(starts, "departure screen", enabled=progress):
        batch = screened[start : start + batch_size]
        observations = [env.observe(query_id)[0] for query_id in batch]
        answers = zip(policy.act(observations, guided=guided), baseline.act(observations), strict=True)
        for query_id, observation, (own, prf) in zip(batch, observations, answers, strict=True):
            rewards, infos = env.score_group(observation["query"], [own, prf])
            served = [
                (info["reward_breakdown"]["valid"], frozenset(text.casefold() for text in info["expansions"]))
                for info in infos
            ]
            if served[0] != served[1]:
                departures.append(query_id)
                gains.append(float(rewards[0] - rewards[1]))
    if not departures:
        raise ValueError(
            f"screen_departures: the policy serves prf's set on all {len(screened)} screened train queries, "
            "so there is nothing to draw; screen more queries, or set screen_departures=0"
        )
    write_json_atomically(
        file,
        {
            "screened": len(screened),
            "query_ids": departures,
            "reward_minus_prf": float(np.mean(gains)),
        },
    )
    return departures


def train(
    policy: LLMPolicy,
    env: LeserEnv,
    config: GRPOConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    query_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The GRPO loop with logging, atomic checkpoints and resume (see ``agents.training``), on
    train queries drawn from ``query_ids`` (default: all of ``env``'s)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    query_ids = list(env.query_ids if query_ids is None else query_ids)
    torch.manual_seed(config.seed)
    env.reset(seed=config.seed)
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=config.learning_rate)
    start, records = 0, []
    if resume and has_checkpoint(out):
        start, records, _ = load_checkpoint(out, optimizer, env.np_random, total_steps=config.max_steps)
    log = RunLog(out, records)
    if config.screen_departures:
        query_ids = departure_query_ids(
            policy,
            env,
            config.screen_departures,
            out,
            resume,
            query_ids,
            config.seed,
            progress=progress,
            guided=config.guided_decoding,
        )
    guide = guide_agent(config.off_policy_guide, env) if config.off_policy_guide else None
    with progress_bar(progress) as bar:
        task = bar.add_task("GRPO", total=config.max_steps, completed=start)
        for step in range(start, config.max_steps):
            samples, rewards, infos = collect(policy, env, config, query_ids, guide)
            valid = np.array([info["reward_breakdown"]["valid"] for info in infos]).reshape(rewards.shape)
            advantages = group_advantages(rewards, config.scale_rewards, valid if config.valid_baseline else None)
            stats = update(policy, optimizer, samples, advantages, config)
            own = config.num_generations  # the policy's own samples: the first ``own`` of each group
            record = {
                "step": step + 1,
                **episode_stats(
                    rewards[:, :own],
                    [info for index, info in enumerate(infos) if index % samples.n < own],
                    [ids for index, ids in enumerate(samples.completion_ids) if index % samples.n < own],
                ),
                "zero_signal": float(np.mean(np.ptp(rewards, axis=1) == 0)),
                "invalid_advantage_share": invalid_advantage_share(advantages, valid),
                **(
                    {
                        "guide_reward": float(rewards[:, own:].mean()),
                        "guide_advantage": float(advantages[:, own:].mean()),
                    }
                    if guide
                    else {}
                ),
                **stats,
            }
            log.add(record)
            bar.update(
                task,
                advance=1,
                description=f"GRPO reward {record['reward_mean']:+.3f} valid {record['valid_rate']:.0%}",
            )
            if (step + 1) % config.save_steps == 0 or step + 1 == config.max_steps:
                save_checkpoint(out, policy, optimizer, step + 1, asdict(config), log, env.np_random)
    log.close()
    plot_learning_curve(log.records, out / "learning_curve.png", f"GRPO on {env.catalog.name}")
    return {"steps": config.max_steps, "log": log.records, "drawn_from": len(query_ids)}


def invalid_advantage_share(advantages: np.ndarray, valid: np.ndarray) -> float:
    """The share of the step's advantage mass (the sum of |advantage| over every completion) that
    falls on format-invalid completions (``valid``: which are valid, shaped like ``advantages``).
    Advantages sum to 0 in a group, so invalid answers scored below their group's mean hold at most
    half the mass, exactly half when every valid answer is above the mean, i.e. when the valid
    answers' advantages are only the mirror of the invalid ones'. A step near 0.5 teaches the format
    and little about which valid set is better. With ``valid_baseline`` the valid answers do not
    mirror them, and the share can be higher."""
    magnitudes = np.abs(advantages)
    total = float(magnitudes.sum())
    return float(magnitudes[~np.asarray(valid, dtype=bool)].sum() / total) if total else 0.0


@register_trainer("grpo", GRPOConfig)
def run(
    config: GRPOConfig,
    env: LeserEnv,
    out: str | Path,
    resume: bool = False,
    *,
    policy: LLMPolicy | None = None,
    init: str | Path | None = None,
    policy_config: PolicyConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole GRPO stage (``agents.training.run_rl_stage``): the policy, training, agent.json."""
    return run_rl_stage("GRPO", train, GRPOAgent, config, env, out, resume, policy, init, policy_config, progress)


@register("grpo")
class GRPOAgent(LLMAgent):
    """The LLM policy trained by GRPO, acting greedily."""
