"""Baseline agents: the floor and the classic yardstick any learned expander must beat.

- ``none``: the original query alone. Its reward is exactly 0 by construction, so it marks the
  line between expansions that help and expansions that hurt.
- ``random``: random words from the context and the catalog. A sanity floor: an agent that
  does not beat it has learned nothing about the catalog.
- ``prf``: pseudo-relevance feedback (Bo1 or RM3), the textbook way to expand a query from the
  engine's own top results, written as short queries a conjunctive engine answers.

    agent = agents.make("prf", catalog="synthetic")
    actions = agent.act([{"query": "back pain chair", "context": "..."}])

Every agent returns a format-valid action for any observation (empty, huge, query syntax,
emoji): a baseline that crashes or breaks the format would measure nothing.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import scipy.sparse as sp

from agents.base import Agent, register
from catalogs import Catalog, Product, load_catalog
from leser_env.actions import ActionLimits, encode_action, normalize_expansion
from leser_env.env import PARTIAL_MATCH_NOTE
from leser_env.resources import engine_for
from leser_env.search import SearchEngine, normalize_text

LIMITS = ActionLimits()  # the environment's default format limits: 1..5 expansions of 1..100 characters
PLACEHOLDER = "product"  # the expansion of last resort when there is no text to work from
MAX_CACHED_WORDS = 500_000  # word -> index term entries kept per catalog
MAX_WORD_CHARS = 30  # longer "words" (part numbers, URLs, run-together text) are noise as expansion material
_WORDS = re.compile(r"[^\W_]+")  # runs of letters and digits: how the engine's simple tokenizer splits
_LETTERS = re.compile(r"[^\W\d_]+")  # runs of letters only
_SURROGATES = re.compile("[\ud800-\udfff]")


# ----------------------------------------------------------------------------------------------
# Shared helpers: reading observations and writing valid expansions
# ----------------------------------------------------------------------------------------------


def observation_fields(observation: object) -> tuple[str, str]:
    """(query, context) of an observation; anything that is not a mapping of strings reads as empty.

    Agents must never raise on odd input, so a missing key or a non-string value is not an error, and
    lone surrogates (which no UTF-8 text, the search engine included, can hold) become spaces. The
    environment's note that the context is a fallback is not product wording, so it is left out.
    """
    if not isinstance(observation, Mapping):
        return "", ""
    query, context = observation.get("query", ""), observation.get("context", "")
    return (
        _SURROGATES.sub(" ", query) if isinstance(query, str) else "",
        _SURROGATES.sub(" ", context.replace(PARTIAL_MATCH_NOTE, " ")) if isinstance(context, str) else "",
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
# prf: catalog term statistics, computed once per catalog and process
# ----------------------------------------------------------------------------------------------


def feedback_text(product: Product) -> tuple[str, str]:
    """(title, category and attribute values): the product text feedback terms are drawn from."""
    return product.title, f"{product.category} ; {product.attribute_text()}"


@dataclass
class TermStatistics:
    """Term counts of every product's feedback text, as sparse matrices (products x index terms).

    Built once, so a query's feedback statistics are a few sparse row gathers with no loop over
    the catalog.
    """

    terms: list[str]  # column -> index term (a stem, as the engine's analyzer writes it)
    column: dict[str, int]  # index term -> column
    counts: sp.csr_matrix  # term frequency in each product's feedback text
    in_title: sp.csr_matrix  # 1 where the product's title holds the term
    collection_frequency: np.ndarray  # F_t: occurrences in the whole catalog
    lengths: np.ndarray  # terms in each product's feedback text (at least 1)
    usable: np.ndarray  # per term: worth offering as an expansion word (see ``usable_term``)
    n_products: int
    stems: dict[str, str | None] = field(default_factory=dict, repr=False)  # word -> index term, filled lazily

    def stem(self, engine: SearchEngine, word: str) -> str | None:
        """The index term one word becomes (None for a stopword or a word that splits)."""
        if word in self.stems:
            return self.stems[word]
        terms = engine.analyze(word)
        stem = terms[0] if len(terms) == 1 else None
        if len(self.stems) < MAX_CACHED_WORDS:  # shoppers' words are unbounded; the cache is not
            self.stems[word] = stem
        return stem


def usable_term(term: str) -> bool:
    """A feedback term worth offering: letters only and at least 3 of them (not "ft", "oz", "pt14")."""
    return term.isalpha() and 3 <= len(term) <= MAX_WORD_CHARS


@lru_cache(maxsize=4)
def term_statistics(catalog: str, data_dir: str | None) -> TermStatistics:
    """Count every product's analysed feedback terms (the only loop over products, once per process)."""
    products = load_catalog(catalog, data_dir).products
    analyzer = engine_for(catalog, data_dir).analyzer
    column: dict[str, int] = {}
    rows, columns, values, title_rows, title_columns = [], [], [], [], []
    for row, product in enumerate(products):
        title, rest = feedback_text(product)
        title_terms = analyzer.analyze(normalize_text(title))
        for term, count in Counter(title_terms + analyzer.analyze(normalize_text(rest))).items():
            rows.append(row)
            columns.append(column.setdefault(term, len(column)))
            values.append(count)
        for term in set(title_terms):
            title_rows.append(row)
            title_columns.append(column[term])
    shape = (len(products), len(column))
    counts = sp.csr_matrix((np.asarray(values, dtype=np.float64), (rows, columns)), shape=shape)
    in_title = sp.csr_matrix((np.ones(len(title_rows)), (title_rows, title_columns)), shape=shape)
    return TermStatistics(
        terms=list(column),
        column=column,
        counts=counts,
        in_title=in_title,
        collection_frequency=np.asarray(counts.sum(axis=0)).ravel(),
        lengths=np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1.0),
        usable=np.array([usable_term(term) for term in column], dtype=bool),
        n_products=max(len(products), 1),
    )


