"""Layer 1: catalogs. One data model, the generic directory format, and named sources.

``load_catalog("synthetic" | "homedepot" | "wands" | "path/to/dir")`` returns a Catalog.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from catalogs.errors import CatalogError, CatalogFormatError
from catalogs.generic import is_catalog_dir, read_catalog_dir, write_catalog_dir
from catalogs.model import Catalog, Product, Split, make_catalog, split_of
from catalogs.paths import cache_dir, data_dir

NAMED_CATALOGS = ("synthetic", "homedepot", "wands")

__all__ = [
    "NAMED_CATALOGS",
    "Catalog",
    "CatalogError",
    "CatalogFormatError",
    "Product",
    "Split",
    "cache_dir",
    "data_dir",
    "is_catalog_dir",
    "load_catalog",
    "make_catalog",
    "read_catalog_dir",
    "split_of",
    "synthetic_catalog",
    "write_catalog_dir",
]


def load_catalog(spec: str | Path, data_dir: str | Path | None = None) -> Catalog:
    """A catalog by name (synthetic, homedepot, wands) or by generic-format directory.

    Loaded once per process: repeated calls with the same arguments return the same object.
    """
    return _load(str(spec), str(data_dir) if data_dir else None)


@lru_cache(maxsize=8)
def _load(spec: str, data_dir_text: str | None) -> Catalog:
    from catalogs import homedepot, wands

    if spec == "synthetic":
        return synthetic_catalog()
    if spec == "homedepot":
        return homedepot.load(data_dir_text)
    if spec == "wands":
        return wands.load(data_dir=data_dir_text)
    path = Path(spec).expanduser()
    if path.is_dir() and all((path / name).is_file() for name in wands.FILES):
        return wands.load(directory=path)
    if path.exists():
        return read_catalog_dir(path)
    raise CatalogError(
        f"unknown catalog {spec!r}: use one of {', '.join(NAMED_CATALOGS)} or a directory in the "
        "generic format (products.jsonl, queries.tsv, qrels.tsv)"
    )


def synthetic_catalog(
    seed: int = 0, n_products: int = 10_000, n_queries: int = 2_000, cache: str | Path | None = None
) -> Catalog:
    """The embedded default catalog, generated once and cached on disk in the generic format.

    The cache key holds the generator version, a hash of its source (so an edited generator
    never serves a stale catalog) and the arguments; an unreadable or altered cache is rebuilt.
    """
    from catalogs import synthetic

    source = hashlib.blake2b(Path(synthetic.__file__).read_bytes(), digest_size=4).hexdigest()
    key = f"synthetic-v{synthetic.GENERATOR_VERSION}-{source}-seed{seed}-p{n_products}-q{n_queries}"
    directory = cache_dir(cache) / "catalogs" / key
    stamp = directory / "content_hash"
    if is_catalog_dir(directory) and stamp.is_file():
        try:
            catalog = read_catalog_dir(directory)
            if catalog.content_hash == stamp.read_text().strip():
                return catalog
        except CatalogError:
            pass
    shutil.rmtree(directory, ignore_errors=True)
    catalog = synthetic.generate(seed=seed, n_products=n_products, n_queries=n_queries)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{key}."))
    write_catalog_dir(catalog, staging)
    (staging / "content_hash").write_text(catalog.content_hash + "\n")
    try:
        staging.rename(directory)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return catalog
