"""The relevance model: LightGBM on human labels, as the paper's production reward judges results.

Choices, and why:
- Two GBDTs are trained on the same features: a pointwise one (LightGBM's ``cross_entropy``
  objective on grades rescaled to [0, 1], whose output is already in [0, 1]) and a
  LambdaRank one (which orders products but whose raw scores mean nothing absolute). The
  one with the higher nDCG@10 on *validation* queries becomes the reward's model; a
  LambdaRank winner is calibrated into [0, 1] by a sigmoid fitted on validation pairs
  (Platt scaling: monotone, so its ranking is kept). The reward averages scores and
  subtracts the original query's, so it needs scores on one [0, 1] scale, judged against
  the same query. Both models' test numbers are reported by ``leser relevance evaluate``.
  (Measured: LambdaRank wins validation on both the synthetic catalog, clearly, and Home
  Depot, by a hair; on Home Depot's test split the pointwise model is a hair ahead. See
  the README.)
- Shoppers' words and the catalog's differ ("back pain" vs "lumbar support"); lexical
  features cannot see that, so the features include term associations learned from the
  train labels, cross-fitted for the training pairs (``leser_env.features``).
- Negatives: human-labelled products are mostly candidates some engine already retrieved
  (Home Depot's lowest grade is "1"). The reward will also see products an expansion drags
  in from anywhere, so each train query also gets a few random catalog products labelled 0.
- Only train-split queries are learned from; validation queries drive early stopping,
  model selection and calibration; test queries are only ever evaluated.
- Cached under the cache directory, keyed by the catalog's content hash, the feature
  version and the training configuration, and verified by content hash before use
  (``catalogs.storage.cached_directory``): a missing, mismatched, truncated or altered model is
  retrained, never used.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
from scipy.optimize import minimize

from catalogs import Catalog, Split, cache_dir
from catalogs.storage import cached_directory, png_figure, write_json_atomically
from leser_env.features import FEATURE_NAMES, FEATURE_VERSION, FeatureExtractor, fold_of
from leser_env.metrics import ndcg_at_k

MODEL_VERSION = 2


class _StderrLog:
    """LightGBM's messages, its C++ warnings included, go to stderr: never into a command's stdout,
    which may be JSON for another program."""

    def info(self, message: str) -> None:
        print(message, file=sys.stderr)

    def warning(self, message: str) -> None:
        print(message, file=sys.stderr)


lgb.register_logger(_StderrLog())


@dataclass(frozen=True)
class RelevanceConfig:
    negatives_per_query: int = 3
    num_leaves: int = 31
    learning_rate: float = 0.05
    max_rounds: int = 600
    early_stopping_rounds: int = 40
    min_data_in_leaf: int = 20
    seed: int = 0

    def key(self) -> str:
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=4).hexdigest()


@dataclass
class LabelledPairs:
    """Training or evaluation pairs: query texts, per-pair query index and product row, grades."""

    queries: list[str]
    query_ids: list[str]
    query_index: np.ndarray
    rows: np.ndarray
    target: np.ndarray  # grade rescaled to [0, 1]
    groups: np.ndarray  # pairs per query, in order (for ranking objectives)


def grade_range(catalog: Catalog) -> tuple[float, float]:
    grades = [grade for labels in catalog.qrels.values() for grade in labels.values()]
    if not grades:
        raise ValueError(f"catalog {catalog.name!r} has no labels to learn relevance from")
    low, high = min(grades), max(grades)
    return low, (high if high > low else low + 1.0)


def labelled_pairs(catalog: Catalog, split: Split | str, negatives_per_query: int = 0, seed: int = 0) -> LabelledPairs:
    """All labelled pairs of a split's queries, plus random unlabelled products as grade-0 negatives."""
    low, high = grade_range(catalog)
    rng = np.random.default_rng(seed)
    queries, query_ids, query_index, rows, target, groups = [], [], [], [], [], []
    n_products = len(catalog.products)
    for query_id in catalog.query_ids(split):
        labels = catalog.qrels.get(query_id)
        if not labels:
            continue
        position = len(queries)
        queries.append(catalog.queries[query_id])
        query_ids.append(query_id)
        labelled_rows = [catalog.row_of[pid] for pid in labels]
        negatives: list[int] = []
        if negatives_per_query and n_products > len(labels):
            taken = set(labelled_rows)
            for row in rng.integers(0, n_products, size=negatives_per_query * 2).tolist():
                if row not in taken and len(negatives) < negatives_per_query:
                    taken.add(row)
                    negatives.append(row)
        rows.extend(labelled_rows + negatives)
        target.extend([(grade - low) / (high - low) for grade in labels.values()] + [0.0] * len(negatives))
        query_index.extend([position] * (len(labelled_rows) + len(negatives)))
        groups.append(len(labelled_rows) + len(negatives))
    return LabelledPairs(
        queries,
        query_ids,
        np.array(query_index, dtype=np.int64),
        np.array(rows, dtype=np.int64),
        np.clip(np.array(target, dtype=np.float32), 0.0, 1.0),
        np.array(groups, dtype=np.int64),
    )


