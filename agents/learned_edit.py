"""learned-edit: a supervised edit of prf's expansion set, chosen from what the observation shows.

A learned baseline without a language model, in the line of supervised feedback-term selection
(Cao et al., "Selecting good expansion terms for pseudo-relevance feedback", SIGIR 2008): it
reads the same feedback evidence as the LLM policy (``LeserEnv``'s class docstring) and learns,
from the reward on train queries, which change to prf's set pays.

The edits: every set one edit from prf's (``agents.baselines.one_edit_neighbours``): drop one of
its expansions, replace one with another phrase composed from the evidence
(``agents.baselines.evidence_candidates``: the core phrase, the matched query words, each feedback
term with either), or add one. Each edit is described by the numbers the observation shows about
it (``EDIT_FEATURES``): the query's evidence (its words' match counts, the core phrase's count, the
top term's weight), which expansion it removes (position, words), and what it adds (source,
feedback term's rank and weight, the product count the evidence prints for it, words).

Training (``leser train --agent learned-edit --out RUN [--engine-check] [--set train_queries=N]``):
on up to ``train_queries`` train-split queries with labels and a prf set, every edit of prf's set
is scored by the environment's reward (under ``--engine-check``, behind the check), and a LightGBM
regressor learns each edit's gain over prf's set from its features. Seconds to a minute; the run
directory holds ``agent.json``, ``policy/model.txt`` (the booster, LightGBM's text format) and
``report.json`` (queries, edits, the in-sample gain, each feature's share of the split gain).

Acting: for each query the agent composes the evidence and prf's set as prf does, predicts every
edit's gain and makes the best edit while one is predicted to gain, up to ``max_edits`` (each from
the set the last left); otherwise it sends prf's set. It never reads the reward while it acts.
The threshold is a predicted gain above 0: on the validation split (the trained runs below, every
edit scored), a margin edits fewer queries and gains less a query (synthetic: 0 edits all 194 and
gains +0.031 over prf; 0.01 edits 72%, +0.027; 0.05 edits 16%, +0.018; Home Depot's 1,136: 0
edits 87%, +0.057; 0.05 edits 43%, +0.044).

In code, ``learn`` fits the model in memory and ``save`` writes the run directory:

    agent = agents.make("learned-edit", engine_check=True)
    agent.learn(LeserEnv("synthetic", split="train", engine_check=True))

Measured (``leser compare``, default reward, engine check, test split): +0.033 [+0.017, +0.055] a
query over prf on the 207 synthetic queries, +0.057 [+0.051, +0.062] on Home Depot's 1,168, recall
and served-page nDCG up beyond their intervals; ``examples/observation_headroom.py`` fits the same
model to set it beside the best single edit (about half of that edit's gain on synthetic):

    leser train --agent learned-edit --engine-check --out runs/learned_edit
    leser compare --agents prf --checkpoint runs/learned_edit --engine-check --limit 207
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import lightgbm
import numpy as np

from agents.base import Agent, register
from agents.baselines import (
    EvidencePhrase,
    evidence_candidates,
    observation_fields,
    one_edit_neighbours,
    query_or_placeholder,
)
from agents.policy import LLMPolicy, PolicyConfig
from agents.progress import track
from agents.training import register_trainer
from catalogs.storage import write_atomically, write_json_atomically
from leser_env.actions import ActionLimits, encode_action
from leser_env.config_ranges import NON_NEGATIVE, POSITIVE, Range, check_ranges
from leser_env.env import LeserEnv
from leser_env.feedback import Evidence, PseudoRelevanceFeedback

MODEL_FILE = "policy/model.txt"  # under policy/, so a store's policy fingerprint covers it
REPORT_FILE = "report.json"
EVIDENCE_TERMS = 8  # the feedback terms the observation shows (leser_env.env.EVIDENCE_TERMS)
SOURCES = ("core", "matched", "term+core", "term+matched", "prf")
EDIT_FEATURES = [
    "query_words", "unmatched_words", "least_word_count", "most_word_count", "core_count", "top_term_weight",
    "set_expansions", "removes_one", "adds_one", "removed_position", "removed_from_end", "removed_words",
    "added_source", "added_term_rank", "added_term_weight", "added_count", "added_words",
]  # fmt: skip


@dataclass
class Query:
    """One query as the observation shows it: its evidence, the phrases composed from it, prf's set."""

    text: str
    evidence: Evidence
    phrases: list[EvidencePhrase]
    prf: list[EvidencePhrase]


