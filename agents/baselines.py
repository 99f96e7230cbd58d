"""Baseline agents: the floor and the classic yardstick any learned expander must beat.

- ``none``: the original query alone. Its reward is exactly 0 by construction, so it marks the
  line between expansions that help and expansions that hurt.
- ``random``: random words from the context and the catalog. A sanity floor: an agent that
  does not beat it has learned nothing about the catalog.
- ``prf``: pseudo-relevance feedback (Bo1 or RM3), the textbook way to expand a query from the
  engine's own top results, written as short queries a conjunctive engine answers.
- ``reward-search``: a reference, not a baseline: the phrases the observation's feedback evidence
  composes, made into the set the reward itself scores highest by a greedy edit search. It reads
  the reward (search engine and relevance model) while it acts, which no policy does, so it marks
  how much the evidence a policy reads is worth, and serves as GRPO's off-policy guide.

    agent = agents.make("prf", catalog="synthetic")
    actions = agent.act([{"query": "back pain chair", "context": "..."}])

Every agent returns a format-valid action for any observation (empty, huge, query syntax,
emoji): a baseline that crashes or breaks the format would measure nothing.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from agents.base import Agent, register
from catalogs import load_catalog
from leser_env.actions import ActionLimits, encode_action, normalize_expansion
from leser_env.feedback import MAX_WORD_CHARS, Evidence, PseudoRelevanceFeedback
from leser_env.search import LONE_SURROGATES

if TYPE_CHECKING:
    from leser_env.env import LeserEnv

LIMITS = ActionLimits()  # the environment's default format limits: 1..5 expansions of 1..100 characters
PLACEHOLDER = "product"  # the expansion of last resort when there is no text to work from
_LETTERS = re.compile(r"[^\W\d_]+")  # runs of letters only
Phrase = TypeVar("Phrase")  # an expansion: its text, or anything that carries one (EvidencePhrase)


# ----------------------------------------------------------------------------------------------
# Shared helpers: reading observations and writing valid expansions
# ----------------------------------------------------------------------------------------------


def observation_fields(observation: object) -> tuple[str, str]:
    """(query, context) of an observation; anything that is not a mapping of strings reads as empty.

    Agents must never raise on odd input, so a missing key or a non-string value is not an error, and
    lone surrogates (which no UTF-8 text, the search engine included, can hold) become spaces.
    """
    if not isinstance(observation, Mapping):
        return "", ""
    query, context = observation.get("query", ""), observation.get("context", "")
    return (
        LONE_SURROGATES.sub(" ", query) if isinstance(query, str) else "",
        LONE_SURROGATES.sub(" ", context) if isinstance(context, str) else "",
    )


def fit_expansion(text: str, max_chars: int = LIMITS.max_chars) -> str:
    """The text normalised as the action format normalises it, then cut to the length limit.

    Angle brackets become spaces: a "<answer>" inside an expansion would break the action's
    format, and the engine's tokenizer splits on them anyway, so the search is unchanged.
    """
    text = normalize_expansion(text.replace("<", " ").replace(">", " "))
    if len(text) > max_chars:
        text = normalize_expansion(text[:max_chars])
    return text


def placeholder(context: str) -> str:
    """A one-word stand-in for an empty query: the first word the context's products use, else "product"."""
    for word in _LETTERS.findall(context.lower()):
        if 1 < len(word) <= MAX_WORD_CHARS:
            return word
    return PLACEHOLDER


def query_or_placeholder(query: str, context: str) -> str:
    """The query as a valid expansion: itself, its first 100 characters, or a placeholder when empty."""
    return fit_expansion(query) or placeholder(context)


def lowercase_letter_words(text: str) -> list[str]:
    """The text's alphabetic words, lowercased, without run-together monsters."""
    return [word for word in _LETTERS.findall(text.lower()) if len(word) <= MAX_WORD_CHARS]


# ----------------------------------------------------------------------------------------------
# none
# ----------------------------------------------------------------------------------------------


@register("none")
class NoExpansionAgent(Agent):
    """The original query as the only expansion: reward 0 by design, the line every agent must clear."""

    def __init__(self, catalog: str = "synthetic", data_dir: str | None = None, seed: int = 0, **options: Any) -> None:
        super().__init__(catalog, data_dir, seed, **options)

    def act(self, observations: Sequence[Mapping[str, str]]) -> list[str]:
        actions = []
        for observation in observations:
            query, context = observation_fields(observation)
            actions.append(encode_action([query_or_placeholder(query, context)], think="none: the original query"))
        return actions