OBJECTIVES = ("cross_entropy", "lambdarank")


class RelevanceModel:
    """Scores (query, product) pairs in [0, 1]. ``RelevanceModel.load_or_train(catalog)`` to get one."""

    def __init__(
        self, catalog: Catalog, features: FeatureExtractor, boosters: dict[str, lgb.Booster], info: dict
    ) -> None:
        self.catalog = catalog
        self.features = features
        self.boosters = boosters
        self.info = info
        self.objective = info["objective"]

    # -- scoring ------------------------------------------------------------------------

    def score_pairs(self, queries: list[str], query_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Relevance in [0, 1] of each (queries[query_index[i]], product row rows[i]) pair."""
        matrix = self.features.features(queries, query_index, rows)
        if len(matrix) == 0:
            return np.zeros(0, dtype=np.float64)
        return self._predict(self.objective, matrix)

    def score(self, query: str, rows: list[int] | np.ndarray) -> np.ndarray:
        """Relevance of several products (by row) to one query."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.score_pairs([query], np.zeros(len(rows), dtype=np.int64), rows)

    def _predict(self, objective: str, matrix: np.ndarray) -> np.ndarray:
        raw = self.boosters[objective].predict(matrix, num_threads=1)
        calibration = self.info.get("calibration", {}).get(objective)
        if calibration is not None:
            raw = _sigmoid(calibration[0] * raw + calibration[1])
        return np.clip(raw, 0.0, 1.0)

    # -- building -----------------------------------------------------------------------

    @classmethod
    def load_or_train(
        cls,
        catalog: Catalog,
        cache: str | Path | None = None,
        config: RelevanceConfig | None = None,
        features: FeatureExtractor | None = None,
        retrain: bool = False,
    ) -> RelevanceModel:
        config = config or RelevanceConfig()
        directory = model_directory(catalog, config, cache)
        features = features or FeatureExtractor(catalog)
        key = _cache_key(catalog, config)
        trained: list[tuple[dict[str, lgb.Booster], dict]] = []

        def build(staging: Path) -> None:
            trained.append(train_models(catalog, features, config))
            _save(staging, *trained[0])

        if retrain:
            shutil.rmtree(directory, ignore_errors=True)
        cached_directory(directory, key, build)  # verified by content hash, rebuilt when it fails
        loaded = trained[0] if trained else _load(directory, key)
        if loaded is None:  # sound bytes this LightGBM cannot use: train again
            shutil.rmtree(directory, ignore_errors=True)
            cached_directory(directory, key, build)
            loaded = trained[0]
        boosters, info = loaded
        return cls(catalog, features, boosters, {**info, "loaded_from_cache": not trained})

    # -- evaluation ---------------------------------------------------------------------

    def evaluate(self, split: Split | str = Split.TEST) -> dict:
        """nDCG@10 over each query's labelled products: the reward's model, the other GBDT, BM25 alone."""
        pairs = labelled_pairs(self.catalog, split)
        if not len(pairs.rows):
            raise ValueError(f"no labelled {split} queries in catalog {self.catalog.name!r}")
        matrix = self.features.features(pairs.queries, pairs.query_index, pairs.rows)
        orderings = {f"gbdt_{objective}": self._predict(objective, matrix) for objective in self.boosters}
        orderings["bm25"] = matrix[:, FEATURE_NAMES.index("bm25_boosted")]
        ndcg = {name: mean_ndcg(self.catalog, pairs, scores) for name, scores in orderings.items()}
        with_negatives = labelled_pairs(self.catalog, split, self.info["config"]["negatives_per_query"], seed=7)
        prediction = self.score_pairs(with_negatives.queries, with_negatives.query_index, with_negatives.rows)
        return {
            "catalog": self.catalog.name,
            "split": str(Split(split)),
            "queries": len(pairs.groups),
            "pairs": len(pairs.rows),
            "reward_model": f"gbdt_{self.objective}",
            "ndcg@10": ndcg,
            "calibration_error": calibration_error(prediction, with_negatives.target),
            "feature_importance": self.feature_importance(),
            "model": {key: value for key, value in self.info.items() if key != "feature_names"},
        }

    def feature_importance(self) -> dict[str, float]:
        gains = self.boosters[self.objective].feature_importance(importance_type="gain")
        total = float(gains.sum()) or 1.0
        return {name: float(gain) / total for name, gain in zip(FEATURE_NAMES, gains, strict=True)}

    def plot_feature_importance(self, path: str | Path) -> Path:
        """A PNG of ``feature_importance``, largest at the top."""
        importance = sorted(self.feature_importance().items(), key=lambda item: item[1])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with png_figure(path, dpi=120, figsize=(7, 6)) as (_, axis):
            axis.barh([name for name, _ in importance], [value for _, value in importance], color="#4472c4")
            axis.set_xlabel("share of total split gain")
            axis.set_title(f"relevance model ({self.objective}) features: {self.catalog.name}")
        return path


def mean_ndcg(catalog: Catalog, pairs: LabelledPairs, scores: np.ndarray, k: int = 10) -> float:
    """Mean nDCG@k of ordering each query's pairs by score, gains from the labels (lowest grade = 0)."""
    low, high = grade_range(catalog)
    values, start = [], 0
    for group_size in pairs.groups:
        stop = start + group_size
        ids = [catalog.products[row].id for row in pairs.rows[start:stop]]
        gains = {pid: float(value) * (high - low) for pid, value in zip(ids, pairs.target[start:stop], strict=True)}
        order = np.argsort(-scores[start:stop], kind="stable")
        values.append(ndcg_at_k([ids[i] for i in order], gains, k))
        start = stop
    return float(np.mean(values)) if values else 0.0


def calibration_error(prediction: np.ndarray, target: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean prediction - mean label| per score bin, weighted by bin size."""
    index = np.minimum((prediction * bins).astype(int), bins - 1)
    gap = sum(
        abs(prediction[index == b].mean() - target[index == b].mean()) * (index == b).sum()
        for b in range(bins)
        if (index == b).any()
    )
    return float(gap / max(len(prediction), 1))


def model_directory(catalog: Catalog, config: RelevanceConfig, cache: str | Path | None = None) -> Path:
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in catalog.name)[:40]
    return (
        cache_dir(cache)
        / "relevance"
        / f"{name}-{catalog.content_hash[:20]}-f{FEATURE_VERSION}-m{MODEL_VERSION}-{config.key()}"
    )


def train_models(
    catalog: Catalog, features: FeatureExtractor, config: RelevanceConfig
) -> tuple[dict[str, lgb.Booster], dict]:
    """Train both objectives, pick the one with the better validation nDCG@10, calibrate a ranker."""
    boosters = {objective: train_booster(catalog, features, config, objective) for objective in OBJECTIVES}
    validation = labelled_pairs(catalog, Split.VALIDATION)
    calibration_pairs = labelled_pairs(catalog, Split.VALIDATION, config.negatives_per_query, config.seed + 1)
    if not len(validation.rows):  # nothing to select or calibrate on: the pointwise model needs neither
        validation_ndcg, chosen, calibration = {}, "cross_entropy", {}
    else:
        matrix = features.features(validation.queries, validation.query_index, validation.rows)
        raw = features.features(calibration_pairs.queries, calibration_pairs.query_index, calibration_pairs.rows)
        calibration = {"lambdarank": fit_sigmoid(boosters["lambdarank"].predict(raw), calibration_pairs.target)}
        validation_ndcg = {
            objective: mean_ndcg(catalog, validation, booster.predict(matrix))
            for objective, booster in boosters.items()
        }
        chosen = max(OBJECTIVES, key=lambda objective: (validation_ndcg[objective], objective == "cross_entropy"))
    train = labelled_pairs(catalog, Split.TRAIN, config.negatives_per_query, config.seed)
    info = {
        "objective": chosen,
        "validation_ndcg@10": validation_ndcg,
        "calibration": calibration,
        "feature_version": FEATURE_VERSION,
        "model_version": MODEL_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "catalog": catalog.name,
        "content_hash": catalog.content_hash,
        "config": asdict(config),
        "train_pairs": len(train.rows),
        "train_queries": len(train.groups),
        "trees": {objective: booster.current_iteration() for objective, booster in boosters.items()},
        "lightgbm_version": lgb.__version__,
    }
    return boosters, info


def fit_sigmoid(raw: np.ndarray, target: np.ndarray) -> list[float]:
    """Platt scaling: a, b minimising the cross-entropy of sigmoid(a * raw + b) against [0, 1] targets."""
    target = np.clip(target, 0.0, 1.0)

    def loss(params: np.ndarray) -> float:
        probability = np.clip(_sigmoid(params[0] * raw + params[1]), 1e-7, 1 - 1e-7)
        return float(-np.mean(target * np.log(probability) + (1 - target) * np.log(1 - probability)))

    result = minimize(loss, x0=np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9})
    return [float(result.x[0]), float(result.x[1])]


def pair_features(features: FeatureExtractor, pairs: LabelledPairs, cross_fit: bool = False) -> np.ndarray:
    """Features of labelled pairs; with ``cross_fit`` (train pairs) each query's associations are
    the ones fitted on the other half of the train queries, never on itself."""
    if not cross_fit:
        return features.features(pairs.queries, pairs.query_index, pairs.rows)
    folds = np.array([fold_of(query_id) for query_id in pairs.query_ids], dtype=np.int64)[pairs.query_index]
    matrix = np.empty((len(pairs.rows), len(FEATURE_NAMES)), dtype=np.float32)
    for fold in (0, 1):
        mask = folds == fold
        matrix[mask] = features.features(pairs.queries, pairs.query_index[mask], pairs.rows[mask], exclude_fold=fold)
    return matrix


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -60, 60)))


def train_booster(
    catalog: Catalog, features: FeatureExtractor, config: RelevanceConfig, objective: str = "cross_entropy"
) -> lgb.Booster:
    """One GBDT on train-split pairs (plus random negatives), early-stopped on validation pairs."""
    train = labelled_pairs(catalog, Split.TRAIN, config.negatives_per_query, config.seed)
    valid = labelled_pairs(catalog, Split.VALIDATION, config.negatives_per_query, config.seed + 1)
    if not len(train.rows):
        raise ValueError(f"catalog {catalog.name!r} has no labelled train queries to learn relevance from")
    ranking = objective == "lambdarank"
    params = {
        "objective": objective,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "seed": config.seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 2,
        "verbosity": -1,
    }
    if ranking:
        params.update({"metric": "ndcg", "eval_at": [10]})

    def dataset(pairs: LabelledPairs, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        matrix = pair_features(features, pairs, cross_fit=reference is None)
        label = np.rint(pairs.target * 4).astype(int) if ranking else pairs.target
        return lgb.Dataset(
            matrix,
            label=label,
            group=pairs.groups if ranking else None,
            feature_name=list(FEATURE_NAMES),
            reference=reference,
            free_raw_data=True,
        )

    train_set = dataset(train)
    callbacks, valid_sets = [], []
    if len(valid.rows):
        valid_sets = [dataset(valid, train_set)]
        callbacks.append(lgb.early_stopping(config.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        params, train_set, num_boost_round=config.max_rounds, valid_sets=valid_sets, callbacks=callbacks
    )
    if booster.best_iteration:
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    return booster


def _cache_key(catalog: Catalog, config: RelevanceConfig) -> dict:
    return {
        "feature_version": FEATURE_VERSION,
        "model_version": MODEL_VERSION,
        "content_hash": catalog.content_hash,
        "config": asdict(config),
        "feature_names": list(FEATURE_NAMES),
    }


def _load(directory: Path, key: dict) -> tuple[dict[str, lgb.Booster], dict] | None:
    """The cached models (their directory already verified by content hash) if LightGBM reads them."""
    try:
        info = json.loads((directory / "meta.json").read_text())
        if any(info.get(name) != value for name, value in key.items()) or info.get("objective") not in OBJECTIVES:
            return None
        boosters = {
            objective: lgb.Booster(model_file=str(directory / f"model-{objective}.txt")) for objective in OBJECTIVES
        }
        if any(booster.feature_name() != list(FEATURE_NAMES) for booster in boosters.values()):
            return None
        return boosters, info
    except (OSError, ValueError, KeyError, TypeError, lgb.basic.LightGBMError):
        return None


def _save(directory: Path, boosters: dict[str, lgb.Booster], info: dict) -> None:
    """Models and their description into ``directory`` (a staging directory ``cached_directory`` seals)."""
    for objective, booster in boosters.items():
        booster.save_model(str(directory / f"model-{objective}.txt"))
    write_json_atomically(directory / "meta.json", info)