@dataclass
class Edits:
    """The sets one edit from a set, and what the observation shows about each edit."""

    current: list[EvidencePhrase]
    edits: list[tuple[int | None, EvidencePhrase | None, list[EvidencePhrase]]]  # (removed, added, the set)
    features: np.ndarray  # one row per edit, EDIT_FEATURES's columns


def read_query(feedback: PseudoRelevanceFeedback, text: str) -> Query:
    """The evidence of a query and the phrases composed from it (prf's set among them, in prf's order)."""
    evidence = feedback.evidence(text, EVIDENCE_TERMS)
    phrases = evidence_candidates(evidence, text)
    return Query(text, evidence, phrases, [phrase for phrase in phrases if phrase.source == "prf"])


def edit_features(
    evidence: Evidence, current: Sequence[EvidencePhrase], removed: int | None, added: EvidencePhrase | None
) -> list[float]:
    """The observation's numbers about one edit of ``current`` (``EDIT_FEATURES``'s order); -1 where
    one does not apply."""
    counts = [count for _, count in evidence.query_words]
    source, rank, weight, shown = -1, -1, -1.0, -1.0
    if added is not None:
        source = SOURCES.index(added.source)
        if added.source.startswith("term+"):
            rank, weight = added.index, evidence.terms[added.index][1]
        if added.source == "core":
            shown = evidence.core_count
        elif added.source == "term+core" and added.index < len(evidence.with_core):
            shown = evidence.with_core[added.index]
    return [
        len(counts), sum(1 for count in counts if not count), min(counts, default=0), max(counts, default=0),
        evidence.core_count, evidence.terms[0][1] if evidence.terms else 0.0,
        len(current), float(removed is not None), float(added is not None),
        -1 if removed is None else removed, -1 if removed is None else len(current) - 1 - removed,
        -1 if removed is None else len(current[removed].text.split()),
        source, rank, weight, shown, -1 if added is None else len(added.text.split()),
    ]  # fmt: skip


def edits_of(query: Query, current: list[EvidencePhrase], max_expansions: int) -> Edits:
    """Every set one edit from ``current`` over the query's phrases, with each edit's features."""
    unused = [phrase for phrase in query.phrases if phrase not in current]
    edits = one_edit_neighbours(current, unused, max_expansions)
    rows = [edit_features(query.evidence, current, removed, added) for removed, added, _ in edits]
    return Edits(current, edits, np.asarray(rows, dtype=float).reshape(len(edits), len(EDIT_FEATURES)))


@dataclass
class LearnedEditConfig:
    """``leser train --agent learned-edit --set FIELD=VALUE``. The booster's fields are LightGBM's names."""

    train_queries: int | None = 1500  # train-split queries with labels and a prf set to learn from (None: all)
    max_edits: int = 1  # edits the trained agent makes in turn, each while one is predicted to gain
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_data_in_leaf: int = 50
    num_boost_round: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                **dict.fromkeys(
                    ("train_queries", "max_edits", "learning_rate", "num_boost_round", "min_data_in_leaf"), POSITIVE
                ),
                "num_leaves": Range(2),
                "seed": NON_NEGATIVE,
            },
        )

    def booster_params(self) -> dict[str, Any]:
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "seed": self.seed,
            "deterministic": True,
            "verbose": -1,
            "num_threads": 0,
        }


def scored_edits(env: LeserEnv, query: Query, current: list[EvidencePhrase]) -> tuple[Edits, np.ndarray, float]:
    """Every edit of ``current``, scored by ``env``'s reward in one group with ``current`` itself:
    the edits, each one's gain over ``current``, and ``current``'s reward."""
    step = edits_of(query, current, env.action_limits.max_expansions)
    sets = [current, *(edited for _, _, edited in step.edits)]
    rewards, _ = env.score_group(query.text, [[phrase.text for phrase in s] for s in sets])
    return step, np.asarray(rewards[1:], dtype=float) - float(rewards[0]), float(rewards[0])


def labelled_edits(
    env: LeserEnv, queries: Sequence[Query], progress: bool = True
) -> tuple[list[Edits], list[np.ndarray], list[float]]:
    """``scored_edits`` of each query's prf set: the edits, each one's gain over prf's set, and prf's
    set's reward."""
    scored = [
        scored_edits(env, query, query.prf)
        for query in track(queries, "scoring every edit of prf's set", enabled=progress)
    ]
    return [step for step, _, _ in scored], [gains for _, gains, _ in scored], [reward for _, _, reward in scored]