# ----------------------------------------------------------------------------------------------
# random
# ----------------------------------------------------------------------------------------------


@register("random")
class RandomAgent(Agent):
    """1..5 expansions of 1..3 random words, from the observation's context and the catalog's titles.

    A floor, not a strategy: it shows what the reward gives catalog words put together blindly.
    Deterministic given ``seed`` and the sequence of ``act`` calls (the agent owns its generator).
    """

    def __init__(self, catalog: str = "synthetic", data_dir: str | None = None, seed: int = 0, **options: Any) -> None:
        super().__init__(catalog, data_dir, seed, **options)
        self.rng = random.Random(seed)

    @cached_property
    def vocabulary(self) -> list[str]:
        """Lowercase alphabetic words of product titles, sorted so that draws do not depend on set order."""
        words: set[str] = set()
        for product in load_catalog(self.catalog, self.data_dir).products:
            words.update(lowercase_letter_words(product.title))
        return sorted(words) or [PLACEHOLDER]

    def act(self, observations: Sequence[Mapping[str, str]]) -> list[str]:
        return [self._act_one(observation) for observation in observations]

    def _act_one(self, observation: Mapping[str, str]) -> str:
        context_words = lowercase_letter_words(observation_fields(observation)[1])
        expansions: dict[str, str] = {}  # casefolded -> text: duplicates collapse, as the format would
        for _ in range(self.rng.randint(1, LIMITS.max_expansions)):
            text = fit_expansion(" ".join(self._word(context_words) for _ in range(self.rng.randint(1, 3))))
            expansions.setdefault(text.casefold(), text)
        return encode_action(list(expansions.values()), think="random: random context and catalog words")

    def _word(self, context_words: list[str]) -> str:
        """Half the time a word of this observation's context (when it has any), else a catalog word."""
        if context_words and self.rng.random() < 0.5:
            return self.rng.choice(context_words)
        return self.rng.choice(self.vocabulary)


# ----------------------------------------------------------------------------------------------
# prf: the agent
# ----------------------------------------------------------------------------------------------


