"""The generic on-disk catalog format (DESIGN.md): a directory any user can write.

- ``products.jsonl``: one JSON object a line: ``id``, ``title``, optional ``description``,
  ``category``, ``attributes`` (object of string to string).
- ``queries.tsv``: ``query_id<TAB>query text``.
- ``qrels.tsv``: ``query_id<TAB>0<TAB>product_id<TAB>grade`` (TREC style).
- ``catalog.json`` (optional): ``{"name": ..., "relevance_threshold": ...}``; without it the
  name is the directory's and grades above 0 count as relevant.

Every malformed line is reported with its file, line number and what was expected. Files may
start with a UTF-8 byte-order mark (it is not part of the first id). A (query, product) pair
labelled twice in ``qrels.tsv`` is an error naming both lines: which grade is meant is the
user's call, not ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from catalogs.errors import CatalogError, CatalogFormatError, shorten
from catalogs.model import Catalog, Product
from catalogs.storage import write_atomically

PRODUCTS_FILE = "products.jsonl"
QUERIES_FILE = "queries.tsv"
QRELS_FILE = "qrels.tsv"
META_FILE = "catalog.json"


def is_catalog_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / PRODUCTS_FILE).is_file()


def read_catalog_dir(directory: str | Path) -> Catalog:
    """Read a catalog in the generic format, with precise errors for anything malformed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogError(
            f"{directory}: not a directory (a catalog directory holds {PRODUCTS_FILE}, {QUERIES_FILE} and {QRELS_FILE})"
        )
    for required in (PRODUCTS_FILE, QUERIES_FILE, QRELS_FILE):
        if not (directory / required).is_file():
            raise CatalogError(
                f"{directory / required}: missing (a catalog directory holds {PRODUCTS_FILE}, "
                f"{QUERIES_FILE} and {QRELS_FILE})"
            )
    meta = _read_meta(directory / META_FILE)
    products = _read_products(directory / PRODUCTS_FILE)
    queries = _read_queries(directory / QUERIES_FILE)
    product_ids = {product.id for product in products}
    qrels = _read_qrels(directory / QRELS_FILE, queries, product_ids)
    return Catalog(
        name=str(meta.get("name") or directory.name),
        products=products,
        queries=queries,
        qrels=qrels,
        relevance_threshold=float(meta.get("relevance_threshold", 0.0)),
    )


def write_catalog_dir(catalog: Catalog, directory: str | Path) -> Path:
    """Write a catalog in the generic format; each file is written atomically."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CatalogError(f"{directory}: exists and is not a directory (a catalog is written as a directory)")
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(
        directory / PRODUCTS_FILE,
        "".join(json.dumps(product.to_json(), ensure_ascii=False) + "\n" for product in catalog.products),
    )
    write_atomically(
        directory / QUERIES_FILE,
        "".join(f"{query_id}\t{_one_line(text)}\n" for query_id, text in catalog.queries.items()),
    )
    write_atomically(
        directory / QRELS_FILE,
        "".join(
            f"{query_id}\t0\t{product_id}\t{_format_grade(grade)}\n"
            for query_id, labels in catalog.qrels.items()
            for product_id, grade in labels.items()
        ),
    )
    write_atomically(
        directory / META_FILE,
        json.dumps({"name": catalog.name, "relevance_threshold": catalog.relevance_threshold}, indent=2) + "\n",
    )
    return directory


def _read_lines(path: Path):
    """Yield (line number, text) pairs, refusing files that are not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # a leading BOM is not content
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise CatalogFormatError(path, None, "UTF-8 text", f"undecodable bytes at offset {error.start}") from None


