"""Shared fixtures: an isolated cache per test session, the real data directory, small catalogs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalogs import Catalog, Product, data_dir, load_catalog, make_catalog, synthetic_catalog

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session builds its own indexes and models: nothing leaks in from a user's cache."""
    path = tmp_path_factory.mktemp("leser-cache")
    previous = os.environ.get("LESER_CACHE_DIR")
    os.environ["LESER_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("LESER_CACHE_DIR", None)
    else:
        os.environ["LESER_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    path = data_dir()
    if not (path / "homedepot" / "train.csv.zip").is_file() and not (path / "homedepot" / "train.csv").is_file():
        pytest.skip(f"real data not found in {path} (set LESER_DATA_DIR to the shared data directory)")
    return path


@pytest.fixture(scope="session")
def homedepot(real_data_dir: Path) -> Catalog:
    return load_catalog("homedepot", real_data_dir)


@pytest.fixture(scope="session")
def synthetic() -> Catalog:
    return synthetic_catalog()


@pytest.fixture(scope="session")
def tiny_catalog() -> Catalog:
    """A hand-written catalog nobody tuned anything for."""
    products = [
        Product(
            "p1",
            "Ergonomic Office Chair",
            "Mesh back with lumbar support.",
            "Furniture > Chairs",
            {"colour": "black", "material": "mesh"},
        ),
        Product(
            "p2",
            "Leather Office Chair",
            "Padded armrests.",
            "Furniture > Chairs",
            {"colour": "brown", "material": "leather"},
        ),
        Product("p3", "Three Seat Sofa", "Stain resistant fabric.", "Furniture > Sofas", {"colour": "grey"}),
        Product("p4", "Standing Desk", "Height adjustable frame.", "Furniture > Desks", {"material": "oak"}),
        Product("p5", "Table Lamp", "", "Lighting", {}),
    ]
    queries = {"q1": "chair for back pain", "q2": "couch", "q3": "desk i can stand at"}
    labels = [("q1", "p1", 3), ("q1", "p2", 1), ("q1", "p5", 0), ("q2", "p3", 2), ("q3", "p4", 3)]
    return make_catalog("tiny", products, queries, labels)
