"""Loader for the Kaggle Home Depot Product Search Relevance data.

Reads ``train.csv`` (or ``train.csv.zip`` holding it; latin-1) with columns id,
product_uid, product_title, search_term, relevance, plus, when present beside it, the
competition's ``product_descriptions.csv`` (product_uid, product_description) and
``attributes.csv`` (product_uid, name, value). The grade is the raters' mean on 1..3;
a product is relevant when that mean is above 2 (most raters said more than "partly").
Query ids are a stable hash of the query text, so they survive adding test.csv rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from catalogs.errors import CatalogError, CatalogFormatError, shorten
from catalogs.model import Catalog, Product, make_catalog
from catalogs.paths import data_dir as default_data_dir

RELEVANCE_THRESHOLD = 2.0
TRAIN_COLUMNS = ("product_uid", "product_title", "search_term", "relevance")
DOWNLOAD_HINT = (
    "download train.csv.zip from the Kaggle competition 'home-depot-product-search-relevance' "
    "(kaggle competitions download -c home-depot-product-search-relevance) and put it in {where}"
)


def query_id_for(text: str) -> str:
    return "hd-" + hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()


def find_directory(data_dir: str | Path | None = None) -> Path:
    """The Home Depot directory: ``<data_dir>/homedepot`` or ``data_dir`` itself if it holds the files."""
    base = default_data_dir(data_dir)
    for candidate in (base / "homedepot", base):
        if (candidate / "train.csv").is_file() or (candidate / "train.csv.zip").is_file():
            return candidate
    raise CatalogError(
        f"Home Depot data not found in {base / 'homedepot'}: "
        + DOWNLOAD_HINT.format(where=base / "homedepot")
        + " (or set LESER_DATA_DIR / pass --data-dir)"
    )


def load(data_dir: str | Path | None = None) -> Catalog:
    directory = find_directory(data_dir)
    products: dict[str, Product] = {}
    queries: dict[str, str] = {}
    labels: list[tuple[str, str, float]] = []
    with _open_table(directory, "train.csv", "latin-1") as (path, rows):
        _require_columns(path, rows.fieldnames, TRAIN_COLUMNS)
        for row in rows:
            line = rows.line_num
            product_id = _field(path, line, row, "product_uid")
            query_text = _field(path, line, row, "search_term")
            grade_text = _field(path, line, row, "relevance")
            try:
                grade = float(grade_text)
            except ValueError:
                raise CatalogFormatError(path, line, "a numeric 'relevance' (1..3)", shorten(grade_text)) from None
            if not math.isfinite(grade):
                raise CatalogFormatError(path, line, "a finite 'relevance' (1..3)", shorten(grade_text))
            if product_id not in products:
                products[product_id] = Product(product_id, _field(path, line, row, "product_title"))
            query_id = query_id_for(query_text)
            queries.setdefault(query_id, query_text)
            labels.append((query_id, product_id, grade))
    if not labels:
        raise CatalogFormatError(directory / "train.csv", None, "at least one labelled row")
    descriptions = _read_descriptions(directory)
    attributes = _read_attributes(directory)
    if descriptions or attributes:
        products = {
            pid: Product(pid, product.title, descriptions.get(pid, ""), "", attributes.get(pid, {}))
            for pid, product in products.items()
        }
    return make_catalog("homedepot", products.values(), queries, labels, RELEVANCE_THRESHOLD)


def _read_descriptions(directory: Path) -> dict[str, str]:
    if not _exists(directory, "product_descriptions.csv"):
        return {}
    descriptions = {}
    with _open_table(directory, "product_descriptions.csv", "latin-1") as (path, rows):
        _require_columns(path, rows.fieldnames, ("product_uid", "product_description"))
        for row in rows:
            descriptions[_field(path, rows.line_num, row, "product_uid")] = row.get("product_description") or ""
    return descriptions


def _read_attributes(directory: Path) -> dict[str, dict[str, str]]:
    """attributes.csv rows (product_uid, name, value); bullet points are kept as attributes too."""
    if not _exists(directory, "attributes.csv"):
        return {}
    attributes: dict[str, dict[str, str]] = {}
    with _open_table(directory, "attributes.csv", "latin-1") as (path, rows):
        _require_columns(path, rows.fieldnames, ("product_uid", "name", "value"))
        for row in rows:
            product_id = (row.get("product_uid") or "").strip()
            if not product_id:
                continue  # the competition file has blank separator rows
            if product_id.endswith(".0"):
                product_id = product_id[:-2]
            name, value = (row.get("name") or "").strip(), (row.get("value") or "").strip()
            if name and value:
                attributes.setdefault(product_id, {})[name] = value
    return attributes


def _exists(directory: Path, name: str) -> bool:
    return (directory / name).is_file() or (directory / f"{name}.zip").is_file()


@contextmanager
def _open_table(directory: Path, name: str, encoding: str) -> Iterator[tuple[Path, csv.DictReader]]:
    """Open ``name`` or ``name.zip`` as a csv.DictReader; broken archives become CatalogErrors."""
    plain, zipped = directory / name, directory / f"{name}.zip"
    source = plain if plain.is_file() else zipped
    try:
        if source is plain:
            with open(plain, encoding=encoding, newline="") as handle:
                yield plain, csv.DictReader(handle)
            return
        with zipfile.ZipFile(zipped) as archive:
            members = [m for m in archive.namelist() if Path(m).name == name]
            if not members:
                raise CatalogFormatError(
                    zipped, None, f"an archive holding {name}", f"members {archive.namelist()[:5]}"
                )
            with archive.open(members[0]) as raw:
                yield zipped, csv.DictReader(io.TextIOWrapper(raw, encoding=encoding, newline=""))
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as error:
        raise CatalogFormatError(source, None, "a complete zip archive", f"{type(error).__name__}: {error}") from None
    except csv.Error as error:
        raise CatalogFormatError(source, None, "well-formed CSV", str(error)) from None


def _require_columns(path: Path, found: list[str] | None, required: tuple[str, ...]) -> None:
    missing = [column for column in required if column not in (found or [])]
    if missing:
        raise CatalogFormatError(
            path, 1, f"a header with columns {', '.join(required)}", f"columns {found} (missing {', '.join(missing)})"
        )


def _field(path: Path, line: int, row: dict, column: str) -> str:
    value = row.get(column)
    if value is None:
        raise CatalogFormatError(path, line, f"a value in column '{column}'", "a short row (truncated file?)")
    return value
