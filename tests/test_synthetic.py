"""The synthetic catalog: reproducible, big enough, labelled from its own truth, and hard in the right way.

The vocabulary-gap tests stand in for the real engine with a tiny conjunctive matcher (lowercase,
alphanumeric runs, a short stopword list, plural stripping), so they stay pure Python and fast.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from catalogs.model import Catalog
from catalogs.synthetic import CLASS_BY_KEY, QUERY_MIX, QueryIntent, generate, query_intents, query_kinds

SMALL = {"seed": 0, "n_products": 2000, "n_queries": 600}
KINDS = {"exact", "problem", "synonym", "misspelled"}
STOPWORDS = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to",
    "was", "will", "with",
}  # fmt: skip


def stem(token: str) -> str:
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if token.endswith("es") and token[:-2].endswith(("ch", "sh", "x", "ss")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def terms(text: str) -> list[str]:
    return [stem(token) for token in re.findall(r"[a-z0-9]+", text.lower()) if token not in STOPWORDS]


class AndMatcher:
    """Product ids whose title, description, category and attribute values hold every query term."""

    def __init__(self, catalog: Catalog) -> None:
        self.postings: dict[str, set[str]] = {}
        for product in catalog.products:
            text = " ".join((product.title, product.description, product.category, product.attribute_text()))
            for term in set(terms(text)):
                self.postings.setdefault(term, set()).add(product.id)

    def match(self, query: str) -> set[str]:
        query_terms = terms(query)
        if not query_terms:
            return set()
        found = set(self.postings.get(query_terms[0], set()))
        for term in query_terms[1:]:
            found &= self.postings.get(term, set())
        return found


def with_grade(catalog: Catalog, query_id: str, grades: set[float]) -> set[str]:
    return {pid for pid, grade in catalog.qrels[query_id].items() if grade in grades}


@pytest.fixture(scope="module")
def default_catalog() -> Catalog:
    return generate()


Small = tuple[Catalog, dict[str, QueryIntent], AndMatcher]


@pytest.fixture(scope="module")
def small() -> Small:
    catalog = generate(**SMALL)
    return catalog, query_intents(**SMALL), AndMatcher(catalog)


def ids_of_kind(intents: dict[str, QueryIntent], kind: str) -> list[str]:
    return [qid for qid, intent in intents.items() if intent.kind == kind]


# ---------------------------------------------------------------------------------------------
# Reproducibility and shape
# ---------------------------------------------------------------------------------------------


def test_same_seed_gives_an_identical_catalog(default_catalog: Catalog) -> None:
    again = generate()
    assert again.products == default_catalog.products
    assert again.queries == default_catalog.queries
    assert again.qrels == default_catalog.qrels


def test_a_different_seed_gives_a_different_catalog(small: Small) -> None:
    catalog, _, _ = small
    other = generate(**{**SMALL, "seed": 1})
    assert other.products != catalog.products
    assert other.queries != catalog.queries
    assert other.qrels != catalog.qrels


def test_default_catalog_is_large_and_attributed(default_catalog: Catalog) -> None:
    catalog = default_catalog
    assert catalog.name == "synthetic"
    assert catalog.relevance_threshold == 1.0
    assert len(catalog.products) >= 10_000
    assert len(catalog.queries) == 2_000
    assert len({product.category for product in catalog.products}) >= 20
    keys = {key for product in catalog.products for key in product.attributes}
    assert {"colour", "material", "style", "room", "size", "brand", "feature"} <= keys
    assert all(re.fullmatch(r"syn-\d{6}", product.id) for product in catalog.products)
    assert all(product.title and product.description for product in catalog.products)


def test_every_query_is_unique_and_has_a_relevant_product(default_catalog: Catalog) -> None:
    catalog = default_catalog
    assert all(re.fullmatch(r"q-\d{5}", qid) for qid in catalog.queries)
    texts = [" ".join(text.lower().split()) for text in catalog.queries.values()]
    assert len(set(texts)) == len(texts)
    assert set(catalog.qrels) == set(catalog.queries)
    assert all(catalog.relevant(qid) for qid in catalog.queries)  # grade > 1, i.e. >= 2
    grades = Counter(grade for labels in catalog.qrels.values() for grade in labels.values())
    assert set(grades) == {0.0, 1.0, 2.0, 3.0}


def test_query_kinds_follow_the_mix(default_catalog: Catalog) -> None:
    kinds = query_kinds()
    assert list(kinds) == list(default_catalog.queries)
    counts = Counter(kinds.values())
    assert set(counts) == KINDS
    for kind, share in QUERY_MIX.items():
        assert counts[kind] / len(kinds) == pytest.approx(share, abs=0.02), kind


def test_each_product_spells_grey_one_way_and_both_spellings_occur(small: Small) -> None:
    catalog, _, _ = small
    spellings: Counter[str] = Counter()
    for product in catalog.products:
        text = f"{product.title} {product.description} {product.attribute_text()}".lower()
        words = set(re.findall(r"[a-z]+", text))
        assert not {"grey", "gray"} <= words, product
        spellings.update(words & {"grey", "gray"})
    assert spellings["grey"] > 0 and spellings["gray"] > 0


def test_tiny_catalogs_still_label_every_query() -> None:
    catalog = generate(seed=3, n_products=60, n_queries=30)
    assert 0 < len(catalog.queries) <= 30
    assert all(catalog.relevant(qid) for qid in catalog.queries)


def test_rejects_an_empty_catalog() -> None:
    with pytest.raises(ValueError):
        generate(n_products=0)


# ---------------------------------------------------------------------------------------------
# Labels come from the generator's truth
# ---------------------------------------------------------------------------------------------


def test_problem_labels_follow_the_needed_feature(small: Small) -> None:
    catalog, intents, _ = small
    problems = ids_of_kind(intents, "problem")
    assert problems
    for qid in problems:
        intent = intents[qid]
        category = CLASS_BY_KEY[intent.class_key].category
        for pid in with_grade(catalog, qid, {3.0}):
            product = catalog.product(pid)
            assert product.category == category
            features = product.attributes["feature"].split(", ")
            assert set(features) & set(intent.features), (catalog.queries[qid], product)
        for pid in with_grade(catalog, qid, {0.0}):
            assert catalog.product(pid).category != category


def test_exact_labels_match_the_query_attributes(small: Small) -> None:
    catalog, intents, _ = small
    for qid in ids_of_kind(intents, "exact"):
        for pid in with_grade(catalog, qid, {3.0}):
            attributes = catalog.product(pid).attributes
            for key, value in intents[qid].attributes:
                if key == "feature":
                    assert value in attributes["feature"].split(", ")
                else:
                    assert attributes[key].replace("gray", "grey") == value, catalog.queries[qid]


def test_negatives_include_lexical_lookalikes(small: Small) -> None:
    """Grade-0 labels are not only random: many share a word with the query but are another class."""
    catalog, _, _ = small
    with_lookalike = 0
    for qid, text in catalog.queries.items():
        query_terms = set(terms(text))
        negatives = with_grade(catalog, qid, {0.0})
        if any(query_terms & set(terms(catalog.product(pid).title)) for pid in negatives):
            with_lookalike += 1
    assert with_lookalike / len(catalog.queries) >= 0.5


def test_problem_queries_span_many_needs_and_classes(small: Small) -> None:
    _, intents, _ = small
    problems = [intents[qid] for qid in ids_of_kind(intents, "problem")]
    assert len({(intent.class_key, intent.features) for intent in problems}) >= 30
    assert len({intent.class_key for intent in problems}) >= 20


# ---------------------------------------------------------------------------------------------
# The vocabulary gap: the point of the catalog
# ---------------------------------------------------------------------------------------------


def test_exact_queries_find_relevant_products_by_their_own_words(small: Small) -> None:
    catalog, intents, matcher = small
    exact = ids_of_kind(intents, "exact")
    relevant = {qid: with_grade(catalog, qid, {2.0, 3.0}) for qid in exact}
    found = [bool(matcher.match(catalog.queries[qid]) & relevant[qid]) for qid in exact]
    assert sum(found) / len(found) >= 0.9


def test_problem_queries_miss_by_their_own_words(small: Small) -> None:
    catalog, intents, matcher = small
    problems = ids_of_kind(intents, "problem")
    missed = [not (matcher.match(catalog.queries[qid]) & with_grade(catalog, qid, {3.0})) for qid in problems]
    assert sum(missed) / len(missed) >= 0.7


def test_catalog_language_finds_what_problem_queries_miss(small: Small) -> None:
    """The needed feature's catalog phrase plus the class noun is an expansion that works."""
    catalog, intents, matcher = small
    problems = ids_of_kind(intents, "problem")
    found = []
    for qid in problems:
        intent = intents[qid]
        hits: set[str] = set()
        for feature in intent.features:
            hits |= matcher.match(f"{feature} {intent.class_key}")
        found.append(bool(hits & with_grade(catalog, qid, {3.0})))
    assert sum(found) / len(found) >= 0.9


def test_misspelled_queries_use_words_the_catalog_never_writes(small: Small) -> None:
    catalog, intents, matcher = small
    misspelled = ids_of_kind(intents, "misspelled")
    unknown = [any(t not in matcher.postings for t in terms(catalog.queries[qid])) for qid in misspelled]
    assert sum(unknown) / len(unknown) >= 0.8