def fit(
    features: np.ndarray, gains: np.ndarray, config: LearnedEditConfig, names: Sequence[str] = EDIT_FEATURES
) -> lightgbm.Booster:
    """The regressor of an edit's gain over the set it edits (``names``: the features' columns)."""
    if not len(gains):
        raise ValueError("no edits to learn from: no train query has labels and a prf set with an edit")
    data = lightgbm.Dataset(features, gains, feature_name=list(names))
    return lightgbm.train(config.booster_params(), data, num_boost_round=config.num_boost_round)


def choose(model: lightgbm.Booster, step: Edits) -> int | None:
    """The edit predicted to gain most, where one is predicted to gain at all (ties: the first)."""
    if not step.edits:
        return None
    predicted = model.predict(step.features)
    best = int(np.argmax(predicted))
    return best if predicted[best] > 0 else None


def read_labelled_queries(env: LeserEnv, limit: int | None, progress: bool = True) -> list[Query]:
    """The env's labelled queries (the first ``limit`` of them) that have a prf set."""
    query_ids = [query_id for query_id in env.query_ids if env.catalog.relevant(query_id)][:limit]
    read = (
        read_query(env.feedback, env.clean_query(env.catalog.queries[query_id]))  # the observation's query
        for query_id in track(query_ids, f"reading {env.split} queries' evidence", enabled=progress)
    )
    return [query for query in read if query.prf]


