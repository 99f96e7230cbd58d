"""The relevance model: vectorised features are right, it beats BM25 on held-out queries, its cache is honest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catalogs import Catalog, Split, synthetic_catalog
from leser_env.features import FEATURE_NAMES, FeatureExtractor
from leser_env.relevance import RelevanceConfig, RelevanceModel, labelled_pairs, model_directory


@pytest.fixture(scope="module")
def small() -> Catalog:
    return synthetic_catalog(seed=3, n_products=1500, n_queries=300)


def test_batched_features_equal_pair_by_pair(synthetic: Catalog) -> None:
    extractor = FeatureExtractor(synthetic)
    queries = ["grey couch", "chair for back pain", "lumbar support office chair", "", "🛋️ x" * 300]
    rng = np.random.default_rng(0)
    query_index = rng.integers(0, len(queries), 300)
    rows = rng.integers(0, len(synthetic.products), 300)
    batch = extractor.features(queries, query_index, rows)
    one_by_one = np.vstack([extractor.features([queries[q]], [0], [r]) for q, r in zip(query_index, rows, strict=True)])
    assert batch.shape == (300, len(FEATURE_NAMES))
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-5, atol=1e-6)
    assert np.isfinite(batch).all()


def test_features_see_what_a_person_sees(synthetic: Catalog) -> None:
    extractor = FeatureExtractor(synthetic)
    product = synthetic.products[0]
    names = list(FEATURE_NAMES)
    own_title, garbage = extractor.features([product.title, "qqqq zzzz"], [0, 1], [0, 0])
    assert own_title[names.index("coverage_title")] == 1.0 and own_title[names.index("char3_title")] > 0.99
    assert own_title[names.index("head_term_in_title")] == 1.0
    assert garbage[names.index("coverage_any")] == 0.0 and garbage[names.index("query_unknown_terms")] == 1.0
    misspelled = extractor.features([product.title.lower().replace("a", "aa", 1)], [0], [0])[0]
    assert misspelled[names.index("char3_title")] > 0.6  # character n-grams survive a typo


def test_scores_are_probabilities(small: Catalog) -> None:
    model = RelevanceModel.load_or_train(small)
    scores = model.score_pairs(["grey sofa", "", "x" * 5000], np.array([0, 1, 2, 0]), np.array([0, 1, 2, 3]))
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()
    assert model.score("grey sofa", []).shape == (0,)


def test_model_learns_from_train_queries_only(small: Catalog) -> None:
    model = RelevanceModel.load_or_train(small)
    train = labelled_pairs(small, Split.TRAIN)
    assert set(train.queries) <= {small.queries[q] for q in small.query_ids(Split.TRAIN)}
    assert model.info["train_queries"] == sum(1 for q in small.query_ids(Split.TRAIN) if small.qrels.get(q))


def test_gbdt_beats_bm25_on_synthetic_test_queries(synthetic: Catalog, tmp_path: Path) -> None:
    model = RelevanceModel.load_or_train(synthetic)
    report = model.evaluate(Split.TEST)
    ndcg = report["ndcg@10"]
    assert ndcg[report["reward_model"]] > ndcg["bm25"] + 0.05
    assert report["calibration_error"] < 0.1
    png = model.plot_feature_importance(tmp_path / "importance.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gbdt_beats_bm25_on_home_depot_test_queries(homedepot: Catalog) -> None:
    report = RelevanceModel.load_or_train(homedepot).evaluate(Split.TEST)
    ndcg = report["ndcg@10"]
    assert ndcg[report["reward_model"]] > ndcg["bm25"]
    assert report["queries"] > 1000


def test_cached_model_is_reused_and_stale_or_corrupt_ones_retrained(small: Catalog, tmp_path: Path) -> None:
    first = RelevanceModel.load_or_train(small, cache=tmp_path)
    assert not first.info["loaded_from_cache"]
    second = RelevanceModel.load_or_train(small, cache=tmp_path, features=first.features)
    assert second.info["loaded_from_cache"]
    rows = np.arange(50)
    np.testing.assert_array_equal(first.score("grey sofa", rows), second.score("grey sofa", rows))

    directory = model_directory(small, RelevanceConfig(), tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "feature_version": -1}))
    stale = RelevanceModel.load_or_train(small, cache=tmp_path, features=first.features)
    assert not stale.info["loaded_from_cache"]

    (directory / f"model-{stale.objective}.txt").write_text("tree\nnot a model")
    corrupt = RelevanceModel.load_or_train(small, cache=tmp_path, features=first.features)
    assert not corrupt.info["loaded_from_cache"]
    np.testing.assert_allclose(corrupt.score("grey sofa", rows), first.score("grey sofa", rows))


def test_lightgbm_messages_go_to_stderr_not_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    import lightgbm as lgb

    import leser_env.relevance  # noqa: F401  (registers the logger)

    features = np.zeros((20, 2))  # constant features: LightGBM warns that nothing can be split
    lgb.train({"objective": "regression", "verbose": 1}, lgb.Dataset(features, label=np.arange(20.0)), 2)
    captured = capfd.readouterr()
    assert "[LightGBM]" not in captured.out
    assert "[LightGBM] [Warning]" in captured.err


def test_the_relevance_features_and_the_engine_see_the_same_terms_of_any_query(small: Catalog, tmp_path) -> None:
    from leser_env.search import MAX_QUERY_TERMS, SearchEngine

    engine = SearchEngine(small, cache=tmp_path)
    extractor = FeatureExtractor(small)
    words = [f"w{i}x" for i in range(400)]  # 400 distinct terms in 2,400 characters: past both old caps
    for query in ["grey couch", "", " ".join(words), "chair " * 3000, "Ergonomic chairs, CHAIR!"]:
        assert extractor.analyze(query) == list(engine.analyze(query))
    assert len(engine.analyze(" ".join(words))) == MAX_QUERY_TERMS
