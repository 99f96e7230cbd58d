"""Query-product features for the relevance model, computed for whole batches of pairs at once.

Products are turned into sparse matrices once (per field: BM25 weights and term presence;
character 3-gram TF-IDF vectors); a batch of (query, product) pairs is then a handful of
sparse row gathers and element-wise products, with no Python loop per pair.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import scipy.sparse as sp

from catalogs import Catalog, Split
from leser_env.search import FIELDS, FieldBoosts, build_analyzer, normalize_text, query_terms

FEATURE_VERSION = 3  # bump whenever a feature changes: cached models are then retrained
ASSOCIATION_MIN_COUNT = 2  # a (query term, product term) pair must co-occur in this many relevant train pairs

BM25_K1, BM25_B = 1.2, 0.75

# One line each: what the feature measures.
FEATURE_NAMES = (
    *(f"bm25_{field}" for field in FIELDS),  # BM25 of the query against the field
    "bm25_boosted",  # BM25 summed over fields with the search engine's boosts
    *(f"coverage_{field}" for field in FIELDS),  # share of query terms found in the field
    "coverage_any",  # share of query terms found in any field
    "idf_coverage_any",  # IDF-weighted share of query terms found in any field (rare terms count more)
    "title_precision",  # share of the title's distinct terms that the query contains
    "head_term_in_title",  # the query's last term (usually the product noun) occurs in the title
    "head_term_anywhere",  # the query's last term occurs in any field
    "association",  # learned shopper-to-catalog wording: PMI of (query term, product term) in relevant train pairs
    "association_hits",  # how many such associated product terms the product has, per query term
    "char3_title",  # cosine of character 3-gram TF-IDF vectors, query vs title (robust to misspellings)
    "char3_all",  # the same against title + category + attributes
    "query_terms",  # number of distinct analysed query terms
    "query_unknown_terms",  # share of query terms the catalog never uses
    "query_chars",  # query length in characters (capped at 200)
    "title_terms",  # number of distinct title terms
    "description_terms_log",  # log(1 + distinct description terms): how much the product says
)


class FeatureExtractor:
    """Features for (query text, product row) pairs of one catalog.

    All sparse product-side statistics sit side by side in one wide matrix (one block of
    columns each); a query is encoded once into the matching wide row. A batch of pairs is
    then one row gather, one element-wise product and one product with a block-indicator
    matrix, whatever the number of features.

    The association features are learned from the catalog's *train* labels (which product
    words shoppers' words lead to, e.g. "pain" -> "lumbar"). So that the relevance model does
    not learn to trust associations fitted on its own training pairs, training features use
    cross-fitted associations: a train query's features come from associations fitted on the
    other half of the train queries (``exclude_fold``).
    """

    def __init__(self, catalog: Catalog, boosts: FieldBoosts | None = None, query_cache_size: int = 50_000) -> None:
        self.catalog = catalog
        self.boosts = boosts or FieldBoosts()
        self.analyzer = build_analyzer()
        self.vocabulary: dict[str, int] = {}
        products = catalog.products
        field_terms = {field: [self._terms(text) for text in _field_texts(products, field)] for field in FIELDS}
        train_ids = [qid for qid in catalog.query_ids(Split.TRAIN) if catalog.qrels.get(qid)]
        train_terms = {
            qid: self._terms(catalog.queries[qid]) for qid in train_ids
        }  # shoppers' words join the vocabulary
        n_products, n_terms = len(products), len(self.vocabulary)
        presence, bm25 = {}, {}
        for field, rows in field_terms.items():
            counts = _count_matrix(rows, n_products, n_terms)
            presence[field] = _binary(counts)
            bm25[field] = _bm25_weights(counts)
        presence_any = _binary(sum(presence.values()))
        document_frequency = np.asarray(presence_any.sum(axis=0)).ravel()
        self.idf = np.log(1.0 + (n_products - document_frequency + 0.5) / (document_frequency + 0.5)).astype(np.float32)
        self.max_idf = float(self.idf.max(initial=1.0))
        self.in_catalog = document_frequency > 0
        self.associations = {
            fold: fit_associations(catalog, {q: t for q, t in train_terms.items() if fold_of(q) != fold}, presence_any)
            for fold in (None, 0, 1)
        }
        self.title_terms = np.asarray(presence["title"].sum(axis=1), dtype=np.float32).ravel()
        self.description_terms = np.asarray(presence["description"].sum(axis=1), dtype=np.float32).ravel()

        title_keys, title_rows = _char3_keys([p.title for p in products])
        all_keys, all_rows = _char3_keys([f"{p.title} {p.category} {p.attribute_text()}" for p in products])
        self.char_keys, columns = np.unique(np.concatenate([title_keys, all_keys]), return_inverse=True)
        n_grams = len(self.char_keys)
        title_grams = _binary(_coo(title_rows, columns[: len(title_keys)], n_products, n_grams))
        all_grams = _binary(_coo(all_rows, columns[len(title_keys) :], n_products, n_grams))
        gram_frequency = np.asarray(all_grams.sum(axis=0)).ravel()
        self.char_idf = (np.log((1.0 + n_products) / (1.0 + gram_frequency)) + 1.0).astype(np.float32)
        self.max_char_idf = float(self.char_idf.max(initial=1.0))

        # The wide product matrix; each block is matched against one block of the query row.
        term_blocks = [bm25[f] for f in FIELDS] + [presence[f] for f in FIELDS]
        term_blocks += [presence_any, presence_any @ sp.diags(self.idf), presence["title"], presence_any]
        term_blocks += [presence_any, presence_any]  # matched against the query's associated terms
        char_blocks = [_l2_rows(title_grams @ sp.diags(self.char_idf)), _l2_rows(all_grams @ sp.diags(self.char_idf))]
        self.n_term_blocks, self.n_char_blocks = len(term_blocks), len(char_blocks)
        self.wide = sp.hstack(term_blocks + char_blocks, format="csr", dtype=np.float32)
        widths = [n_terms] * len(term_blocks) + [n_grams] * len(char_blocks)
        self.blocks = sp.csr_matrix(
            (
                np.ones(sum(widths), dtype=np.float32),
                np.repeat(np.arange(len(widths)), widths),
                np.arange(sum(widths) + 1),
            ),
            shape=(sum(widths), len(widths)),
        )
        self._query_cache: dict[tuple[str, int | None], tuple[sp.csr_matrix, np.ndarray]] = {}
        self._query_cache_size = query_cache_size

    def features(
        self, queries: list[str], query_index: np.ndarray, rows: np.ndarray, exclude_fold: int | None = None
    ) -> np.ndarray:
        """A (pairs x features) float32 matrix; pair i is (queries[query_index[i]], product row rows[i]).

        ``exclude_fold`` (0 or 1): use associations fitted without that half of the train queries.
        """
        query_index = np.asarray(query_index, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
        encoded = [self._encode(text, exclude_fold) for text in queries]
        wide_queries = sp.vstack([row for row, _ in encoded], format="csr")[query_index]
        scalars = np.stack([values for _, values in encoded])[query_index]
        n_terms, n_unknown, idf_total, chars = scalars.T
        blocks = np.asarray((wide_queries.multiply(self.wide[rows]) @ self.blocks).todense(), dtype=np.float32)
        bm25, presence = blocks[:, 0:4], blocks[:, 4:8]
        matched_any, matched_idf, head_title, head_any, association, association_hits, char3_title, char3_all = blocks[
            :, 8:
        ].T
        safe_terms = np.maximum(n_terms, 1.0)
        boosted = bm25 @ np.array([getattr(self.boosts, field) for field in FIELDS], dtype=np.float32)
        return np.column_stack(
            [
                bm25,
                boosted,
                presence / safe_terms[:, None],
                matched_any / safe_terms,
                matched_idf / np.maximum(idf_total, 1e-6),
                presence[:, 0] / np.maximum(self.title_terms[rows], 1.0),
                head_title,
                head_any,
                association / safe_terms,
                association_hits / safe_terms,
                char3_title,
                char3_all,
                n_terms,
                n_unknown / safe_terms,
                chars,
                self.title_terms[rows],
                np.log1p(self.description_terms[rows]),
            ]
        ).astype(np.float32)

    def _encode(self, text: str, exclude_fold: int | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
        """The wide row and the scalar statistics of one query text (memoised)."""
        cached = self._query_cache.get((text, exclude_fold))
        if cached is not None:
            return cached
        analysed = self.analyze(text)
        known = [self.vocabulary[t] for t in analysed if t in self.vocabulary]
        head = [self.vocabulary[analysed[-1]]] if analysed and analysed[-1] in self.vocabulary else []
        width = len(self.vocabulary)
        columns = [block * width + column for block in range(10) for column in known]
        columns += [block * width + column for block in (10, 11) for column in head]
        values = [1.0] * len(columns)
        associated = (
            sp.csr_matrix(
                (np.ones(len(known), dtype=np.float32), (np.zeros(len(known), dtype=np.int64), known)), shape=(1, width)
            )
            @ self.associations[exclude_fold]
        )
        for block, weights in ((12, associated.data), (13, np.ones_like(associated.data))):
            columns += (block * width + associated.indices).tolist()
            values += weights.tolist()
        keys, _ = _char3_keys([text])
        positions = np.searchsorted(self.char_keys, keys)
        found = positions < len(self.char_keys)
        found[found] = self.char_keys[positions[found]] == keys[found]
        weights = self.char_idf[positions[found]]
        # The norm counts unseen 3-grams too (at the top IDF), so a garbled query is not "similar".
        norm = float(np.sqrt((weights**2).sum() + (~found).sum() * self.max_char_idf**2)) or 1.0
        offset = self.n_term_blocks * width
        n_grams = len(self.char_keys)
        for block in range(self.n_char_blocks):
            columns += (offset + block * n_grams + positions[found]).tolist()
            values += (weights / norm).tolist()
        row = sp.csr_matrix(
            (np.array(values, dtype=np.float32), np.array(columns, dtype=np.int64), np.array([0, len(columns)])),
            shape=(1, self.wide.shape[1]),
        )
        row.sum_duplicates()
        in_catalog = [column for column in known if self.in_catalog[column]]
        unknown = len(analysed) - len(in_catalog)
        # Terms no product uses are as rare as can be: they weigh with the largest IDF.
        idf_total = float(self.idf[in_catalog].sum()) + unknown * self.max_idf
        scalars = np.array([len(analysed), unknown, idf_total, min(len(text), 200)], dtype=np.float32)
        if len(self._query_cache) >= self._query_cache_size:
            self._query_cache.clear()
        self._query_cache[(text, exclude_fold)] = (row, scalars)
        return row, scalars

    def analyze(self, text: str) -> list[str]:
        """Distinct analysed terms of a query, in order: exactly the search engine's (``query_terms``)."""
        return list(query_terms(self.analyzer, text))

    def _terms(self, text: str) -> list[int]:
        if not text:
            return []
        tokens = self.analyzer.analyze(normalize_text(text))
        return [self.vocabulary.setdefault(token, len(self.vocabulary)) for token in tokens]


