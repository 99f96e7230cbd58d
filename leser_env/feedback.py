"""Pseudo-relevance feedback: the term statistics a classic PRF method reads off the engine's top products.

One implementation, used twice: the ``prf`` baseline sends the expansions composed here
(``PseudoRelevanceFeedback.expansions``), and the environment shows the same evidence, those
expansions included, in the observation (``LeserEnv(feedback_evidence=True)``), so a small policy
can start from what the heuristic computes and learn where to improve on it.

For a query:
1. feedback: the top ``feedback_docs`` products, conjunctive matching first, topped up with
   disjunctive matches when fewer match every term (vague queries often match nothing);
2. weights for the terms of their titles, categories and attribute values: Bo1 (Amati),
   ``w(t) = tf_x log2((1 + P_n) / P_n) + log2(1 + P_n)``, ``P_n = F_t / N``, which favours terms
   far more frequent among the feedback products than in the catalog; or RM3, the feedback
   products' term distributions weighted by their normalised retrieval scores and interpolated
   with the query's own (``original_weight``);
3. the anchor: the query term most feedback titles share (usually the product noun), or, when no
   title holds a query term, the title term most feedback products share;
4. surface forms: stems are written back as the word the feedback products most often use
   ("ergonomic", not "ergonom"), query terms as the shopper wrote them;
5. expansions: each of the strongest feedback terms with the anchor, plus query terms while the
   expansion still matches products conjunctively (short queries a conjunctive engine answers).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import scipy.sparse as sp

from catalogs import Catalog, Product, load_catalog
from leser_env.resources import engine_for
from leser_env.search import SearchEngine, normalize_text

MAX_CACHED_WORDS = 500_000  # word -> index term entries kept per catalog
MAX_QUERY_TERMS = 16  # query terms looked at (counts, expansions, core): a pasted paragraph costs bounded work
MAX_WORD_CHARS = 30  # longer "words" (part numbers, URLs, run-together text) are noise as expansion material
_WORDS = re.compile(r"[^\W_]+")  # runs of letters and digits: how the engine's simple tokenizer splits


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


@dataclass(frozen=True)
class Feedback:
    """Everything PRF derives for one query (empty ``rows`` when the engine shows nothing)."""

    rows: list[int]  # feedback products' catalog rows, best first
    terms: FeedbackTerms | None
    query_columns: list[int]  # the query's index terms that the catalog holds, in query order
    anchor: int | None  # the product noun's column
    candidates: list[int]  # expansion terms, strongest first (not the anchor, not query terms)
    spelling: dict[str, str]  # index term -> the word to write
    query_spelling: dict[str, str]  # index term -> the word the shopper wrote for it


@dataclass(frozen=True)
class Evidence:
    """What the observation shows of the feedback (``LeserEnv(feedback_evidence=True)``)."""

    terms: tuple[tuple[str, float], ...]  # the strongest feedback terms, as words, with their weights
    query_words: tuple[tuple[str, int], ...]  # each query word and how many products match it alone
    anchor: str | None  # the product word
    core: tuple[str, ...] = ()  # the product word and the query word most shared with it that matches with it
    core_count: int = 0  # products matching every word of ``core``
    with_core: tuple[int, ...] = ()  # per feedback term: products matching it and every word of ``core``
    expansions: tuple[str, ...] = ()  # what prf sends, composed from the above (``PseudoRelevanceFeedback.expansions``)

    def render(self) -> str:
        """Short lines: the feedback terms with weights, the query words' match counts, the product word,
        (when there is a product word) which words match together and each feedback term with them, and
        the expansions prf composes from these. Every number is in parentheses after its word, so a
        count can never be read as a word ("52x84 (94)": the word 52x84, 94 products)."""

        def annotated(pairs: Sequence[tuple[str, float]], digits: int) -> str:
            return ", ".join(f"{word} ({number:.{digits}f})" for word, number in pairs)

        matched = annotated([(word, count) for word, count in self.query_words if count], 0) or "(none)"
        unmatched = [word for word, count in self.query_words if not count]
        lines = [
            f"Feedback terms (weight): {annotated(self.terms, 1) or '(none)'}",
            f"Query words the catalog matches (products): {matched}"
            + (f"; no match: {', '.join(unmatched)}" if unmatched else ""),
        ]
        if self.anchor:
            lines.append(f"Product word: {self.anchor}")
        if self.core:
            lines.append(f"Words that match together (products): {' '.join(self.core)} ({self.core_count})")
            if self.terms:
                counts = [(word, count) for (word, _), count in zip(self.terms, self.with_core, strict=True)]
                lines.append(f"Feedback terms with them (products): {annotated(counts, 0)}")
        if self.expansions:
            lines.append(f"Classic expansions (prf): {'; '.join(self.expansions)}")
        return "\n".join(lines)


def written_order(columns: Sequence[int], query_columns: Sequence[int]) -> list[int]:
    """How an expansion's terms are written: query terms in the query's order, then the others as given."""
    order = {column: index for index, column in enumerate(query_columns)}
    return sorted((c for c in columns if c in order), key=order.__getitem__) + [c for c in columns if c not in order]


class PseudoRelevanceFeedback:
    """Bo1 or RM3 feedback over one catalog's engine (see the module docstring)."""

    def __init__(
        self,
        catalog: str,
        data_dir: str | None = None,
        feedback_docs: int = 10,
        method: str = "bo1",
        original_weight: float = 0.5,
        min_feedback_docs: int = 2,
    ) -> None:
        if method not in ("bo1", "rm3"):
            raise ValueError(f"method must be 'bo1' or 'rm3', not {method!r}")
        if feedback_docs < 1 or not 0.0 <= original_weight <= 1.0:
            raise ValueError("need feedback_docs >= 1 and 0 <= original_weight <= 1")
        self.catalog, self.data_dir = str(catalog), data_dir
        self.feedback_docs = int(feedback_docs)
        self.method = method
        self.original_weight = float(original_weight)
        self.min_feedback_docs = int(min_feedback_docs)  # a single product's brand or part number is no topic

    # Heavy objects are shared per process and opened on first use.
    @cached_property
    def engine(self) -> SearchEngine:
        return engine_for(self.catalog, self.data_dir)

    @cached_property
    def catalog_data(self) -> Catalog:
        return load_catalog(self.catalog, self.data_dir)

    @cached_property
    def statistics(self) -> TermStatistics:
        return term_statistics(self.catalog, self.data_dir)

    def analyse(self, query: str) -> Feedback:
        """Feedback products, term weights, anchor, candidate terms and spellings for a query."""
        rows, scores = self.feedback(query)
        stats = self.statistics
        query_columns = list(dict.fromkeys(stats.column[t] for t in self.engine.analyze(query) if t in stats.column))
        own = self.query_spelling(query)
        if not rows:
            return Feedback([], None, query_columns, None, [], {}, own)
        terms = self.weigh(rows, scores, query_columns)
        anchor = self.anchor(terms, query_columns)
        enough = min(self.min_feedback_docs, len(rows))
        candidates = [
            int(terms.columns[p])
            for p in np.argsort(-terms.weights, kind="stable")
            if terms.documents[p] >= enough and stats.usable[terms.columns[p]]
        ]
        candidates = [c for c in candidates if c != anchor and c not in query_columns]
        return Feedback(rows, terms, query_columns, anchor, candidates, self.surface_forms(rows, own), own)

    def evidence(self, query: str, top: int = 8) -> Evidence:
        """The observation's view of the feedback: top terms with weights, query word counts, anchor, and
        the core (the anchor with the query word most feedback titles share that still matches with it)
        with each top term's conjunctive match count against it."""
        analysed = self.analyse(query)

        def word(column: int) -> str:
            return self.written(analysed, [column])

        terms: list[tuple[str, float]] = []
        if analysed.terms is not None:
            for column in analysed.candidates[:top]:
                position = analysed.terms.position(column)
                terms.append((word(column), float(analysed.terms.weights[position])))
        query_words = [
            (analysed.query_spelling.get(term, term), self.engine.search_terms_many([(term,)], 0, "and")[0].total)
            for term in self.engine.analyze(query)[:MAX_QUERY_TERMS]
        ]
        anchor = None if analysed.anchor is None else word(analysed.anchor)
        expansions = tuple(self.expansions(analysed))
        core = self.core(analysed)
        if not core:
            return Evidence(tuple(terms), tuple(query_words), anchor, expansions=expansions)
        with_core = self.matches([[column, *core] for column in analysed.candidates[:top]])
        return Evidence(
            tuple(terms),
            tuple(query_words),
            anchor,
            tuple(word(c) for c in core),
            self.matches([core])[0],
            tuple(with_core),
            expansions,
        )

    def expansions(
        self, analysed: Feedback, max_expansions: int = 5, max_terms: int = 3, min_results: int = 1
    ) -> list[str]:
        """prf's expansions, written as words: each of the strongest feedback terms with the anchor, then
        query terms while the expansion still matches ``min_results`` products conjunctively, at most
        ``max_terms`` words, at most ``max_expansions`` of them (case-insensitively distinct).

        Query terms are tried most title-shared first (a misspelled or needless word comes last and
        is dropped when it would leave no results). Written order: the feedback term, the query's
        terms in the query's order, then an anchor that is not a query term. Empty without feedback.
        """
        if analysed.terms is None:
            return []
        anchor = analysed.anchor
        others = self.other_query_terms(analysed)
        texts: dict[str, str] = {}
        seen: set[frozenset[int]] = set()
        for candidate in analysed.candidates[: 10 * max_expansions]:  # bounded work for pathological queries
            if len(texts) >= max_expansions:
                break
            chosen = [candidate] if anchor is None else [candidate, anchor]
            if self.matches([chosen])[0] < min_results:
                continue
            for column in others[:MAX_QUERY_TERMS]:
                if len(chosen) >= max_terms:
                    break
                if self.matches([[*chosen, column]])[0] >= min_results:
                    chosen.append(column)
            if frozenset(chosen) not in seen:
                seen.add(frozenset(chosen))
                text = self.written(analysed, [candidate, *written_order(chosen[1:], analysed.query_columns)])
                texts.setdefault(text.casefold(), text)
        return list(texts.values())

    def written(self, analysed: Feedback, columns: Sequence[int]) -> str:
        """Index-term columns as the words to write: the feedback's surface forms, space-separated."""
        terms = self.statistics.terms
        return " ".join(analysed.spelling.get(terms[c], terms[c]) for c in columns)

    def core(self, analysed: Feedback) -> list[int]:
        """The anchor and the query term most feedback titles share that matches together with it (if any),
        in query order with an anchor that is not a query term last; empty without an anchor."""
        if analysed.anchor is None or analysed.terms is None:
            return []
        chosen = [analysed.anchor]
        for column in self.other_query_terms(analysed)[:MAX_QUERY_TERMS]:
            if self.matches([[analysed.anchor, column]])[0] >= 1:
                chosen.append(column)
                break
        return written_order(chosen, analysed.query_columns)

    def other_query_terms(self, analysed: Feedback) -> list[int]:
        """The query's terms other than the anchor, those most feedback titles hold first, then in query
        order (a misspelled or needless word comes last)."""
        order = {column: index for index, column in enumerate(analysed.query_columns)}
        terms = analysed.terms

        def shared(column: int) -> int:
            position = None if terms is None else terms.position(column)
            return 0 if terms is None or position is None else int(terms.titles[position])

        return sorted((c for c in analysed.query_columns if c != analysed.anchor), key=lambda c: (-shared(c), order[c]))

    def matches(self, column_lists: Sequence[Sequence[int]]) -> list[int]:
        """How many products match every term of each list of index-term columns (conjunctive)."""
        terms = self.statistics.terms
        results = self.engine.search_terms_many(
            [tuple(terms[c] for c in columns) for columns in column_lists], 0, "and"
        )
        return [result.total for result in results]

    def feedback(self, query: str) -> tuple[list[int], np.ndarray]:
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

    def weigh(self, rows: list[int], scores: np.ndarray, query_columns: list[int]) -> FeedbackTerms:
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

    def anchor(self, feedback: FeedbackTerms, query_columns: list[int]) -> int | None:
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

    def surface_forms(self, rows: Sequence[int], query_spelling: dict[str, str]) -> dict[str, str]:
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
        surface.update(query_spelling)
        return surface

    def query_spelling(self, query: str) -> dict[str, str]:
        """Index term -> the word the shopper wrote for it."""
        spelling: dict[str, str] = {}
        for word in _WORDS.findall(normalize_text(query).lower())[:256]:
            stem = self.statistics.stem(self.engine, word)
            if stem is not None and len(word) <= MAX_WORD_CHARS:
                spelling[stem] = word
        return spelling
