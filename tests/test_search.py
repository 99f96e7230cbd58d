"""The search engine: it finds what it should, never raises on any text, and its cache is trustworthy."""

from __future__ import annotations

import gc
import os
import random
import weakref
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalogs import Catalog, Product, make_catalog
from catalogs.storage import CACHE_MANIFEST as MANIFEST
from leser_env.search import FieldBoosts, Hits, SearchEngine

ADVERSARIAL = [
    "",
    " ",
    "\t\n",
    '"',
    '""',
    "'",
    ":",
    "title:chair",
    "(",
    ")",
    "((chair",
    "-chair",
    "- -",
    "+chair",
    "AND",
    "OR",
    "NOT",
    "chair AND NOT sofa",
    "chair OR",
    "\\",
    "\\\\chair",
    "chair~2",
    "chair^3",
    "*",
    "?",
    "[1 TO 5]",
    "{a}",
    "/regex/",
    "a\x00b",
    "🎉🛋️ sofa 🎉",
    "ｓｏｆａ",
    "נעליים",
    "椅子",
    "café naïve",
    "x" * 10_000,
    "chair " * 2_000,
    "\u200b\u200d",
    "\ud7ff",
    "\ud800 sofa",
    "<think>",
    '["a", "b"]',
]


@pytest.fixture(scope="module")
def engine(synthetic: Catalog) -> SearchEngine:
    return SearchEngine(synthetic)


@pytest.fixture(scope="module")
def hd_engine(homedepot: Catalog) -> SearchEngine:
    return SearchEngine(homedepot)


def test_search_finds_a_product_by_its_exact_title(engine: SearchEngine, synthetic: Catalog) -> None:
    sample = random.Random(0).sample(synthetic.products, 200)
    ranked_first = 0
    for product in sample:
        hits = engine.search(product.title, k=100)
        assert product.id in hits.ids, product.title
        ranked_first += hits.scores[hits.ids.index(product.id)] >= hits.scores[0] - 1e-4
    assert ranked_first >= 0.8 * len(sample), "a product's own title should usually rank it first (or tied)"


def test_exact_title_on_real_data(hd_engine: SearchEngine, homedepot: Catalog) -> None:
    for product in random.Random(1).sample(homedepot.products, 100):
        assert product.id in hd_engine.search(product.title, k=50).ids, product.title


def test_conjunctive_results_are_a_subset_of_disjunctive(hd_engine: SearchEngine, homedepot: Catalog) -> None:
    for text in list(homedepot.queries.values())[:200]:
        strict, loose = hd_engine.search(text, k=1000, mode="and"), hd_engine.search(text, k=1000, mode="or")
        assert strict.total <= loose.total
        if loose.total <= 1000:
            assert set(strict.ids) <= set(loose.ids)


def test_every_conjunctive_hit_contains_every_term(tiny_catalog: Catalog, tmp_path: Path) -> None:
    engine = SearchEngine(tiny_catalog, cache=tmp_path)
    assert set(engine.search("office chair", k=10).ids) == {"p1", "p2"}
    assert engine.search("leather office chair", k=10).ids == ("p2",)
    assert engine.search("black chair", k=10).ids == ("p1",)  # attribute values are searchable
    assert engine.search("chairs for the office", k=10).total == 2  # stemming and stopwords
    assert engine.search("lumbar", k=10).ids == ("p1",)  # description
    assert engine.search("furniture", k=10).total == 4  # category
    assert engine.search("chair for back pain").total == 0  # the vocabulary gap, under AND
    assert engine.search("chair for back pain", mode="or").ids[0] in {"p1", "p2"}


def test_results_are_ranked_and_bounded(engine: SearchEngine) -> None:
    hits = engine.search("chair", k=7, mode="or")
    assert len(hits) == min(7, hits.total)
    assert list(hits.scores) == sorted(hits.scores, reverse=True)
    assert len(set(hits.ids)) == len(hits.ids)
    assert engine.search("chair", k=0).ids == () and engine.count("chair") == engine.search("chair").total


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_strings_never_raise(engine: SearchEngine, text: str) -> None:
    for mode in ("and", "or"):
        hits = engine.search(text, k=10, mode=mode)
        assert isinstance(hits, Hits) and hits.total >= len(hits.ids)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300) | st.from_regex(r'[\w":()\-+\\*?~^!{}\[\]/ ]{0,80}', fullmatch=True))
def test_any_text_is_searchable(engine: SearchEngine, text: str) -> None:
    hits = engine.search(text, k=5)
    assert hits.total >= len(hits.ids) and all(pid in engine.catalog.row_of for pid in hits.ids)


def test_query_syntax_is_literal_not_interpreted(engine: SearchEngine) -> None:
    assert engine.search("sofa -leather").ids == engine.search("sofa leather").ids
    assert engine.search("NOT sofa").ids == engine.search("sofa").ids
    assert engine.search('"sofa" (leather)').ids == engine.search("sofa leather").ids


def test_batch_search_equals_single_search(hd_engine: SearchEngine, homedepot: Catalog) -> None:
    texts = [*list(homedepot.queries.values())[:300], "", "x" * 5000]
    hd_engine.clear_cache()
    batch = hd_engine.search_many(texts, k=20, mode="or")
    hd_engine.clear_cache()
    assert batch == [hd_engine.search(text, k=20, mode="or") for text in texts]


