"""The data model every catalog converts into: products, queries, graded human labels, splits.

Splits are by query id through a stable hash (80/10/10), so the same query lands in the
same split on every machine and in every run, and no query's labels leak across splits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from catalogs.errors import CatalogError


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


SPLIT_PERCENT = {Split.TRAIN: 80, Split.VALIDATION: 10, Split.TEST: 10}


def split_of(query_id: str) -> Split:
    """The split a query id belongs to: a stable hash, independent of the rest of the catalog."""
    bucket = int.from_bytes(hashlib.blake2b(query_id.encode("utf-8"), digest_size=8).digest(), "big") % 100
    if bucket < SPLIT_PERCENT[Split.TRAIN]:
        return Split.TRAIN
    if bucket < SPLIT_PERCENT[Split.TRAIN] + SPLIT_PERCENT[Split.VALIDATION]:
        return Split.VALIDATION
    return Split.TEST


@dataclass(frozen=True, slots=True, eq=True)
class Product:
    """One catalog item. Attributes are free-form string pairs (colour, material, brand, ...)."""

    id: str
    title: str
    description: str = ""
    category: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        record: dict = {"id": self.id, "title": self.title}
        if self.description:
            record["description"] = self.description
        if self.category:
            record["category"] = self.category
        if self.attributes:
            record["attributes"] = dict(self.attributes)
        return record

    def attribute_text(self) -> str:
        """Attribute values as one searchable string ("black; leather; office")."""
        return "; ".join(str(value) for value in self.attributes.values())


@dataclass
class Catalog:
    """Products, queries and graded labels, validated on construction.

    ``qrels[query_id][product_id]`` is a grade: higher is more relevant, 0 is irrelevant.
    A product counts as relevant for human-label metrics when its grade is strictly above
    ``relevance_threshold``.
    """

    name: str
    products: list[Product]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    relevance_threshold: float = 0.0

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for product in self.products:
            if product.id in seen:
                raise CatalogError(f"catalog {self.name!r}: product id {product.id!r} appears twice")
            seen.add(product.id)
        for query_id, labels in self.qrels.items():
            if query_id not in self.queries:
                raise CatalogError(f"catalog {self.name!r}: labels for unknown query id {query_id!r}")
            for product_id in labels:
                if product_id not in seen:
                    raise CatalogError(
                        f"catalog {self.name!r}: query {query_id!r} labels unknown product id {product_id!r}"
                    )

    @cached_property
    def row_of(self) -> dict[str, int]:
        """Product id -> position in ``products``."""
        return {product.id: row for row, product in enumerate(self.products)}

    def product(self, product_id: str) -> Product:
        return self.products[self.row_of[product_id]]

    def query_ids(self, split: Split | str | None = None) -> list[str]:
        """Query ids of one split (all when None), in catalog order."""
        if split is None:
            return list(self.queries)
        wanted = Split(split)
        return [query_id for query_id in self.queries if split_of(query_id) == wanted]

    def relevant(self, query_id: str) -> set[str]:
        """Product ids labelled above the relevance threshold for a query."""
        labels = self.qrels.get(query_id, {})
        return {pid for pid, grade in labels.items() if grade > self.relevance_threshold}

    @cached_property
    def products_hash(self) -> str:
        """Content hash of the products alone: what a search index depends on."""
        digest = hashlib.blake2b(digest_size=16)
        for product in self.products:
            digest.update(_canonical(product.to_json()))
        return digest.hexdigest()

    @cached_property
    def content_hash(self) -> str:
        """Content hash of products, queries, labels and threshold: what learned models depend on."""
        digest = hashlib.blake2b(self.products_hash.encode(), digest_size=16)
        digest.update(_canonical({"queries": self.queries, "threshold": self.relevance_threshold}))
        digest.update(_canonical(self.qrels))
        return digest.hexdigest()

    def stats(self) -> dict:
        """Counts of products, queries and labels, overall and per split."""
        per_split = {}
        for split in Split:
            ids = self.query_ids(split)
            per_split[split.value] = {
                "queries": len(ids),
                "labelled_queries": sum(1 for qid in ids if self.qrels.get(qid)),
                "labels": sum(len(self.qrels.get(qid, {})) for qid in ids),
                "relevant_labels": sum(len(self.relevant(qid)) for qid in ids),
            }
        return {
            "name": self.name,
            "products": len(self.products),
            "queries": len(self.queries),
            "labels": sum(len(labels) for labels in self.qrels.values()),
            "relevance_threshold": self.relevance_threshold,
            "splits": per_split,
        }


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def make_catalog(
    name: str,
    products: Iterable[Product],
    queries: Mapping[str, str],
    labels: Iterable[tuple[str, str, float]],
    relevance_threshold: float = 0.0,
) -> Catalog:
    """Build a catalog from flat (query_id, product_id, grade) triples."""
    qrels: dict[str, dict[str, float]] = {}
    for query_id, product_id, grade in labels:
        qrels.setdefault(query_id, {})[product_id] = float(grade)
    return Catalog(name, list(products), dict(queries), qrels, relevance_threshold)