@register_trainer("learned-edit", LearnedEditConfig, scores_samples=True)  # labels are rewards: --engine-check applies
def run(
    config: LearnedEditConfig,
    env: LeserEnv,
    out: str | Path,
    resume: bool = False,
    *,
    policy: LLMPolicy | None = None,
    init: str | Path | None = None,
    policy_config: PolicyConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Learn the edit regressor on ``env``'s train queries (under its reward and engine check) and
    write the trained agent to ``out``. One fit: ``resume`` on a finished run returns its report.
    ``policy``, ``init`` and ``policy_config`` are the trainers' shared signature; there is no
    language model here, so giving one (or a --model) is an error."""
    if init is not None or policy is not None:
        raise ValueError("learned-edit has no language model to start from: leave out --init")
    if policy_config is not None and policy_config.model != PolicyConfig().model:
        raise ValueError("learned-edit has no language model: leave out --model")
    out = Path(out)
    if (out / REPORT_FILE).is_file():
        if not resume:
            raise ValueError(f"{out} already holds a run: pass --resume, or choose another --out")
        report = json_report(out)
        return {**report, "summary": summary(report)}
    agent = LearnedEditAgent(
        env.catalog_spec, env.data_dir, config.seed, max_edits=config.max_edits, engine_check=env.engine_check
    )
    report = agent.learn(env, config, progress)
    agent.save(out)
    write_json_atomically(out / REPORT_FILE, report)  # last: a run without it is unfinished, and trained again
    return {**report, "summary": summary(report)}


def json_report(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / REPORT_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{out / REPORT_FILE}: not a learned-edit report ({error}); train into a new --out") from None


def summary(report: Mapping[str, Any]) -> str:
    return (
        f"learned-edit: {report['train_queries']:,} train queries, {report['train_edits']:,} labelled edits; "
        f"in sample, one edit gains {report['in_sample_gain_over_prf']:+.4f} a query over prf's set "
        f"(edits {report['in_sample_edits_made']:.0%} of queries; the best edit would gain "
        f"{report['best_edit_gain_over_prf']:+.4f})"
    )


@register("learned-edit")
class LearnedEditAgent(Agent):
    """prf's set with up to ``max_edits`` edits a LightGBM regressor predicts to gain (module docstring).

    Built by name it has no model and refuses to act: ``learn(env)`` fits one in memory, or train a
    run with ``leser train --agent learned-edit --out RUN`` and load RUN (``agents.load``,
    ``--checkpoint RUN``).
    ``engine_check`` records that it learned behind the engine check, so evaluation scores it so."""

    def __init__(
        self,
        catalog: str = "synthetic",
        data_dir: str | None = None,
        seed: int = 0,
        max_edits: int = 1,
        engine_check: bool = False,
        **options: Any,
    ) -> None:
        if isinstance(max_edits, bool) or not isinstance(max_edits, int) or max_edits < 1:
            raise ValueError(f"max_edits must be an integer >= 1, got {max_edits!r}")
        if options.get("decoding") not in (None, "greedy"):
            raise ValueError(
                f"--decoding {options['decoding']} is for LLM agents (sft, grpo, ppo); learned-edit's choice is "
                "deterministic (greedy)"
            )
        ignored = ("device", "dtype", "decoding")  # no model to place or sample from
        options = {key: value for key, value in options.items() if key not in ignored}
        super().__init__(catalog, data_dir, seed, max_edits=max_edits, engine_check=bool(engine_check), **options)
        self.max_edits = max_edits
        self.engine_check = bool(engine_check)
        self.feedback = PseudoRelevanceFeedback(self.catalog, self.data_dir)
        self.max_expansions = ActionLimits().max_expansions
        self.model: lightgbm.Booster | None = None

    def learn(self, env: LeserEnv, config: LearnedEditConfig | None = None, progress: bool = True) -> dict[str, Any]:
        """Fit the model on ``env``'s labelled queries (its split, reward and engine check: a LeserEnv
        with the feedback evidence) and return what was learnt: the report ``run`` writes."""
        config = config or LearnedEditConfig()
        if env.feedback is None:
            raise ValueError("learned-edit reads the feedback evidence: use a LeserEnv with feedback_evidence=True")
        queries = read_labelled_queries(env, config.train_queries, progress)
        steps, gains, prf_rewards = labelled_edits(env, queries, progress)
        kept = [i for i, step in enumerate(steps) if step.edits]
        features = np.vstack([steps[i].features for i in kept]) if kept else np.zeros((0, len(EDIT_FEATURES)))
        self.model = fit(features, np.concatenate([gains[i] for i in kept]) if kept else np.zeros(0), config)
        made = [choose(self.model, steps[i]) for i in kept]
        in_sample = [float(gains[i][k]) if k is not None else 0.0 for i, k in zip(kept, made, strict=True)]
        importance = self.model.feature_importance("gain")
        return {
            "agent": "learned-edit",
            "catalog": env.catalog.name,
            "engine_check": bool(env.engine_check),
            "config": asdict(config),
            "train_queries": len(kept),
            "train_edits": len(features),
            "prf_reward": float(np.mean([prf_rewards[i] for i in kept])),
            "in_sample_gain_over_prf": float(np.mean(in_sample)),
            "in_sample_edits_made": float(np.mean([k is not None for k in made])),
            "best_edit_gain_over_prf": float(np.mean([max(0.0, float(gains[i].max())) for i in kept])),
            "feature_gain_share": {
                name: float(value / importance.sum()) if importance.sum() else 0.0
                for name, value in zip(EDIT_FEATURES, importance, strict=True)
            },
        }

    def act(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        if self.model is None:
            raise RuntimeError(
                "learned-edit has no model: train one with `leser train --agent learned-edit --out RUN` "
                "and load RUN (--checkpoint RUN)"
            )
        actions = []
        for observation in observations:
            query, context = observation_fields(observation)
            chosen, made = self.expand(query) if query.strip() else ([], 0)
            think = f"learned-edit: prf's set, {made} edit{'s' * (made != 1)}" if chosen else "learned-edit: the query"
            actions.append(encode_action(chosen or [query_or_placeholder(query, context)], think=think))
        return actions

    def expand(self, query: str) -> tuple[list[str], int]:
        """The chosen set for a query (empty where prf writes none) and how many edits made it."""
        assert self.model is not None
        read = read_query(self.feedback, query)
        current, made = read.prf, 0
        while current and made < self.max_edits:
            step = edits_of(read, current, self.max_expansions)
            best = choose(self.model, step)
            if best is None:
                break
            current, made = step.edits[best][2], made + 1
        return [phrase.text for phrase in current], made

    def save(self, path: str | Path) -> Path:
        directory = super().save(path)
        if self.model is not None:
            (directory / MODEL_FILE).parent.mkdir(parents=True, exist_ok=True)
            write_atomically(directory / MODEL_FILE, self.model.model_to_string())
        return directory

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Agent:
        agent = cast(LearnedEditAgent, super().load(path, **overrides))
        file = Path(path) / MODEL_FILE
        try:
            text = file.read_text()
            agent.model = lightgbm.Booster(model_str=text)
        except FileNotFoundError:
            raise FileNotFoundError(f"{file}: not found (a learned-edit run writes it when training ends)") from None
        except (lightgbm.basic.LightGBMError, UnicodeDecodeError) as error:
            raise ValueError(f"{file}: not a LightGBM model ({error}); train the run again") from None
        if agent.model.num_feature() != len(EDIT_FEATURES):
            raise ValueError(
                f"{file}: the model reads {agent.model.num_feature()} features, this version "
                f"{len(EDIT_FEATURES)}; train the run again"
            )
        return agent
