"""Loader (and downloader) for the Wayfair ANnotation DataSet (WANDS, MIT licence).

A WANDS directory holds three tab-separated files: ``product.csv`` (product_id,
product_name, product_class, category_hierarchy, product_description, product_features,
...), ``query.csv`` (query_id, query, query_class) and ``label.csv`` (id, query_id,
product_id, label). Labels Exact/Partial/Irrelevant become grades 2/1/0; only Exact
counts as relevant for human-label recall. ``product_features`` is ``|``-separated
``name:value`` pairs and becomes the product's attributes.
"""

from __future__ import annotations

import csv
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from catalogs.errors import CatalogError, CatalogFormatError, shorten
from catalogs.model import Catalog, Product, make_catalog
from catalogs.paths import data_dir as default_data_dir
from catalogs.storage import atomic_file

FILES = ("product.csv", "query.csv", "label.csv")
GRADES = {"exact": 2.0, "partial": 1.0, "irrelevant": 0.0}
RELEVANCE_THRESHOLD = 1.0
SOURCE_URL = "https://raw.githubusercontent.com/wayfair/WANDS/main/dataset/{name}"
REPOSITORY_URL = "https://github.com/wayfair/WANDS"
MANUAL_HINT = (
    f"download product.csv, query.csv and label.csv from the 'dataset' folder of {REPOSITORY_URL} "
    "(git clone works too) and put them in {where}"
)


def find_directory(directory: str | Path | None = None, data_dir: str | Path | None = None) -> Path:
    """An explicit WANDS directory, else ``<data_dir>/wands``; it must hold all three files."""
    where = Path(directory).expanduser() if directory else default_data_dir(data_dir) / "wands"
    missing = [name for name in FILES if not (where / name).is_file()]
    if missing:
        raise CatalogError(
            f"WANDS files missing in {where}: {', '.join(missing)}. Run "
            f"'leser catalog download wands --data-dir {where.parent}' or " + MANUAL_HINT.format(where=where)
        )
    return where


def load(directory: str | Path | None = None, data_dir: str | Path | None = None) -> Catalog:
    where = find_directory(directory, data_dir)
    products = [
        _product(path, line, row) for path, line, row in _rows(where / "product.csv", ("product_id", "product_name"))
    ]
    queries = {}
    for _path, _line, row in _rows(where / "query.csv", ("query_id", "query")):
        queries[row["query_id"].strip()] = row["query"]
    labels = []
    for path, line, row in _rows(where / "label.csv", ("query_id", "product_id", "label")):
        grade = GRADES.get(row["label"].strip().lower())
        if grade is None:
            raise CatalogFormatError(path, line, "a label of Exact, Partial or Irrelevant", shorten(row["label"]))
        query_id, product_id = row["query_id"].strip(), row["product_id"].strip()
        if query_id not in queries:
            raise CatalogFormatError(path, line, "a query_id listed in query.csv", shorten(query_id))
        labels.append((query_id, product_id, grade))
    known = {product.id for product in products}
    for query_id, product_id, _ in labels:
        if product_id not in known:
            raise CatalogError(
                f"{where / 'label.csv'}: product_id {product_id!r} (query {query_id}) "
                "is not in product.csv (is product.csv truncated?)"
            )
    return make_catalog("wands", products, queries, labels, RELEVANCE_THRESHOLD)


def _product(path: Path, line: int, row: dict[str, str]) -> Product:
    attributes = {}
    for pair in (row.get("product_features") or "").split("|"):
        name, colon, value = pair.partition(":")
        if colon and name.strip() and value.strip():
            attributes[name.strip()] = value.strip()
    hierarchy = row.get("category_hierarchy") or row.get("category hierarchy") or ""
    category = " > ".join(part.strip() for part in hierarchy.split("/") if part.strip())
    product_id = row["product_id"].strip()
    if not product_id:
        raise CatalogFormatError(path, line, "a non-empty product_id")
    return Product(
        product_id,
        row["product_name"],
        row.get("product_description") or "",
        category or (row.get("product_class") or ""),
        attributes,
    )


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[Path, int, dict[str, str]]]:
    """Rows of a WANDS tab-separated file with their line numbers; short rows are errors."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            missing = [column for column in required if column not in (reader.fieldnames or [])]
            if missing:
                raise CatalogFormatError(
                    path,
                    1,
                    f"a tab-separated header with {', '.join(required)}",
                    f"{reader.fieldnames} (missing {', '.join(missing)})",
                )
            for row in reader:
                if any(row.get(column) is None for column in required):
                    raise CatalogFormatError(
                        path, reader.line_num, f"values for {', '.join(required)}", "a short row (truncated file?)"
                    )
                yield path, reader.line_num, row
    except csv.Error as error:
        raise CatalogFormatError(path, None, "well-formed tab-separated values", str(error)) from None


def download(target: str | Path, progress: Callable[[str, int], None] | None = None, timeout: float = 30.0) -> Path:
    """Fetch the three WANDS files into ``target`` (atomically, one by one).

    Raises CatalogError with manual instructions when the network does not allow it.
    """
    target = Path(target).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (target / name).is_file() and (target / name).stat().st_size > 0:
            continue
        url = SOURCE_URL.format(name=name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, atomic_file(target / name, "wb") as out:
                received = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress(name, received)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise CatalogError(
                f"could not download {url} ({error}). Where the network does not allow it, "
                + MANUAL_HINT.format(where=target)
            ) from None
    return target