def fold_of(query_id: str) -> int:
    """The cross-fitting half (0 or 1) of a train query: a stable hash, independent of the split's."""
    return hashlib.blake2b(f"fold:{query_id}".encode(), digest_size=2).digest()[0] % 2


def fit_associations(catalog: Catalog, query_terms: dict[str, list[int]], presence: sp.csr_matrix) -> sp.csr_matrix:
    """(query term x product term) weights from relevant train pairs: positive PMI, identity excluded.

    w(a, b) = log(P(b in product | a in query, relevant) / P(b in product)), kept where the pair
    co-occurs in at least ASSOCIATION_MIN_COUNT relevant pairs and w > 0.
    """
    width = presence.shape[1]
    query_rows, product_rows = [], []
    for query_id, terms in query_terms.items():
        for product_id in catalog.relevant(query_id):
            query_rows.append(terms)
            product_rows.append(catalog.row_of[product_id])
    if not query_rows:
        return sp.csr_matrix((width, width), dtype=np.float32)
    queries = _binary(_count_matrix(query_rows, len(query_rows), width))
    cooccurrence = (queries.T @ presence[np.array(product_rows)]).tocoo()
    keep = (cooccurrence.data >= ASSOCIATION_MIN_COUNT) & (cooccurrence.row != cooccurrence.col)
    rows, columns, counts = cooccurrence.row[keep], cooccurrence.col[keep], cooccurrence.data[keep]
    query_counts = np.asarray(queries.sum(axis=0)).ravel()
    product_share = np.asarray(presence.sum(axis=0)).ravel() / max(presence.shape[0], 1)
    weights = np.log((counts / query_counts[rows]) / np.maximum(product_share[columns], 1e-9))
    positive = weights > 0
    return sp.csr_matrix(
        (weights[positive].astype(np.float32), (rows[positive], columns[positive])), shape=(width, width)
    )


