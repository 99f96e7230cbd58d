"""SFT warm-up: teach the LLM policy the action format (and a first sense of catalog wording).

How the targets are made, and why they do not leak:
- Only *train*-split queries are used. The candidate expansions come from two sources: short
  phrases (2-3 consecutive title words) from the products human raters labelled relevant to the
  query, preferring products the query itself does not retrieve (the wording the catalog uses for
  what the shopper meant); and the pseudo-relevance-feedback baseline's expansions for the query
  (a feedback term with the query's own words, which keeps what the query already gets right).
- A candidate is kept only if every word of it is in the observation (the query, the products
  shown as context, or the feedback evidence): the policy sees only the observation, so a target it cannot read off its
  input teaches it to guess. Measured on 150 train queries, grounded targets score a little less than
  ungrounded ones (+0.94 against +1.05) but the warmed-up policy learns them.
- Candidates that start or end with a word the search engine ignores ("light with") are
  dropped. The target set starts from prf's own expansions and is improved with the
  environment's own reward for that query (search engine plus the relevance model, itself trained
  on train labels only): each round makes the one edit (drop an expansion, replace one with a
  candidate, or add one) that raises the *set's* reward most, while it does, for at most
  ``max_edits`` rounds (``max_expansions`` when prf has nothing to start from). So a target is
  worth at least prf's expansions and stays close to them: on 60 train queries unlimited edits
  reach +1.58 against prf's +1.36 but keep under two of prf's five expansions, and the policy
  learnt the kept ones and dropped the rest (its lists were shorter than prf's and scored less);
  two edits reach +1.53 with 4.5 expansions, most of them prf's, which the policy can compose
  from the evidence. With ``min_edit_gain`` an edit is made only when it adds more than that to the
  set's reward: at 0.1, 64% of 600 train targets are prf's set unchanged and they keep +1.478 of
  the +1.514 the targets reach at 0; the policy then copies prf on most test queries (the README's
  Results). The target writes the set in the candidates' order (prf's first, in the
  order of the evidence's "Classic expansions (prf)" line), which the policy can read off its
  input. Where no set is worth more than 0, the target is the query itself (a valid action worth
  exactly 0), so the policy learns the format anyway.
- ``start_with_core`` (off by default) starts the search from prf's expansions with the
  evidence's "Words that match together" phrase (the product word with the query word most
  feedback titles share, e.g. "back chair") in place of prf's last, or added when prf has fewer
  than ``max_expansions``; not when it is the query or already one of prf's. With ``max_edits=0``
  the target is exactly that set: a function of the observation, which the policy can read off its
  input, where the reward's edits depend on products it never sees. On 1,556 train queries that set
  scores +0.022 above prf's on average (better on 38% of them, worse on 36%).
- ``target_candidates="evidence"`` takes the candidates from the feedback evidence instead of the
  labelled titles: the phrases ``reward-search`` composes (prf's expansions, the "Words that match
  together" phrase, the matched query words, each feedback term with either). With ``max_edits``
  the target is then reward-search's set within that many edits of prf's: a distillation of the
  reward-reading reference, every word of it written in the evidence. On 60 train queries two edits
  score +0.096 above prf's set (4.4 expansions a set); which phrases pay depends on the query.
  A warm-up on them (README, runs/v21) learnt to drop prf's phrases, not which, and fell behind
  prf. ``replace_only`` restricts the edits to replacing one of prf's phrases (the target keeps
  prf's size): one replacement is worth +0.069, two +0.093 (200 train queries, engine check); a
  warm-up on those (runs/v22) fell further behind prf.
- ``teacher`` (a saved agent directory, or a registered agent's name) replaces the target search:
  each target is the set that agent sends for the query, written in its order. With a
  ``learned-edit`` run as the teacher, the warm-up distils a per-query choice that is a function
  of the observation (what ``learned-edit`` reads), where the reward-search targets above depend on
  products the policy never sees (README, runs/v23).
- The target is written in the action format with a one-sentence think block naming one
  phrase (a list there taught the model to loop inside the think block).
Validation and test queries are never read here; ``format_valid_rate`` measures the paper's
first experiment (the untouched model's valid-format rate against the warmed-up one's) on
validation queries.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from agents.base import register
from agents.baselines import PseudoRelevanceFeedbackAgent, evidence_phrases, improve_expansion_set
from agents.llm_agent import LLMAgent
from agents.policy import LLMPolicy, PolicyConfig
from agents.precompute import load_agent
from agents.progress import progress_bar, track
from agents.training import RunLog, has_checkpoint, load_checkpoint, register_trainer, save_checkpoint, start_policy
from catalogs import Split
from catalogs.storage import write_json_atomically
from leser_env.actions import encode_action, parse_action
from leser_env.config_ranges import NON_NEGATIVE, POSITIVE, check_ranges
from leser_env.env import LeserEnv
from leser_env.resources import engine_for
from leser_env.search import SearchEngine

REPORT_FILE = "sft_report.json"
TARGET_CANDIDATES = ("labelled", "evidence")
WORD = re.compile(r"[a-z][a-z0-9\-']*")


@dataclass
class SFTConfig:
    examples: int = 400  # the paper warms up on 10k; a CPU default that teaches the format
    # Optimizer steps; when set, it decides the example count (max_steps x batch / epochs).
    max_steps: int | None = None
    num_train_epochs: int = 1
    per_device_train_batch_size: int = 4
    learning_rate: float = 2e-4
    max_expansions: int = 5
    candidates_per_query: int = 25
    max_edits: int = 2  # edits from prf's expansions the target search may make (see the module docstring)
    min_edit_gain: float = 0.0  # the reward an edit must add to the target set to be made
    replace_only: bool = False  # edits only replace one of prf's phrases: the target keeps prf's size
    # The target search starts from prf's expansions with the evidence's "words that match together"
    # in place of the last (see the module docstring). Off by default: measured in the README's Results.
    start_with_core: bool = False
    # Where target phrases come from: "labelled" (prf's and labelled-relevant title phrases) or
    # "evidence" (every phrase composed from the feedback evidence, as reward-search's; see the module docstring).
    target_candidates: str = "labelled"
    # An agent whose action on each train query is the target instead of the target search's set: a
    # saved agent directory (a learned-edit run, say) or a registered name ("prf"); see the module docstring.
    teacher: str | None = None
    save_steps: int = 25  # optimizer steps
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                **dict.fromkeys(
                    (
                        "examples",
                        "max_steps",
                        "num_train_epochs",
                        "per_device_train_batch_size",
                        "learning_rate",
                        "max_expansions",
                        "candidates_per_query",
                        "save_steps",
                    ),
                    POSITIVE,
                ),
                "max_edits": NON_NEGATIVE,
                "min_edit_gain": NON_NEGATIVE,
            },
        )
        if self.target_candidates not in TARGET_CANDIDATES:
            raise ValueError(f"target_candidates must be one of {TARGET_CANDIDATES}, got {self.target_candidates!r}")
        if self.teacher is not None and (
            self.start_with_core or self.replace_only or self.target_candidates != "labelled"
        ):
            raise ValueError(
                "teacher replaces the target search: leave out start_with_core, replace_only, target_candidates"
            )


def build_examples(
    env: LeserEnv,
    count: int,
    max_expansions: int = 5,
    candidates_per_query: int = 25,
    seed: int = 0,
    max_edits: int = 2,
    min_edit_gain: float = 0.0,
    progress: bool = False,
    start_with_core: bool = False,
    target_candidates: str = "labelled",
    replace_only: bool = False,
    teacher: str | None = None,
) -> list[dict[str, Any]]:
    """Warm-up (observation, target action) pairs from train queries only (see the module docstring);
    ``progress`` shows a bar, one tick a query (the target search scores many sets for each)."""
    if env.split != Split.TRAIN:
        raise ValueError("SFT examples are built from the train split only")
    if teacher is not None:
        return teacher_examples(env, teacher, warm_up_query_ids(env, count, seed), progress)
    if (start_with_core or target_candidates == "evidence") and env.feedback is None:
        raise ValueError("start_with_core and evidence candidates read the evidence: use feedback_evidence=True")
    engine = engine_for(env.catalog_spec, env.data_dir)
    feedback = PseudoRelevanceFeedbackAgent(env.catalog_spec, env.data_dir)
    examples = []
    query_ids = warm_up_query_ids(env, count, seed)
    for query_id in track(query_ids, "warm-up targets", enabled=progress):
        observation, _ = env.observe(query_id)
        query = observation["query"]
        shown = set(WORD.findall(f"{query} {observation['context']} {observation['evidence']}".lower()))
        from_prf = feedback.expand(query)[0]
        evidence = env.feedback.evidence(query) if env.feedback else None
        core = [" ".join(evidence.core)] if start_with_core and evidence else []
        if target_candidates == "evidence" and evidence:
            phrases = evidence_phrases(evidence, query)
        else:
            phrases = labelled_phrases(env, query, query_id)
        candidates = [
            phrase
            for phrase in dict.fromkeys([*from_prf, *core, *phrases])
            if phrase and phrase.lower() != query.lower() and grounded(engine, phrase, shown)
        ][:candidates_per_query]
        start = [phrase for phrase in from_prf if phrase in candidates]
        if core and core[0] in candidates and core[0].casefold() not in {phrase.casefold() for phrase in start}:
            start = [*start[: max_expansions - 1], core[0]]  # in place of prf's last, or added where there is room
        # Written in the candidates' own order (prf's, which follows the evidence, then the labelled
        # or evidence phrases), not the order the search picked them in: the set and its reward are the same,
        # and the policy can read that order off its observation.
        improved = improve_expansion_set(
            env, query, candidates, max_expansions, start, max_edits, min_edit_gain, replace_only
        )
        chosen = sorted(improved, key=candidates.index)
        examples.append({"query_id": query_id, "observation": observation, "target": target_action(chosen, query)})
    return examples


def teacher_examples(env: LeserEnv, teacher: str, query_ids: Sequence[str], progress: bool = False) -> list[dict]:
    """(observation, target) pairs whose target is ``teacher``'s action: a saved agent directory or a
    registered agent's name, built for ``env``'s catalog; a set it writes is taught in its order, an
    invalid action as the query itself."""
    teacher_agent = load_agent(teacher, env.catalog_spec, env.data_dir)
    examples = []
    for query_id in track(query_ids, f"warm-up targets from {teacher_agent.label}", enabled=progress):
        observation, _ = env.observe(query_id)
        action = parse_action(teacher_agent.act([observation])[0], env.action_limits)
        expansions = action.expansions if action.valid else []
        examples.append(
            {
                "query_id": query_id,
                "observation": observation,
                "target": target_action(expansions, observation["query"]),
            }
        )
    return examples


def labelled_phrases(env: LeserEnv, query: str, query_id: str) -> list[str]:
    """Phrases of 2-3 consecutive title words of the products labelled relevant to the query, those
    the query does not retrieve first, the most frequent first."""
    retrieved = set(env.score_group(query, [[query]], query_id)[1][0]["query_results"])
    relevant = sorted(env.catalog.relevant(query_id), key=lambda pid: (pid in retrieved, pid))
    phrases: Counter[str] = Counter()
    for product_id in relevant:
        words = WORD.findall(env.catalog.product(product_id).title.lower())
        for size in (2, 3):
            for start in range(len(words) - size + 1):
                phrases[" ".join(words[start : start + size])] += 1
    return [phrase for phrase, _ in phrases.most_common()]


def target_action(expansions: Sequence[str], query: str) -> str:
    """The action text the warm-up teaches for an expansion set (the query itself when it is empty):
    the set as the answer, and a think block of one sentence naming its first phrase."""
    if expansions:
        # One phrase, not a list: a think block that lists phrases taught the model to keep
        # listing inside it until the token budget ran out (greedy repetition loops).
        return encode_action(list(expansions), f"The catalog calls it {expansions[0]}.")
    return encode_action([query], "The query already uses the catalog's words.")


def warm_up_query_ids(env: LeserEnv, count: int, seed: int = 0) -> list[str]:
    """The train queries a warm-up of ``count`` examples learns targets for: labelled ones, in a
    seeded random order."""
    query_ids = [qid for qid in env.query_ids if env.catalog.relevant(qid)]
    random.Random(seed).shuffle(query_ids)
    return query_ids[:count]


def queries_learnt_by(run: str | Path, env: LeserEnv) -> list[str]:
    """The train queries of ``env`` whose targets the warm-up in ``run`` learnt; empty when ``run``
    is not a finished warm-up on ``env``'s catalog (an RL stage then draws from every train query)."""
    report = read_report(run)
    config = report.get("config")
    if not finished(run) or report.get("catalog") != env.catalog_spec or not isinstance(config, dict):
        return []
    if env.split != Split.TRAIN:
        raise ValueError("a warm-up's queries are train queries: pass the train split's environment")
    return warm_up_query_ids(env, int(report["examples"]), int(config.get("seed", 0)))