@register("prf")
class PseudoRelevanceFeedbackAgent(Agent):
    """Pseudo-relevance feedback: expand with the terms that set the engine's top results apart.

    For each query, ``leser_env.feedback`` gives the feedback products, the Bo1 (or RM3) term
    weights, the anchor (the product noun) and the words to write, and composes the expansions
    this agent sends (``PseudoRelevanceFeedback.expansions``, which the observation's evidence shows too):
    each of the strongest feedback terms with the anchor, plus query terms while the expansion
    still matches ``min_results`` products conjunctively, at most ``max_terms`` words (measured:
    more query words keep relevance but add less coverage). With RM3 the query's own weight
    (``original_weight``) does not change the expansions: the engine takes no term weights and
    query terms are always offered.

    Falls back to the query itself when nothing can be derived, so the action is always valid.
    """

    def __init__(
        self,
        catalog: str = "synthetic",
        data_dir: str | None = None,
        seed: int = 0,
        feedback_docs: int = 10,
        method: str = "bo1",
        original_weight: float = 0.5,
        max_expansions: int = 5,
        max_terms: int = 3,
        min_feedback_docs: int = 2,
        min_results: int = 1,
        **options: Any,
    ) -> None:
        if not 1 <= max_expansions <= LIMITS.max_expansions:
            raise ValueError(f"max_expansions must be in 1..{LIMITS.max_expansions}, got {max_expansions}")
        if max_terms < 1:
            raise ValueError("need max_terms >= 1")
        super().__init__(
            catalog,
            data_dir,
            seed,
            feedback_docs=feedback_docs,
            method=method,
            original_weight=original_weight,
            max_expansions=max_expansions,
            max_terms=max_terms,
            min_feedback_docs=min_feedback_docs,
            min_results=min_results,
            **options,
        )
        self.prf = PseudoRelevanceFeedback(
            self.catalog, self.data_dir, feedback_docs, method, original_weight, min_feedback_docs
        )
        self.method = method
        self.max_expansions = int(max_expansions)
        self.max_terms = int(max_terms)
        self.min_results = max(1, int(min_results))

    def act(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        actions = []
        for observation in observations:
            query, context = observation_fields(observation)
            expansions, think = self.expand(query)
            actions.append(encode_action(expansions or [query_or_placeholder(query, context)], think=think))
        return actions

    def expand(self, query: str) -> tuple[list[str], str]:
        """Expansion texts for a query (empty when feedback gives nothing) and a one-line account."""
        feedback = self.prf.analyse(query)
        if not feedback.rows or feedback.terms is None:
            return [], "prf: no feedback products; the query itself"
        composed = self.prf.expansions(feedback, self.max_expansions, self.max_terms, self.min_results)
        texts = list({text.casefold(): text for text in map(fit_expansion, composed) if text}.values())
        top = ", ".join(self.prf.written(feedback, [c]) for c in feedback.candidates[:3]) or "none"
        think = f"prf ({self.method}, {len(feedback.rows)} feedback products): top terms {top}"
        return texts, think if texts else think + "; none matched, the query itself"


# ----------------------------------------------------------------------------------------------
# reward-search: the evidence's phrases chosen by the reward
# ----------------------------------------------------------------------------------------------


@register("reward-search")
class RewardSearchAgent(Agent):
    """The best set of the evidence's phrases the reward finds, starting from prf's.

    Candidates, all composed from what the observation's feedback evidence shows (``LeserEnv``'s
    class docstring): prf's expansions, the "Words that match together" phrase, the query words
    the catalog matches (in the query's order), and each feedback term with either of those two.
    Starting from prf's set, ``improve_expansion_set`` makes the one edit (drop, replace, add) that
    raises the set's reward most, while one does, for at most ``max_edits`` rounds; where no set
    is worth more than the query alone (reward 0), the action is the query.

    It scores sets with the reward while acting (``reward``: a preset name or a ``RewardConfig``'s
    fields; ``engine_check``, when given, as the environment takes it), so it is a reference for how much the
    evidence is worth, not a policy to compare with on equal terms. On 100 synthetic train queries
    (default reward, engine check) it scores +0.10 a query above prf's set and below it on none;
    about 0.06 s a query on one CPU core (a few hundred sets, scored in groups). ``leser evaluate``
    and ``leser compare`` build it with the reward preset they score under and their
    ``--engine-check``.
    """

    reads_reward = True

    def __init__(
        self,
        catalog: str = "synthetic",
        data_dir: str | None = None,
        seed: int = 0,
        reward: str | Mapping[str, Any] = "default",
        engine_check: bool | None = None,
        max_edits: int = 10,
        **options: Any,
    ) -> None:
        from leser_env.env import LeserEnv  # the environment's reward and evidence, built once per agent
        from leser_env.reward import RewardConfig

        if max_edits < 0:
            raise ValueError(f"max_edits must be >= 0, got {max_edits}")
        super().__init__(
            catalog, data_dir, seed, reward=reward, engine_check=engine_check, max_edits=int(max_edits), **options
        )
        config = RewardConfig.resolve(reward)
        if engine_check is not None:
            config = replace(config, engine_check=bool(engine_check))
        self.env = LeserEnv(catalog, data_dir, reward=config)
        self.max_edits = int(max_edits)
        # Evaluation scores it behind the engine check when it searched behind it, as LLM runs trained so.
        self.engine_check = config.engine_check

    def act(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        actions = []
        for observation in observations:
            query, context = observation_fields(observation)
            query = self.env.clean_query(query)
            chosen = self.expand(query) if query.strip() else []
            think = f"reward-search: {len(chosen)} of the evidence's phrases" if chosen else "reward-search: the query"
            actions.append(encode_action(chosen or [query_or_placeholder(query, context)], think=think))
        return actions

    def expand(self, query: str) -> list[str]:
        """The chosen expansion set for a (cleaned) query; empty when none beats the query alone."""
        assert self.env.feedback is not None
        evidence = self.env.feedback.evidence(query)
        candidates = evidence_phrases(evidence, query)
        start = [text for text in map(fit_expansion, evidence.expansions) if text in candidates]
        return improve_expansion_set(
            self.env, query, candidates, self.env.action_limits.max_expansions, start, self.max_edits
        )


@dataclass(frozen=True)
class EvidencePhrase:
    """A phrase composed from the feedback evidence, and what it was composed from."""

    text: str
    source: str  # "prf" (one of prf's expansions), "core", "matched", "term+core" or "term+matched"
    index: int  # which of prf's expansions, or which feedback term for the "term+" sources; else 0


def evidence_candidates(evidence: Evidence, query: str) -> list[EvidencePhrase]:
    """The phrases composed from the feedback evidence (``LeserEnv``'s class docstring): prf's
    expansions, the "Words that match together" phrase (core), the query words the catalog matches
    (matched, in the query's order), and each feedback term with either of those two; in that
    order, fitted to the action's limits, without repeats (the first source named, the last
    spelling) or the query itself."""
    matched = " ".join(word for word, count in evidence.query_words if count)
    cores = [("core", " ".join(evidence.core)), ("matched", matched)]
    phrases = [EvidencePhrase(text, "prf", i) for i, text in enumerate(evidence.expansions)]
    phrases += [EvidencePhrase(text, source, 0) for source, text in cores]
    phrases += [
        EvidencePhrase(f"{term} {text}", f"term+{source}", i)
        for source, text in cores
        if text
        for i, (term, _) in enumerate(evidence.terms)
    ]
    unique: dict[str, EvidencePhrase] = {}
    for phrase in phrases:
        text = fit_expansion(phrase.text)
        if text:
            key = text.casefold()
            unique[key] = replace(unique.get(key, phrase), text=text)
    return [phrase for key, phrase in unique.items() if key != query.strip().casefold()]


def evidence_phrases(evidence: Evidence, query: str) -> list[str]:
    """The texts of ``evidence_candidates``: the phrases reward-search and the warm-up's evidence
    targets compose from."""
    return [phrase.text for phrase in evidence_candidates(evidence, query)]


def one_edit_neighbours(
    current: Sequence[Phrase], unused: Sequence[Phrase], max_expansions: int, resize: bool = True
) -> list[tuple[int | None, Phrase | None, list[Phrase]]]:
    """Every set one edit from ``current``, as (position removed, phrase added, the set): each drop
    (while more than one is left), each replacement by a phrase of ``unused``, each addition (while
    there is room); with ``resize`` False, replacements only. Positions run last-first, so that
    ``np.argmax`` (the first best) gives ties to the edit of the later expansion
    (``improve_expansion_set``)."""
    last_first = range(len(current) - 1, -1, -1)
    edits: list[tuple[int | None, Phrase | None, list[Phrase]]] = []
    if len(current) > 1 and resize:
        edits += [(i, None, [*current[:i], *current[i + 1 :]]) for i in last_first]
    edits += [(i, phrase, [*current[:i], phrase, *current[i + 1 :]]) for i in last_first for phrase in unused]
    if len(current) < max_expansions and resize:
        edits += [(None, phrase, [*current, phrase]) for phrase in unused]
    return edits


def improve_expansion_set(
    env: LeserEnv,
    query: str,
    candidates: Sequence[str],
    max_expansions: int,
    start: Sequence[str] = (),
    max_edits: int | None = None,
    min_edit_gain: float = 0.0,
    replace_only: bool = False,
) -> list[str]:
    """``start`` improved one edit at a time: each round, of all the sets one edit away (drop an
    expansion, replace one with a candidate, add a candidate; with ``replace_only``, only replace, so
    a non-empty start keeps its size), the one whose reward is highest, while it beats the current
    set's by more than ``min_edit_gain``, for at most ``max_edits`` rounds (no limit when None;
    ``max_expansions`` from an empty start, which adds).

    Ties go to the edit of the later expansion, so an earlier (for prf, stronger) one is kept when
    dropping either gains the same: expansions that retrieve the same products tie often, and
    breaking ties toward the first made the targets drop prf's first expansion in 50 of 80 train
    queries (25 with ties to the later, the targets' reward unchanged), which the policy learnt
    as a habit.

    Returns an empty list when no set reached is worth more than 0 (the query alone).
    """
    chosen = list(dict.fromkeys(start))[:max_expansions]
    best = float(env.score_group(query, [chosen])[0][0]) if chosen else 0.0
    rounds = max_expansions if not chosen else max_edits
    resize = not (replace_only and chosen)
    for _ in itertools.count() if rounds is None else range(rounds):
        unused = [phrase for phrase in candidates if phrase not in chosen]
        neighbours = [edit[2] for edit in one_edit_neighbours(chosen, unused, max_expansions, resize)]
        if not neighbours:
            break
        rewards, _ = env.score_group(query, neighbours)
        index = int(np.argmax(rewards))
        if rewards[index] <= best + min_edit_gain:
            break
        chosen, best = neighbours[index], float(rewards[index])
    return chosen if best > 0 else []
