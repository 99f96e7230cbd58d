"""The fuzz suite: arbitrary input on every public surface, so the hostile-probe findings stay fixed.

- ``leser score``: any bytes on any line; every non-blank line gives exactly one line of valid
  UTF-8 JSON, and the exit code is 1 exactly when some line was malformed.
- ``leser search``: any text and any ``-k``; valid JSON for 0 <= k <= 10,000, else exit code 2
  with a message, never a traceback.
- ``env.reset`` / ``env.step``: any object; a step returns a finite reward (the format penalty for
  anything that is not an action), reset takes a dict or refuses with a TypeError.
- Generic catalog directories with arbitrary broken lines: they load, or the error is a
  ``CatalogError`` naming the file (and the line, when it is one line's fault).
- Cache files truncated, byte-flipped or replaced: rebuilt to the same results, never trusted.

100 examples a property in CI (seconds); ``LESER_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` digs deeper.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agents.cli import app
from catalogs import CatalogError, CatalogFormatError, read_catalog_dir, synthetic_catalog, write_catalog_dir
from catalogs.storage import CACHE_MANIFEST
from leser_env.env import LeserEnv
from leser_env.relevance import RelevanceConfig, RelevanceModel, model_directory
from leser_env.search import SearchEngine

EXAMPLES = int(os.environ.get("LESER_FUZZ_EXAMPLES", "100"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

runner = CliRunner()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
score_records = st.fixed_dictionaries(
    {},
    optional={
        "query": st.text(max_size=60) | json_values,
        "expansions": st.lists(st.text(max_size=40), max_size=7) | json_values,
        "action": st.text(max_size=200) | json_values,
    },
)
score_lines = st.one_of(
    st.binary(max_size=120).map(lambda data: data.replace(b"\n", b" ")),
    score_records.map(lambda record: json.dumps(record).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.text(max_size=80).map(lambda text: text.replace("\n", " ").encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz-catalog") / "shop"
    write_catalog_dir(synthetic_catalog(seed=17, n_products=600, n_queries=120), directory)
    return directory


def is_blank(line: bytes) -> bool:
    try:
        return not line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


@fuzz
@given(lines=st.lists(score_lines, min_size=1, max_size=6))
def test_score_answers_every_line_with_one_valid_json_line(catalog_dir: Path, lines: list[bytes]) -> None:
    result = runner.invoke(app, ["score", "--catalog", str(catalog_dir), "--json"], input=b"\n".join(lines) + b"\n")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    outputs = [json.loads(line) for line in result.stdout_bytes.decode("utf-8").splitlines()]
    expected = [number for number, line in enumerate(lines, start=1) if not is_blank(line)]
    assert [record["line"] for record in outputs] == expected
    malformed = any(set(record) == {"line", "error"} for record in outputs)
    assert result.exit_code == (1 if malformed else 0)
    for record in outputs:
        if "reward" in record:
            assert math.isfinite(record["reward"])


@fuzz
@given(text=st.text(max_size=300), k=st.integers(min_value=-(2**70), max_value=2**70) | st.integers(-3, 10_003))
def test_search_takes_any_text_and_bounds_k(catalog_dir: Path, text: str, k: int) -> None:
    result = runner.invoke(app, ["search", "--catalog", str(catalog_dir), "--json", "-k", str(k), "--", text])
    assert "Traceback" not in result.output
    if 0 <= k <= 10_000:
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout_bytes.decode("utf-8"))
        assert len(answer["results"]) <= k
    else:
        assert result.exit_code == 2


@pytest.fixture(scope="module")
def env() -> LeserEnv:
    return LeserEnv(catalog="synthetic", split="validation")


anything = json_values | st.binary(max_size=40) | st.builds(object) | st.sets(st.integers(), max_size=3)


@fuzz
@given(action=anything | st.text(max_size=300) | st.lists(st.text(max_size=30), max_size=8))
def test_a_step_with_any_object_returns_a_finite_reward(env: LeserEnv, action: object) -> None:
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(action)
    assert math.isfinite(reward) and terminated and not truncated
    assert info["reward_breakdown"]["valid"] or reward == env.reward.config.format_penalty
    assert env.observation_space.contains(observation)


@fuzz
@given(options=anything | st.dictionaries(st.sampled_from(["query", "query_id", "other"]), anything, max_size=2))
def test_reset_takes_a_dict_or_refuses_with_a_type_error(env: LeserEnv, options: object) -> None:
    if options is not None and not isinstance(options, dict):
        with pytest.raises(TypeError, match="reset options must be a dict"):
            env.reset(options=options)
        return
    try:
        observation, _ = env.reset(options=options)
    except ValueError as error:  # an unknown query id
        assert "unknown query id" in str(error)
        return
    assert env.observation_space.contains(observation)


GOOD_PRODUCTS = [json.dumps({"id": f"p{i}", "title": f"product {i}"}) for i in range(3)]
broken_lines = st.one_of(
    st.text(max_size=60).map(lambda text: text.replace("\n", " ").replace("\r", " ")),
    json_values.map(json.dumps),
    score_records.map(json.dumps),
)


@fuzz
@given(
    file=st.sampled_from(["products.jsonl", "queries.tsv", "qrels.tsv", "catalog.json"]),
    line=broken_lines,
    position=st.integers(0, 3),
)
def test_a_broken_line_in_a_catalog_directory_is_named(tmp_path_factory, file: str, line: str, position: int) -> None:
    directory = tmp_path_factory.mktemp("broken")
    files = {
        "products.jsonl": list(GOOD_PRODUCTS),
        "queries.tsv": ["q1\tchair", "q2\tsofa"],
        "qrels.tsv": ["q1\t0\tp1\t2", "q2\t0\tp2\t1"],
        "catalog.json": ['{"name": "shop"}'],
    }
    files[file].insert(min(position, len(files[file])), line)
    for name, lines in files.items():
        (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        catalog = read_catalog_dir(directory)
    except CatalogFormatError as error:
        assert str(error).startswith(str(directory / file)), (str(error), file)
        if file != "catalog.json":
            assert error.line is not None
    except CatalogError as error:
        assert str(directory) in str(error)
    else:
        assert catalog.products


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory):
    catalog = synthetic_catalog(seed=3, n_products=400, n_queries=120)
    cache = tmp_path_factory.mktemp("fuzz-cache")
    engine = SearchEngine(catalog, cache=cache)
    model = RelevanceModel.load_or_train(catalog, cache=cache)
    rows = np.arange(len(catalog.products))
    expected = (engine.search("grey sofa", k=20), model.score("grey sofa", rows))
    return catalog, cache, expected


@settings(fuzz, max_examples=max(12, EXAMPLES // 8))  # each example rebuilds a cache
@given(
    which=st.sampled_from(["index", "relevance"]),
    damage=st.sampled_from(["truncate", "flip", "replace", "empty"]),
    choice=st.integers(0, 10_000),
    offset=st.floats(0, 1),
)
def test_a_damaged_cache_file_is_rebuilt_to_the_same_results(small_cache, which, damage, choice, offset) -> None:
    catalog, cache, (expected_hits, expected_scores) = small_cache
    directory = (
        SearchEngine(catalog, cache=cache).index_path
        if which == "index"
        else model_directory(catalog, RelevanceConfig(), cache)
    )
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    target = files[choice % len(files)]
    data = target.read_bytes()
    if damage == "truncate":
        changed = data[: int(len(data) * offset)]
    elif damage == "flip" and data:
        at = min(int(len(data) * offset), len(data) - 1)
        changed = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    elif damage == "replace":
        changed = b"\x00not this file\xff" * 3
    else:
        changed = b""
    replacement = target.with_name(target.name + ".new")
    replacement.write_bytes(changed)
    os.replace(replacement, target)  # a new file: a live memory map of the old one stays valid
    if changed == data and target.name != CACHE_MANIFEST:
        return
    engine = SearchEngine(catalog, cache=cache)
    model = RelevanceModel.load_or_train(catalog, cache=cache, features=None)
    assert engine.search("grey sofa", k=20) == expected_hits
    np.testing.assert_array_equal(model.score("grey sofa", np.arange(len(catalog.products))), expected_scores)
    if which == "index":
        assert engine.rebuilt
    else:
        assert not model.info["loaded_from_cache"]
    shutil.rmtree(directory.parent / f".{directory.name}.old", ignore_errors=True)
