"""The catalog search engine: a Tantivy index over title, description, category and attributes.

Why it looks like this:
- Queries are built from *analysed terms* (the index's own analyzer: simple tokenizer,
  lowercase, ASCII folding, English stopwords, English stemming), never handed to a query
  parser, so any text a user or a model writes (quotes, colons, ``-``, AND/OR/NOT,
  backslashes, emoji, 10,000 characters) is searchable and nothing raises.
- Matching is conjunctive by default (every term must occur in some field), as e-commerce
  engines match; ``mode="or"`` matches any term. Scoring is BM25 per field, summed over
  fields with boosts (``FieldBoosts``) and over terms.
- The index is built once per catalog content and cached on disk, keyed by the products'
  content hash. It is built in a staging directory and swapped into place with a manifest of
  file digests (``catalogs.storage.cached_directory``); an index whose manifest is missing,
  stale or whose files do not match is rebuilt, never trusted.
- Results are cached (LRU on the analysed terms, so "Chairs" and "chair" share an entry)
  and a batch form searches in threads (tantivy releases the GIL while searching).
"""

from __future__ import annotations

import os
import re
import unicodedata
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import tantivy

from catalogs import Catalog, cache_dir
from catalogs.storage import cached_directory

ENGINE_VERSION = 1  # bump when the schema or analyzer changes: old indexes are then rebuilt
ANALYZER_NAME = "leser_en"
FIELDS = ("title", "description", "category", "attributes")
MAX_QUERY_TERMS = 256  # a longer query is cut to its first 256 distinct terms (it would match nothing anyway)
MatchMode = Literal["and", "or"]


@dataclass(frozen=True)
class FieldBoosts:
    """Multipliers on each field's BM25 score.

    Tuned on the synthetic catalog's train-split labels (``benchmarks/tune_field_boosts.py``:
    nDCG@10 of the disjunctive ranking over 1,500 train queries, a grid of 81 settings): this
    setting scores 0.286 against 0.270 for the untuned title 2 / description 0.5 / category 1 /
    attributes 1. Catalogs with titles only (Home Depot's file) are unaffected.
    """

    title: float = 1.0
    description: float = 0.25
    category: float = 2.0
    attributes: float = 2.0


@dataclass(frozen=True)
class Hits:
    """The top products for one query: ids and scores, best first, and how many matched in all."""

    ids: tuple[str, ...]
    scores: tuple[float, ...]
    total: int

    def __len__(self) -> int:
        return len(self.ids)


EMPTY_HITS = Hits((), (), 0)


LONE_SURROGATES = re.compile("[\ud800-\udfff]")  # what undecodable input bytes become; no UTF-8 text holds them


def normalize_text(text: str) -> str:
    """Unicode NFKC (full-width and compatibility forms fold to their plain letters) before analysis.

    Lone surrogates (not encodable, so tantivy would refuse the string) become "?".
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return unicodedata.normalize("NFKC", text)


def build_analyzer() -> tantivy.TextAnalyzer:
    """The one analyzer used to index and to turn query text into terms."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("row", stored=False, indexed=False, fast=True)
    for name in FIELDS:
        builder.add_text_field(name, stored=False, tokenizer_name=ANALYZER_NAME, index_option="freq")
    return builder.build()


