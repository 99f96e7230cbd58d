"""Layer 1: catalogs. One data model, the generic directory format, and named sources.

``load_catalog("synthetic" | "homedepot" | "wands" | "path/to/dir")`` returns a Catalog.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from catalogs.errors import CatalogError, CatalogFormatError
from catalogs.generic import is_catalog_dir, read_catalog_dir, write_catalog_dir
from catalogs.model import Catalog, Product, Split, make_catalog, split_of
from catalogs.paths import cache_dir, data_dir
from catalogs.storage import cached_directory

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
    never serves a stale catalog) and the arguments; the directory is verified by content hash
    (``catalogs.storage.cached_directory``) and rebuilt when it fails.
    """
    from catalogs import synthetic

    source = hashlib.blake2b(Path(synthetic.__file__).read_bytes(), digest_size=4).hexdigest()
    key = f"synthetic-v{synthetic.GENERATOR_VERSION}-{source}-seed{seed}-p{n_products}-q{n_queries}"
    directory = cache_dir(cache) / "catalogs" / key
    generated: list[Catalog] = []

    def build(staging: Path) -> None:
        generated.append(synthetic.generate(seed=seed, n_products=n_products, n_queries=n_queries))
        write_catalog_dir(generated[0], staging)

    cached_directory(directory, {"generator": key}, build)
    return generated[0] if generated else read_catalog_dir(directory)