def grounded(engine: SearchEngine, phrase: str, shown: set[str]) -> bool:
    """Every word is in the observation, and the first and last are words the engine searches."""
    words = WORD.findall(phrase.lower())
    return (
        bool(words)
        and all(word in shown for word in words)
        and all(engine.analyze(word) for word in (words[0], words[-1]))
    )


def format_valid_rate(
    policy: LLMPolicy,
    observations: Sequence[Mapping[str, str]],
    batch_size: int = 8,
    progress: bool = False,
    description: str = "format-valid check",
) -> float:
    """Share of greedy completions that parse as a valid action (the paper's first measurement)."""
    valid = 0
    starts = range(0, len(observations), batch_size)
    for start in track(starts, description, enabled=progress):
        texts = policy.act(observations[start : start + batch_size])
        valid += sum(parse_action(text, policy.limits).valid for text in texts)
    return valid / max(len(observations), 1)


def sft_loss(policy: LLMPolicy, batch: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens (the prompt is context, not learned)."""
    prompts = [policy.encode_prompt(example["observation"]) for example in batch]
    targets = [policy.encode_completion(example["target"]) for example in batch]
    logprobs = policy.completion_logprobs(prompts, targets, grad=True)
    return -torch.cat(logprobs).mean()


def train(
    policy: LLMPolicy,
    examples: list[dict[str, Any]],
    config: SFTConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """LoRA fine-tuning on the warm-up examples; checkpoints atomically; resumes where it stopped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=config.learning_rate)
    order = [
        i
        for epoch in range(config.num_train_epochs)
        for i in random.Random(config.seed + epoch).sample(range(len(examples)), len(examples))
    ]
    steps = [
        order[i : i + config.per_device_train_batch_size]
        for i in range(0, len(order), config.per_device_train_batch_size)
    ][: config.max_steps]
    start, records = 0, []
    if resume and has_checkpoint(out):
        start, records, _ = load_checkpoint(out, optimizer, total_steps=len(steps))
    log = RunLog(out, records)
    policy.model.train()
    with progress_bar(progress) as bar:
        task = bar.add_task("SFT warm-up", total=len(steps), completed=start)
        for step in range(start, len(steps)):
            loss = sft_loss(policy, [examples[i] for i in steps[step]])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(policy.trainable_parameters()), 1.0)
            optimizer.step()
            loss_value = loss.item()
            log.add({"step": step + 1, "loss": loss_value})
            if (step + 1) % config.save_steps == 0 or step + 1 == len(steps):
                save_checkpoint(out, policy, optimizer, step + 1, asdict(config), log)
            bar.update(task, advance=1, description=f"SFT warm-up loss {loss_value:.3f}")
    log.close()
    return {"steps": len(steps), "final_loss": log.records[-1]["loss"] if log.records else None, "log": log.records}