@dataclass(frozen=True)
class FeedbackTerms:
    """The feedback set's terms, aligned arrays: weight, feedback products holding it, titles holding it."""

    columns: np.ndarray  # sorted term columns present in the feedback set
    weights: np.ndarray
    documents: np.ndarray
    titles: np.ndarray

    def position(self, column: int) -> int | None:
        """Where a term column sits in the arrays (None when the feedback set does not hold it)."""
        position = int(np.searchsorted(self.columns, column))
        return position if position < len(self.columns) and self.columns[position] == column else None


# ----------------------------------------------------------------------------------------------
# prf: the agent
# ----------------------------------------------------------------------------------------------


@register("prf")
class PseudoRelevanceFeedbackAgent(Agent):
    """Pseudo-relevance feedback: expand with the terms that set the engine's top results apart.

    For each query:
    1. feedback: the top ``feedback_docs`` products, conjunctive matching first, topped up with
       disjunctive matches when fewer match every term (vague queries often match nothing);
    2. weights for the terms of their titles, categories and attribute values: Bo1 (Amati),
       ``w(t) = tf_x log2((1 + P_n) / P_n) + log2(1 + P_n)``, ``P_n = F_t / N``, which favours
       terms far more frequent among the feedback products than in the catalog; or RM3, the
       feedback products' term distributions weighted by their normalised retrieval scores and
       interpolated with the query's own (``original_weight``; the engine takes no term weights
       and query terms are always offered in step 4, so this weight does not change the expansions);
    3. the anchor: the query term most feedback titles share (usually the product noun), or,
       when no title holds a query term, the title term most feedback products share;
    4. expansions: each of the strongest feedback terms with the anchor, plus query terms while
       the expansion still matches ``min_results`` products conjunctively, at most
       ``max_terms`` words (measured: more query words keep relevance but add less coverage).
       Stems are written back as the word the feedback products most often use ("ergonomic",
       not "ergonom").

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
        if method not in ("bo1", "rm3"):
            raise ValueError(f"method must be 'bo1' or 'rm3', not {method!r}")
        if not 1 <= max_expansions <= LIMITS.max_expansions:
            raise ValueError(f"max_expansions must be in 1..{LIMITS.max_expansions}, got {max_expansions}")
        if feedback_docs < 1 or max_terms < 1 or not 0.0 <= original_weight <= 1.0:
            raise ValueError("need feedback_docs >= 1, max_terms >= 1 and 0 <= original_weight <= 1")
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
        self.feedback_docs = int(feedback_docs)
        self.method = method
        self.original_weight = float(original_weight)
        self.max_expansions = int(max_expansions)
        self.max_terms = int(max_terms)
        self.min_feedback_docs = int(min_feedback_docs)  # a single product's brand or part number is no topic
        self.min_results = max(1, int(min_results))

    # Heavy objects are shared per process and opened on first use, so building an agent is cheap.
    @cached_property
    def engine(self) -> SearchEngine:
        return engine_for(self.catalog, self.data_dir)

    @cached_property
    def catalog_data(self) -> Catalog:
        return load_catalog(self.catalog, self.data_dir)

    @cached_property
    def statistics(self) -> TermStatistics:
        return term_statistics(self.catalog, self.data_dir)

    def act(self, observations: Sequence[Mapping[str, str]]) -> list[str]:
        actions = []
        for observation in observations:
            query, context = observation_fields(observation)
            expansions, think = self.expand(query)
            actions.append(encode_action(expansions or [query_or_placeholder(query, context)], think=think))
        return actions

    def expand(self, query: str) -> tuple[list[str], str]:
        """Expansion texts for a query (empty when feedback gives nothing) and a one-line account."""
        rows, scores = self._feedback(query)
        if not rows:
            return [], "prf: no feedback products; the query itself"
        stats = self.statistics
        query_columns = list(dict.fromkeys(stats.column[t] for t in self.engine.analyze(query) if t in stats.column))
        feedback = self._weigh(rows, scores, query_columns)
        anchor = self._anchor(feedback, query_columns)
        enough = min(self.min_feedback_docs, len(rows))
        candidates = [
            int(feedback.columns[p])
            for p in np.argsort(-feedback.weights, kind="stable")
            if feedback.documents[p] >= enough and stats.usable[feedback.columns[p]]
        ]
        candidates = [c for c in candidates if c != anchor and c not in query_columns]
        spelling = self._surface_forms(rows, query)

        def words(columns: Sequence[int]) -> str:
            return " ".join(spelling.get(stats.terms[c], stats.terms[c]) for c in columns)

        texts = [fit_expansion(words(terms)) for terms in self._compose(candidates, anchor, query_columns, feedback)]
        texts = list({text.casefold(): text for text in texts if text}.values())
        top = ", ".join(words([c]) for c in candidates[:3]) or "none"
        think = f"prf ({self.method}, {len(rows)} feedback products): top terms {top}"
        return texts, think if texts else think + "; none matched, the query itself"

    # -- the steps -----------------------------------------------------------------------------

    def _feedback(self, query: str) -> tuple[list[int], np.ndarray]:
        """Rows and retrieval scores of the top products: conjunctive first, topped up disjunctively."""
        hits = self.engine.search(query, self.feedback_docs, "and")
        ids, scores = list(hits.ids), list(hits.scores)
        if len(ids) < self.feedback_docs:
            extra = self.engine.search(query, self.feedback_docs, "or")
            for product_id, score in zip(extra.ids, extra.scores, strict=True):
                if len(ids) < self.feedback_docs and product_id not in ids:
                    ids.append(product_id)
                    scores.append(score)
        row_of = self.catalog_data.row_of
        return [row_of[product_id] for product_id in ids], np.asarray(scores, dtype=np.float64)

    def _weigh(self, rows: list[int], scores: np.ndarray, query_columns: list[int]) -> FeedbackTerms:
        """Bo1 or RM3 weights of the feedback set's terms, with how many feedback products and titles hold each."""
        stats = self.statistics
        block = stats.counts[rows]
        columns, entry_term = np.unique(block.indices, return_inverse=True)
        entries_per_row = np.diff(block.indptr)
        if self.method == "bo1":
            tf_x = np.bincount(entry_term, weights=block.data, minlength=len(columns))
            p_n = stats.collection_frequency[columns] / stats.n_products
            weights = tf_x * np.log2((1.0 + p_n) / p_n) + np.log2(1.0 + p_n)
        else:
            relevance = np.maximum(scores, 0.0)
            relevance = relevance / relevance.sum() if relevance.sum() > 0 else np.full(len(rows), 1.0 / len(rows))
            p_t_given_d = block.data / stats.lengths[rows].repeat(entries_per_row)
            feedback_model = np.bincount(
                entry_term, weights=p_t_given_d * relevance.repeat(entries_per_row), minlength=len(columns)
            )
            in_query = np.isin(columns, query_columns)
            query_model = in_query / max(int(in_query.sum()), 1)
            weights = (1.0 - self.original_weight) * feedback_model + self.original_weight * query_model
        documents = np.bincount(entry_term, minlength=len(columns))
        title_columns = stats.in_title[rows].indices  # every title term is a feedback term, so it is in `columns`
        titles = np.bincount(np.searchsorted(columns, title_columns), minlength=len(columns))
        return FeedbackTerms(columns, weights, documents, titles)

    def _anchor(self, feedback: FeedbackTerms, query_columns: list[int]) -> int | None:
        """The dominant product noun: the query term most feedback titles hold, else the most shared title term.

        Among query terms, later ones win ties: a shopper's query usually ends in the product noun.
        """
        in_titles = []
        for order, column in enumerate(query_columns):
            position = feedback.position(column)
            if position is not None and feedback.titles[position] > 0:
                in_titles.append((int(feedback.titles[position]), order, column))
        if in_titles:
            return max(in_titles)[2]
        shared = np.flatnonzero((feedback.titles > 0) & self.statistics.usable[feedback.columns])
        if not len(shared):
            return None
        best = max(shared, key=lambda p: (feedback.titles[p], feedback.weights[p]))
        return int(feedback.columns[best])

    def _compose(
        self, candidates: list[int], anchor: int | None, query_columns: list[int], feedback: FeedbackTerms
    ) -> list[tuple[int, ...]]:
        """Term lists of the expansions: a feedback term, the anchor, then query terms while results still come.

        Query terms are tried most title-shared first (a misspelled or needless word comes last and
        is dropped when it would leave no results). Written order: the feedback term, the query's
        terms in the query's order, then an anchor that is not a query term.
        """

        def shared(column: int) -> int:
            position = feedback.position(column)
            return 0 if position is None else int(feedback.titles[position])

        order = {column: index for index, column in enumerate(query_columns)}
        others = sorted((c for c in query_columns if c != anchor), key=lambda c: (-shared(c), order[c]))
        expansions: list[tuple[int, ...]] = []
        seen: set[frozenset[int]] = set()
        for candidate in candidates[: 10 * self.max_expansions]:  # bounded work for pathological queries
            if len(expansions) >= self.max_expansions:
                break
            chosen = [candidate] if anchor is None else [candidate, anchor]
            if self._matches(chosen) < self.min_results:
                continue
            for column in others[:16]:
                if len(chosen) >= self.max_terms:
                    break
                if self._matches([*chosen, column]) >= self.min_results:
                    chosen.append(column)
            if frozenset(chosen) not in seen:
                seen.add(frozenset(chosen))
                in_query = sorted((c for c in chosen if c in order), key=order.__getitem__)
                expansions.append((candidate, *in_query, *(c for c in chosen[1:] if c not in order)))
        return expansions

    def _matches(self, columns: Sequence[int]) -> int:
        """How many products a set of index terms matches conjunctively (searches are cached by the engine)."""
        terms = tuple(self.statistics.terms[c] for c in columns)  # already analysed: searched as they are
        return self.engine.search_terms_many([terms], 0, "and")[0].total

    def _surface_forms(self, rows: list[int], query: str) -> dict[str, str]:
        """Index term -> the word to write: the shopper's own for query terms, else the feedback products' commonest."""
        stats, products = self.statistics, self.catalog_data.products
        spellings: Counter[tuple[str, str]] = Counter()
        for row in rows:
            for word in _WORDS.findall(normalize_text(" ".join(feedback_text(products[row]))).lower()):
                stem = stats.stem(self.engine, word)
                if stem is not None:
                    spellings[stem, word] += 1
        surface: dict[str, str] = {}
        for (stem, word), _ in spellings.most_common():
            surface.setdefault(stem, word)
        for word in _WORDS.findall(normalize_text(query).lower())[:256]:
            stem = stats.stem(self.engine, word)
            if stem is not None and len(word) <= MAX_WORD_CHARS:
                surface[stem] = word
        return surface