def _read_meta(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise CatalogFormatError(path, getattr(error, "lineno", None), "a JSON object", shorten(str(error))) from None
    if not isinstance(meta, dict):
        raise CatalogFormatError(path, 1, "a JSON object", type(meta).__name__)
    if not isinstance(meta.get("name", ""), str):
        raise CatalogFormatError(path, None, "a string 'name'", shorten(repr(meta["name"])))
    threshold = meta.get("relevance_threshold", 0.0)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise CatalogFormatError(path, None, "a finite number for 'relevance_threshold'", shorten(str(threshold)))
    return meta


def _read_products(path: Path) -> list[Product]:
    products: list[Product] = []
    seen: dict[str, int] = {}
    for number, line in _read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CatalogFormatError(path, number, "one JSON object", f"{error.msg}: {shorten(line)}") from None
        except ValueError as error:  # an integer of more digits than Python converts
            raise CatalogFormatError(path, number, "one JSON object", f"{shorten(str(error))}") from None
        except RecursionError:
            raise CatalogFormatError(path, number, "one JSON object", "nesting too deep to read") from None
        if not isinstance(record, dict):
            raise CatalogFormatError(path, number, "a JSON object", type(record).__name__)
        product_id = record.get("id")
        if isinstance(product_id, int) and not isinstance(product_id, bool):
            product_id = str(product_id)
        if not isinstance(product_id, str) or not product_id.strip():
            raise CatalogFormatError(path, number, "a non-empty string 'id'", shorten(repr(product_id)))
        if product_id in seen:
            raise CatalogFormatError(path, number, f"a unique 'id' ({product_id!r} is on line {seen[product_id]})")
        seen[product_id] = number
        title = record.get("title")
        if not isinstance(title, str):
            raise CatalogFormatError(path, number, "a string 'title'", shorten(repr(title)))
        texts = {}
        for key in ("description", "category"):
            value = record.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise CatalogFormatError(path, number, f"a string '{key}'", shorten(repr(value)))
            texts[key] = value
        attributes = record.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise CatalogFormatError(
                path, number, "'attributes' as an object of string to string", type(attributes).__name__
            )
        clean_attributes = {}
        for key, value in attributes.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise CatalogFormatError(path, number, f"a string value for attribute {key!r}", shorten(repr(value)))
            clean_attributes[str(key)] = str(value)
        products.append(Product(product_id, title, texts["description"], texts["category"], clean_attributes))
    if not products:
        raise CatalogFormatError(path, None, "at least one product")
    return products


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, line in _read_lines(path):
        if not line.strip():
            continue
        query_id, tab, text = line.partition("\t")
        if not tab or not query_id.strip():
            raise CatalogFormatError(path, number, "'query_id<TAB>query text'", shorten(line))
        if query_id in queries:
            raise CatalogFormatError(path, number, f"a unique query id ({query_id!r} appears twice)")
        queries[query_id] = text
    return queries


def _read_qrels(path: Path, queries: dict[str, str], product_ids: set[str]) -> dict[str, dict[str, float]]:
    qrels: dict[str, dict[str, float]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for number, line in _read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            fields = line.split()
        if len(fields) != 4:
            raise CatalogFormatError(path, number, "4 fields 'query_id<TAB>0<TAB>product_id<TAB>grade'", shorten(line))
        query_id, _, product_id, grade_text = fields
        try:
            grade = float(grade_text)
        except ValueError:
            raise CatalogFormatError(path, number, "a numeric grade", shorten(grade_text)) from None
        if not math.isfinite(grade):
            raise CatalogFormatError(path, number, "a finite grade", shorten(grade_text))
        if query_id not in queries:
            raise CatalogFormatError(path, number, f"a query id listed in {QUERIES_FILE}", shorten(query_id))
        if product_id not in product_ids:
            raise CatalogFormatError(path, number, f"a product id listed in {PRODUCTS_FILE}", shorten(product_id))
        if (query_id, product_id) in first_line:
            raise CatalogFormatError(
                path,
                number,
                f"one grade per (query, product) pair ({shorten(query_id, 30)}, {shorten(product_id, 30)} "
                f"is already graded on line {first_line[query_id, product_id]})",
            )
        first_line[query_id, product_id] = number
        qrels.setdefault(query_id, {})[product_id] = grade
    return qrels


def _one_line(text: str) -> str:
    """Only the characters TSV cannot hold (tab, CR, LF) become spaces; all else is kept verbatim."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _format_grade(grade: float) -> str:
    return str(int(grade)) if float(grade).is_integer() else repr(float(grade))