def test_result_cache_counts_hits_and_shares_entries_across_spellings(tiny_catalog: Catalog, tmp_path: Path) -> None:
    engine = SearchEngine(tiny_catalog, cache=tmp_path)
    first = engine.search("Office Chairs")
    assert engine.cache_info()["misses"] == 1 and engine.cache_info()["hits"] == 0
    assert engine.search("office chair!") == first
    assert engine.cache_info()["hits"] == 1


def test_bad_mode_is_a_clear_error(engine: SearchEngine) -> None:
    with pytest.raises(ValueError, match="mode must be 'and' or 'or'"):
        engine.search("chair", mode="xor")


def test_field_boosts_change_ranking_not_matching(tiny_catalog: Catalog, tmp_path: Path) -> None:
    engine = SearchEngine(tiny_catalog, cache=tmp_path)
    description_heavy = engine.with_boosts(FieldBoosts(title=0.1, description=10, category=0.1, attributes=0.1))
    title_heavy = engine.with_boosts(FieldBoosts(title=10, description=0.1, category=0.1, attributes=0.1))
    assert description_heavy.search("office chair lumbar", mode="or").ids[0] == "p1"
    assert set(title_heavy.search("chair", k=10).ids) == set(description_heavy.search("chair", k=10).ids)


def test_index_is_reused_on_second_open(tiny_catalog: Catalog, tmp_path: Path) -> None:
    first = SearchEngine(tiny_catalog, cache=tmp_path)
    assert first.rebuilt
    second = SearchEngine(tiny_catalog, cache=tmp_path)
    assert not second.rebuilt and second.index_path == first.index_path
    assert second.search("office chair") == first.search("office chair")


@pytest.mark.parametrize(
    "damage", ["garble_segment", "truncate_segment", "delete_manifest", "extra_file", "delete_meta", "wrong_manifest"]
)
def test_corrupt_index_is_detected_and_rebuilt(tiny_catalog: Catalog, tmp_path: Path, damage: str) -> None:
    engine = SearchEngine(tiny_catalog, cache=tmp_path)
    expected = engine.search("office chair", k=10)
    path = engine.index_path
    del engine
    gc.collect()  # release the memory maps before the files change under them
    segment = next(p for p in path.iterdir() if p.suffix in (".idx", ".term"))

    def replace(target: Path, content: bytes) -> None:
        """Swap in new content as a new file: a live memory map keeps the old one (no SIGBUS)."""
        (path / "replacement.part").write_bytes(content)
        os.replace(path / "replacement.part", target)

    if damage == "garble_segment":
        replace(segment, b"\x00garbage" * 50)
    elif damage == "truncate_segment":
        replace(segment, segment.read_bytes()[:10])
    elif damage == "delete_manifest":
        (path / MANIFEST).unlink()
    elif damage == "extra_file":
        (path / "stray.tmp").write_text("half-written")
    elif damage == "delete_meta":
        (path / "meta.json").unlink()
    else:
        replace(path / MANIFEST, b"{ not json")
    reopened = SearchEngine(tiny_catalog, cache=tmp_path)
    assert reopened.rebuilt
    assert reopened.search("office chair", k=10) == expected


def test_an_interrupted_build_never_opens(tiny_catalog: Catalog, tmp_path: Path) -> None:
    engine = SearchEngine(tiny_catalog, cache=tmp_path)
    engine.index_path.rename(tmp_path / "the-old-index")  # not rmtree: the open reader polls it
    engine.index_path.mkdir()
    (engine.index_path / "meta.json").write_text("{}")  # what a build killed midway might leave
    assert SearchEngine(tiny_catalog, cache=tmp_path).rebuilt


def test_an_engine_is_freed_with_its_last_reference(tiny_catalog: Catalog, tmp_path: Path) -> None:
    """No reference cycle: dropping an engine closes its index at once, not at the next garbage
    collection (an open tantivy index keeps a thread watching its directory)."""
    gc.disable()
    try:
        engine = SearchEngine(tiny_catalog, cache=tmp_path)
        clone = engine.with_boosts(FieldBoosts(title=3.0))
        expected = clone.search("office chair")
        assert engine.search("office chair").total == expected.total
        original = weakref.ref(engine)
        del engine
        assert original() is None
        assert clone.search("office chair") == expected and clone.search("walnut chair").total >= 0  # on its own
        cloned = weakref.ref(clone)
        del clone
        assert cloned() is None
    finally:
        gc.enable()


def test_changed_products_get_their_own_index(tiny_catalog: Catalog, tmp_path: Path) -> None:
    engine = SearchEngine(tiny_catalog, cache=tmp_path)
    changed = make_catalog(
        "tiny", [*tiny_catalog.products, Product("p6", "Walnut Office Chair")], tiny_catalog.queries, []
    )
    other = SearchEngine(changed, cache=tmp_path)
    assert other.index_path != engine.index_path and other.rebuilt
    assert other.search("office chair").total == 3 and engine.search("office chair").total == 2
