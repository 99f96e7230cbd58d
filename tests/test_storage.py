"""The one storage implementation: atomic writes, directory swaps that survive a kill, and caches
verified by content hash (the index, the relevance model, the converted LLM, the synthetic catalog)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from catalogs import Catalog, synthetic_catalog
from catalogs.storage import (
    CACHE_MANIFEST,
    atomic_file,
    cached_directory,
    file_digest,
    png_figure,
    recover_directory,
    replace_directory,
    write_json_atomically,
)
from leser_env.relevance import RelevanceConfig, RelevanceModel, model_directory
from leser_env.search import SearchEngine


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_json_atomically(target, {"step": 1, "name": "café"})
    write_json_atomically(tmp_path / "odd.json", {"query": "chair\ud800"})  # undecodable input survives
    assert json.loads((tmp_path / "odd.json").read_text()) == {"query": "chair\ud800"}
    (tmp_path / "odd.json").unlink()
    with pytest.raises(RuntimeError), atomic_file(target) as stream:
        stream.write('{"step": 2, "half')
        raise RuntimeError("killed mid-write")
    assert target.read_text(encoding="utf-8") == '{\n  "step": 1,\n  "name": "caf\\u00e9"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_png_figure_is_written_whole_or_not_at_all_and_always_closed(tmp_path: Path) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    target = tmp_path / "curve.png"
    with png_figure(target, ncols=2, figsize=(4, 2)) as (figure, axes):
        assert len(axes) == 2 and matplotlib.get_backend().lower() == "agg"  # headless
        axes[0].plot([0, 1], [1, 0])
        figure.suptitle("a curve")
    first = target.read_bytes()
    assert first.startswith(b"\x89PNG\r\n\x1a\n") and len(first) > 1000
    with pytest.raises(ValueError), png_figure(target, bbox_inches="tight") as (_, axis):
        axis.plot([0, 1], [0, 1])
        raise ValueError("a bad value while drawing")
    assert target.read_bytes() == first and [p.name for p in tmp_path.iterdir()] == ["curve.png"]
    assert plt.get_fignums() == []  # both figures closed, the failed one included


def test_a_directory_swap_interrupted_at_either_step_is_recovered(tmp_path: Path) -> None:
    def directory(name: str, content: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "weights").write_text(content)
        return path

    target = directory("policy", "old")
    aside = tmp_path / ".policy.old"
    # Killed after moving the old copy aside, before the new one arrived: the old one comes back.
    target.rename(aside)
    recover_directory(target)
    assert (target / "weights").read_text() == "old" and not aside.exists()
    # Killed after the new copy arrived, before the old one was removed: the new one stays.
    target.rename(aside)
    directory("policy", "new")
    recover_directory(target)
    assert (target / "weights").read_text() == "new" and not aside.exists()
    # The whole swap.
    replace_directory(directory("staging", "newer"), target)
    assert (target / "weights").read_text() == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def build_counted(calls: list[Path], payload: bytes = b"model bytes " * 100):
    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "model.bin").write_bytes(payload)
        (staging / "sub").mkdir()
        (staging / "sub" / "meta.json").write_text('{"calibration": [1.5, -0.25]}')

    return build


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip_byte", "flip_nested_byte", "extra_file", "missing_file", "no_manifest", "garbage_manifest"],
)
def test_a_damaged_cache_directory_is_rebuilt_never_trusted(tmp_path: Path, damage: str) -> None:
    cache, calls = tmp_path / "cache", []
    key = {"version": 1}
    assert cached_directory(cache, key, build_counted(calls)) is True
    assert cached_directory(cache, key, build_counted(calls)) is False and len(calls) == 1  # reused as is
    original = file_digest(cache / "model.bin")
    if damage == "truncate":
        (cache / "model.bin").write_bytes((cache / "model.bin").read_bytes()[:10])
    elif damage == "flip_byte":
        data = bytearray((cache / "model.bin").read_bytes())
        data[len(data) // 2] ^= 1
        (cache / "model.bin").write_bytes(bytes(data))
    elif damage == "flip_nested_byte":  # one digit of a calibration constant
        (cache / "sub" / "meta.json").write_text('{"calibration": [1.6, -0.25]}')
    elif damage == "extra_file":
        (cache / "stray.tmp").write_text("half-written")
    elif damage == "missing_file":
        (cache / "sub" / "meta.json").unlink()
    elif damage == "no_manifest":
        (cache / CACHE_MANIFEST).unlink()
    else:
        (cache / CACHE_MANIFEST).write_text("{ not json")
    assert cached_directory(cache, key, build_counted(calls)) is True and len(calls) == 2
    assert file_digest(cache / "model.bin") == original
    assert (cache / "sub" / "meta.json").read_text() == '{"calibration": [1.5, -0.25]}'


def test_a_cache_for_another_key_or_a_file_in_its_place_is_rebuilt(tmp_path: Path) -> None:
    cache, calls = tmp_path / "cache", []
    cached_directory(cache, {"version": 1}, build_counted(calls))
    assert cached_directory(cache, {"version": 2}, build_counted(calls)) is True and len(calls) == 2
    shutil.rmtree(cache)
    cache.write_text("a file where the cache directory belongs")
    assert cached_directory(cache, {"version": 2}, build_counted(calls)) is True
    assert cache.is_dir() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_failed_build_leaves_no_staging_directory(tmp_path: Path) -> None:
    def broken(staging: Path) -> None:
        (staging / "half").write_text("...")
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError, match="out of disk"):
        cached_directory(tmp_path / "cache", {"version": 1}, broken)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small() -> Catalog:
    return synthetic_catalog(seed=3, n_products=400, n_queries=120)


@pytest.mark.parametrize("damage", ["truncate_model", "flip_split_threshold", "change_calibration"])
def test_a_damaged_relevance_model_cache_is_retrained_to_the_same_scores(
    small: Catalog, tmp_path: Path, damage: str
) -> None:
    first = RelevanceModel.load_or_train(small, cache=tmp_path)
    rows = np.arange(len(small.products))
    expected = first.score("office chair", rows)
    directory = model_directory(small, RelevanceConfig(), tmp_path)
    model_file = directory / f"model-{first.objective}.txt"
    if damage == "truncate_model":  # used to abort the process (SIGABRT) inside LightGBM
        model_file.write_bytes(model_file.read_bytes()[:200])
    elif damage == "flip_split_threshold":  # used to load silently and change every score
        text = model_file.read_text()
        start = text.index("threshold=") + len("threshold=")
        digit = next(i for i in range(start, len(text)) if text[i].isdigit())
        model_file.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1 :])
    else:
        meta = directory / "meta.json"  # one digit of a calibration constant (if any), else of a validation score
        text = meta.read_text()
        digit = next(i for i in range(text.index('"calibration"'), len(text)) if text[i] in "123456789")
        meta.write_text(text[:digit] + str(int(text[digit]) % 9 + 1) + text[digit + 1 :])
    again = RelevanceModel.load_or_train(small, cache=tmp_path, features=first.features)
    assert not again.info["loaded_from_cache"]
    np.testing.assert_array_equal(again.score("office chair", rows), expected)


def test_an_index_path_that_is_a_file_is_rebuilt(tiny_catalog: Catalog, tmp_path: Path) -> None:
    engine = SearchEngine(tiny_catalog, cache=tmp_path)
    expected = engine.search("office chair", k=5)
    path = engine.index_path
    # Moved aside, not deleted: ``engine`` still holds the index open (its reader and meta.json
    # watcher thread), and one CI run saw a file appear in the directory mid-rmtree ("Directory
    # not empty").
    path.rename(tmp_path / "the-old-index")
    path.write_text("not an index")
    reopened = SearchEngine(tiny_catalog, cache=tmp_path)
    assert reopened.rebuilt and reopened.search("office chair", k=5) == expected


def test_a_damaged_synthetic_catalog_cache_is_regenerated(tmp_path: Path) -> None:
    first = synthetic_catalog(seed=3, n_products=300, n_queries=40, cache=tmp_path)
    cached = next((tmp_path / "catalogs").iterdir())
    qrels = cached / "qrels.tsv"
    qrels.write_text(qrels.read_text().replace("\t3\n", "\t2\n", 1))  # still parses, different labels
    again = synthetic_catalog(seed=3, n_products=300, n_queries=40, cache=tmp_path)
    assert again.content_hash == first.content_hash


def test_a_damaged_converted_model_is_converted_again() -> None:
    from agents.model_loading import default_model_path

    path = default_model_path()  # the test session's own cache (conftest): converted once
    weights = path / "model.safetensors"
    original = file_digest(weights)
    with open(weights, "r+b") as stream:  # one byte deep inside a tensor: safetensors would load it silently
        stream.seek(os.path.getsize(weights) // 2)
        byte = stream.read(1)
        stream.seek(-1, os.SEEK_CUR)
        stream.write(bytes([byte[0] ^ 0x10]))
    assert file_digest(weights) != original
    assert file_digest(default_model_path() / "model.safetensors") == original


def test_atomic_files_get_the_usual_permissions(tmp_path: Path) -> None:
    from catalogs.storage import DIRECTORY_MODE, FILE_MODE

    write_json_atomically(tmp_path / "report.json", {"a": 1})
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == FILE_MODE  # not mkstemp's 0600
    cached_directory(tmp_path / "cache", {"v": 1}, build_counted([]))
    assert (tmp_path / "cache").stat().st_mode & 0o777 == DIRECTORY_MODE  # not mkdtemp's 0700