def read_report(out: str | Path) -> dict[str, Any]:
    """A run's sft_report.json; empty when missing or unreadable (it is then measured again)."""
    try:
        report = json.loads((Path(out) / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def finished(out: str | Path) -> bool:
    """Whether a warm-up run completed: its report holds the rate after training, not just the one before."""
    return "format_valid_after" in read_report(out)


def example_count(config: SFTConfig) -> int:
    """Warm-up examples to build: ``examples``, or what ``max_steps`` batches over the epochs need."""
    if config.max_steps is None:
        return config.examples
    return math.ceil(config.max_steps * config.per_device_train_batch_size / config.num_train_epochs)


@register_trainer("sft", SFTConfig, scores_samples=False)
def run(
    config: SFTConfig,
    env: LeserEnv,
    out: str | Path,
    resume: bool = False,
    *,
    policy: LLMPolicy | None = None,
    init: str | Path | None = None,
    policy_config: PolicyConfig | None = None,
    validation_queries: int = 40,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole warm-up: examples from ``env``'s train queries, the format-valid rate on
    validation queries before, training, the rate after, and the run's agent.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resuming = resume and has_checkpoint(out)
    policy = policy or start_policy(out, resuming, Path(init) if init else None, policy_config)
    examples = build_examples(
        env,
        example_count(config),
        config.max_expansions,
        config.candidates_per_query,
        config.seed,
        config.max_edits,
        config.min_edit_gain,
        progress,
        config.start_with_core,
        config.target_candidates,
        config.replace_only,
        config.teacher,
    )
    validation_env = LeserEnv(catalog=env.catalog_spec, data_dir=env.data_dir, split="validation")
    held_out = [validation_env.observe(qid)[0] for qid in validation_env.query_ids[:validation_queries]]
    report_file = out / REPORT_FILE
    report = read_report(out) if resuming else {}
    if "format_valid_before" not in report:
        # Without this run's adapter: the untouched model, also when resuming a trained adapter; with
        # ``init``, the policy it starts from (merged into the base under a fresh adapter).
        with policy.model.disable_adapter():
            report["format_valid_before"] = format_valid_rate(
                policy, held_out, progress=progress, description="format-valid check, before"
            )
        report["format_valid_before_of"] = f"the policy of {init}" if init else "the untouched model"
        write_json_atomically(report_file, report)  # a killed warm-up keeps it: resuming does not measure again
    result = train(policy, examples, config, out, resume=resuming, progress=progress)
    report.update(
        {
            "catalog": env.catalog_spec,
            "examples": len(examples),
            "validation_queries": len(held_out),
            "format_valid_after": format_valid_rate(
                policy, held_out, progress=progress, description="format-valid check, after"
            ),
            "steps": result["steps"],
            "final_loss": result["final_loss"],
            "config": asdict(config),
        }
    )
    write_json_atomically(report_file, report)
    SFTAgent.describe(out, env.catalog_spec, env.data_dir)
    report["log"] = result["log"]
    report["summary"] = (
        f"SFT warm-up on {env.catalog.name}: format-valid rate on {len(held_out)} validation queries "
        f"{report['format_valid_before']:.0%} -> {report['format_valid_after']:.0%}"
    )
    if "format_valid_before_of" in report:  # reports written before it was recorded do not say
        report["summary"] += f" (before: {report['format_valid_before_of']})"
    return report


@register("sft")
class SFTAgent(LLMAgent):
    """The LLM policy after warm-up; without a checkpoint, the untouched model (the paper's baseline)."""

    needs_training = False