def _field_texts(products: list, field: str) -> list[str]:
    if field == "attributes":
        return [product.attribute_text() for product in products]
    return [getattr(product, field) for product in products]


def _char3_keys(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Character 3-grams of each text (lowercased, spaces normalised, padded) as int64 keys.

    Vectorised over all texts: a 3-gram of code points (each < 2**21) packs into one integer.
    Returns the keys and, for each key, the index of the text it came from.
    """
    normalised = [
        " " + " ".join(normalize_text(text[:2000]).lower().split()) + " " if text.strip() else "" for text in texts
    ]
    lengths = np.array([len(text) for text in normalised], dtype=np.int64)
    codes = np.frombuffer("".join(normalised).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    if len(codes) < 3:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = (codes[:-2] << 42) | (codes[1:-1] << 21) | codes[2:]
    owner = np.repeat(np.arange(len(texts)), lengths)[:-2]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    valid = np.arange(len(keys)) - starts[owner] <= lengths[owner] - 3
    return keys[valid], owner[valid]


def _coo(rows: np.ndarray, columns: np.ndarray, n_rows: int, n_columns: int) -> sp.csr_matrix:
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, columns)), shape=(n_rows, n_columns))


def _binary(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    return matrix


def _count_matrix(rows: list[list[int]], n_rows: int, n_columns: int) -> sp.csr_matrix:
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(row) for row in rows])
    indices = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(indptr[-1]))
    data = np.ones(len(indices), dtype=np.float32)
    matrix = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_columns))
    matrix.sum_duplicates()
    return matrix


def _bm25_weights(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Per (product, term) BM25 contribution: idf * tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))."""
    n_products = counts.shape[0]
    lengths = np.asarray(counts.sum(axis=1)).ravel()
    average = max(float(lengths.mean()) if n_products else 0.0, 1e-6)
    document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log(1.0 + (n_products - document_frequency + 0.5) / (document_frequency + 0.5))
    weights = counts.copy().astype(np.float32)
    row_of_entry = np.repeat(np.arange(n_products), np.diff(counts.indptr))
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * lengths[row_of_entry] / average)
    weights.data = (idf[counts.indices] * counts.data * (BM25_K1 + 1.0) / (counts.data + norm)).astype(np.float32)
    return weights


def _l2_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix, dtype=np.float32)