class SearchEngine:
    """Search a catalog. ``SearchEngine(catalog)`` opens the cached index or builds it."""

    def __init__(
        self,
        catalog: Catalog,
        cache: str | Path | None = None,
        boosts: FieldBoosts | None = None,
        result_cache_size: int = 200_000,
        threads: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.boosts = boosts or FieldBoosts()
        self.schema = build_schema()
        self.analyzer = build_analyzer()
        self.index_path = (
            cache_dir(cache) / "index" / f"{_safe(catalog.name)}-{catalog.products_hash[:20]}-v{ENGINE_VERSION}"
        )
        self.rebuilt = False  # True when this open had to build the index
        self.index = self._open_or_build()
        self.searcher = self.index.searcher()
        self.threads = threads or min(8, os.cpu_count() or 1)
        self._product_ids = [product.id for product in catalog.products]
        self._field_boosts = [(name, getattr(self.boosts, name)) for name in FIELDS if getattr(self.boosts, name) > 0]
        self._cached_search = self._result_cache(result_cache_size)

    # -- public API --------------------------------------------------------------------

    def analyze(self, text: str) -> tuple[str, ...]:
        """The distinct index terms of a text, in order (what the engine actually matches)."""
        return query_terms(self.analyzer, text)

    def search(self, text: str, k: int = 10, mode: MatchMode = "and") -> Hits:
        """Top-k product ids and scores for a text, plus the total number of matches."""
        _check_mode(mode)
        return self._cached_search(self.analyze(text), max(0, int(k)), mode)

    def search_many(self, texts: list[str], k: int = 10, mode: MatchMode = "and") -> list[Hits]:
        """``search`` over many texts in threads; results in input order."""
        _check_mode(mode)
        return self.search_terms_many([self.analyze(text) for text in texts], k, mode)

    def search_terms_many(self, keys: list[tuple[str, ...]], k: int, mode: MatchMode) -> list[Hits]:
        """Search already-analysed term tuples, one contiguous chunk per thread.

        Chunks rather than one task per query: a search takes tens of microseconds, about what
        handing a task to a thread costs.
        """
        _check_mode(mode)
        k = max(0, int(k))
        workers = min(self.threads, len(keys) // 64)
        if workers <= 1:
            return [self._cached_search(key, k, mode) for key in keys]
        size = -(-len(keys) // workers)
        chunks = [keys[start : start + size] for start in range(0, len(keys), size)]
        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = pool.map(lambda chunk: [self._cached_search(key, k, mode) for key in chunk], chunks)
            return [hits for part in parts for hits in part]

    def count(self, text: str, mode: MatchMode = "and") -> int:
        """How many products match a text."""
        return self.search(text, k=0, mode=mode).total

    def cache_info(self) -> dict[str, int]:
        info = self._cached_search.cache_info()
        return {"hits": info.hits, "misses": info.misses, "size": info.currsize, "maxsize": info.maxsize or 0}

    def clear_cache(self) -> None:
        self._cached_search.cache_clear()

    def with_boosts(self, boosts: FieldBoosts) -> SearchEngine:
        """The same index scored with other field boosts (shares the open index, fresh result cache)."""
        clone = object.__new__(SearchEngine)
        clone.__dict__.update(self.__dict__)
        clone.boosts = boosts
        clone._field_boosts = [(name, getattr(boosts, name)) for name in FIELDS if getattr(boosts, name) > 0]
        clone._cached_search = clone._result_cache(self._cached_search.cache_info().maxsize)
        return clone

    def query_for(self, terms: tuple[str, ...], mode: MatchMode) -> tantivy.Query | None:
        """The tantivy query for analysed terms: per term a boosted disjunction over fields."""
        if not terms:
            return None
        occur = tantivy.Occur.Must if mode == "and" else tantivy.Occur.Should
        clauses = []
        for term in terms:
            per_field = [
                (
                    tantivy.Occur.Should,
                    tantivy.Query.boost_query(
                        tantivy.Query.term_query(self.schema, field, term, index_option="freq"), boost
                    ),
                )
                for field, boost in self._field_boosts
            ]
            clauses.append((occur, tantivy.Query.boolean_query(per_field)))
        return tantivy.Query.boolean_query(clauses)

    # -- internals ---------------------------------------------------------------------

    def _result_cache(self, maxsize: int | None) -> Callable[[tuple[str, ...], int, MatchMode], Hits]:
        """``_search_terms`` behind an LRU cache that holds the engine weakly: a cache over the bound
        method would be a reference cycle, keeping the engine, its open index and the index's
        file-watcher thread alive after the last reference went, until the garbage collector ran."""
        engine = weakref.proxy(self)

        def search_terms(terms: tuple[str, ...], k: int, mode: MatchMode) -> Hits:
            return engine._search_terms(terms, k, mode)

        return lru_cache(maxsize=maxsize)(search_terms)

    def _search_terms(self, terms: tuple[str, ...], k: int, mode: MatchMode) -> Hits:
        query = self.query_for(terms, mode)
        if query is None:
            return EMPTY_HITS
        result = self.searcher.search(query, limit=max(k, 1), count=True)
        total = result.count or 0
        if k == 0 or not result.hits:
            return Hits((), (), total)
        scores = [score for score, _ in result.hits]
        rows = self.searcher.fast_field_values("row", [address for _, address in result.hits])
        ids = tuple(self._product_ids[row] for row in rows)
        return Hits(ids, tuple(scores), total)

    def _open_or_build(self) -> tantivy.Index:
        key = {
            "engine_version": ENGINE_VERSION,
            "catalog": self.catalog.name,
            "products_hash": self.catalog.products_hash,
            "num_docs": len(self.catalog.products),
        }
        self.rebuilt = cached_directory(self.index_path, key, self._build)
        index = tantivy.Index.open(str(self.index_path))
        index.register_tokenizer(ANALYZER_NAME, self.analyzer)
        return index

    def _build(self, staging: Path) -> None:
        """Index every product into ``staging`` and check the document count."""
        index = tantivy.Index(self.schema, str(staging), reuse=False)
        index.register_tokenizer(ANALYZER_NAME, self.analyzer)
        writer = index.writer(heap_size=128_000_000, num_threads=1)
        for row, product in enumerate(self.catalog.products):
            document = tantivy.Document(
                title=normalize_text(product.title),
                description=normalize_text(product.description),
                category=normalize_text(product.category),
                attributes=normalize_text(product.attribute_text()),
            )
            document.add_unsigned("row", row)
            writer.add_document(document)
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        num_docs = index.searcher().num_docs
        if num_docs != len(self.catalog.products):
            raise RuntimeError(f"index holds {num_docs} documents, expected {len(self.catalog.products)}")
        del writer, index


def query_terms(analyzer: tantivy.TextAnalyzer, text: str) -> tuple[str, ...]:
    """The distinct index terms of a query text, in order, at most ``MAX_QUERY_TERMS``: what the
    engine matches and what the relevance model's features see (both call this one function)."""
    if not isinstance(text, str) or not text:
        return ()
    seen: dict[str, None] = {}
    for token in analyzer.analyze(normalize_text(text)):
        seen.setdefault(token, None)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return tuple(seen)


def _check_mode(mode: str) -> None:
    if mode not in ("and", "or"):
        raise ValueError(f"mode must be 'and' or 'or', not {mode!r}")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "catalog"
