"""Catalogs: real counts, the generic format, named loaders, splits, and errors a user can act on."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from catalogs import (
    Catalog,
    CatalogError,
    CatalogFormatError,
    Split,
    homedepot,
    load_catalog,
    read_catalog_dir,
    split_of,
    synthetic_catalog,
    wands,
    write_catalog_dir,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_homedepot_counts_match_the_published_file(homedepot: Catalog) -> None:
    assert len(homedepot.products) == 54_667
    assert len(homedepot.queries) == 11_795
    assert sum(len(labels) for labels in homedepot.qrels.values()) == 74_067
    grades = {grade for labels in homedepot.qrels.values() for grade in labels.values()}
    assert min(grades) == 1.0 and max(grades) == 3.0


def test_homedepot_reads_plain_csv_and_zip_alike(real_data_dir: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(real_data_dir / "homedepot" / "train.csv.zip") as archive:
        lines = archive.read("train.csv").decode("latin-1").splitlines(keepends=True)
    (tmp_path / "homedepot").mkdir()
    (tmp_path / "homedepot" / "train.csv").write_text("".join(lines[:501]), encoding="latin-1")
    catalog = homedepot.load(tmp_path)
    assert sum(len(labels) for labels in catalog.qrels.values()) == 500


def test_homedepot_truncated_zip_names_the_file(real_data_dir: Path, tmp_path: Path) -> None:
    data = (real_data_dir / "homedepot" / "train.csv.zip").read_bytes()
    (tmp_path / "homedepot").mkdir()
    (tmp_path / "homedepot" / "train.csv.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogFormatError, match=r"train\.csv\.zip.*complete zip"):
        homedepot.load(tmp_path)


def test_homedepot_bad_row_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "homedepot").mkdir()
    (tmp_path / "homedepot" / "train.csv").write_text(
        '"id","product_uid","product_title","search_term","relevance"\n'
        '1,100001,"Angle bracket","angle bracket",3\n'
        '2,100002,"Deck paint","deck over",high\n',
        encoding="latin-1",
    )
    with pytest.raises(CatalogFormatError, match=r"train\.csv, line 3: expected a numeric 'relevance'"):
        homedepot.load(tmp_path)


def test_missing_homedepot_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"(?s)not found in .*kaggle"):
        load_catalog("homedepot", tmp_path)


# A small catalog in the WANDS format (tab-separated product.csv, query.csv, label.csv), written
# by the tests themselves: the real WANDS files are a user's download, never part of the project.
def _tsv(*rows: list[str]) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


WANDS_FILES = {
    "product.csv": _tsv(
        [
            "product_id",
            "product_name",
            "product_class",
            "category hierarchy",
            "product_description",
            "product_features",
            "rating_count",
            "average_rating",
            "review_count",
        ],
        [
            "0",
            "solid wood platform bed",
            "Beds",
            "Furniture / Bedroom Furniture / Beds & Headboards / Beds",
            "good, deep sleep can be quite difficult to have in this busy age.",
            "overallwidth-sidetoside:64.7|dsprimaryproductstyle:modern|color:white|material:wood",
            "15.0",
            "4.5",
            "15.0",
        ],
        [
            "1",
            "all-clad 7 piece handle cookware set",
            "Cookware Sets",
            "Kitchen & Tabletop / Cookware / Cookware Sets",
            "the all-clad stainless steel set.",
            "capacity:7 piece|material:stainless steel",
            "",
            "",
            "",
        ],
        [
            "2",
            "salon massage chair",
            "Massage Chairs",
            "Furniture / Office Furniture / Massage Chairs",
            'reclining chair for salons, "spa" grade.',
            "color:black|feature:heated",
            "3",
            "4.0",
            "2",
        ],
        [
            "3",
            "turquoise accent pillow",
            "Accent Pillows",
            "Décor / Pillows",
            "soft velvet pillow",
            "color:turquoise",
            "1",
            "5.0",
            "1",
        ],
    ),
    "query.csv": _tsv(
        ["query_id", "query", "query_class"],
        ["0", "salon chair", "Massage Chairs"],
        ["1", "smart coffee table", "Coffee & Cocktail Tables"],
        ["3", "turquoise pillows", "Accent Pillows"],
    ),
    "label.csv": _tsv(
        ["id", "query_id", "product_id", "label"],
        ["0", "0", "2", "Exact"],
        ["1", "0", "0", "Irrelevant"],
        ["2", "3", "3", "Exact"],
        ["3", "3", "1", "Irrelevant"],
        ["4", "1", "0", "Partial"],
    ),
}


@pytest.fixture
def wands_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "wands-fixture"
    directory.mkdir()
    for name, content in WANDS_FILES.items():
        (directory / name).write_text(content, encoding="utf-8")
    return directory


def test_wands_fixture_loads_with_grades_attributes_and_categories(wands_dir: Path) -> None:
    catalog = load_catalog(wands_dir)
    assert catalog.name == "wands"
    assert len(catalog.products) == 4 and len(catalog.queries) == 3
    assert catalog.qrels["0"] == {"2": 2.0, "0": 0.0}
    assert catalog.qrels["1"] == {"0": 1.0}
    assert catalog.relevant("0") == {"2"}  # Exact only
    bed = catalog.product("0")
    assert bed.attributes["material"] == "wood"
    assert bed.category == "Furniture > Bedroom Furniture > Beds & Headboards > Beds"
    assert '"spa"' in catalog.product("2").description
    assert wands.load(wands_dir).content_hash == catalog.content_hash


def test_wands_unknown_label_and_truncated_products(tmp_path: Path, wands_dir: Path) -> None:
    shutil.copytree(wands_dir, tmp_path / "w")
    labels = tmp_path / "w" / "label.csv"
    labels.write_text(labels.read_text() + "5\t0\t1\tMaybe\n")
    with pytest.raises(CatalogFormatError, match=r"label\.csv, line 7: expected a label of Exact"):
        wands.load(tmp_path / "w")
    shutil.copy(wands_dir / "label.csv", labels)
    products = tmp_path / "w" / "product.csv"
    products.write_text("".join(products.read_text().splitlines(keepends=True)[:2]))
    with pytest.raises(CatalogError, match=r"not in product\.csv"):
        wands.load(tmp_path / "w")


def test_wands_missing_files_and_unreachable_download_explain_what_to_do(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(CatalogError, match=r"(?s)product\.csv.*leser catalog download wands"):
        load_catalog("wands", tmp_path)
    monkeypatch.setattr(wands, "SOURCE_URL", "http://127.0.0.1:9/{name}")
    with pytest.raises(CatalogError, match=r"(?s)could not download.*github\.com/wayfair/WANDS"):
        wands.download(tmp_path / "wands", timeout=2)
    assert not list((tmp_path / "wands").iterdir()), "a failed download leaves no partial file"


def test_generic_round_trip_is_lossless(synthetic: Catalog, tmp_path: Path) -> None:
    write_catalog_dir(synthetic, tmp_path / "out")
    again = read_catalog_dir(tmp_path / "out")
    assert again.products == synthetic.products
    assert again.queries == synthetic.queries
    assert again.qrels == synthetic.qrels
    assert again.relevance_threshold == synthetic.relevance_threshold
    assert again.content_hash == synthetic.content_hash


def test_generic_round_trip_of_real_data(homedepot: Catalog, tmp_path: Path) -> None:
    write_catalog_dir(homedepot, tmp_path / "hd")
    assert read_catalog_dir(tmp_path / "hd").content_hash == homedepot.content_hash


def test_a_catalog_written_by_hand_loads_by_path(tiny_catalog: Catalog, tmp_path: Path) -> None:
    write_catalog_dir(tiny_catalog, tmp_path / "tiny")
    (tmp_path / "tiny" / "catalog.json").unlink()  # optional file
    catalog = load_catalog(tmp_path / "tiny")
    assert catalog.name == "tiny" and catalog.relevance_threshold == 0.0
    assert catalog.relevant("q1") == {"p1", "p2"}


def _write(directory: Path, products: str, queries: str = "q1\tchair\n", qrels: str = "q1\t0\tp1\t1\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "products.jsonl").write_text(products, encoding="utf-8")
    (directory / "queries.tsv").write_text(queries, encoding="utf-8")
    (directory / "qrels.tsv").write_text(qrels, encoding="utf-8")
    return directory


GOOD = '{"id": "p1", "title": "chair"}\n'


@pytest.mark.parametrize(
    ("products", "queries", "qrels", "message"),
    [
        (GOOD + '{"id": "p2", "title": "sofa"\n', None, None, r"products\.jsonl, line 2: expected one JSON object"),
        (GOOD + '["p2"]\n', None, None, r"products\.jsonl, line 2: expected a JSON object, found list"),
        (GOOD + '{"title": "sofa"}\n', None, None, r"line 2: expected a non-empty string 'id'"),
        (GOOD + '{"id": "p2"}\n', None, None, r"line 2: expected a string 'title'"),
        (GOOD + GOOD, None, None, r"line 2: expected a unique 'id' \('p1' is on line 1\)"),
        (GOOD + '{"id": "p2", "title": "x", "attributes": {"a": [1]}}\n', None, None, r"line 2: .*attribute 'a'"),
        (GOOD, "q1 chair\n", None, r"queries\.tsv, line 1: expected 'query_id<TAB>query text'"),
        (GOOD, None, "q1\t0\tp1\n", r"qrels\.tsv, line 1: expected 4 fields"),
        (GOOD, None, "q1\t0\tp1\tgood\n", r"qrels\.tsv, line 1: expected a numeric grade"),
        (GOOD, None, "q1\t0\tp1\tnan\n", r"qrels\.tsv, line 1: expected a finite grade"),
        (GOOD, None, "q1\t0\tp9\t1\n", r"qrels\.tsv, line 1: expected a product id listed in products\.jsonl"),
        (GOOD, None, "q1\t0\tp1\t1\nq7\t0\tp1\t1\n", r"qrels\.tsv, line 2: expected a query id listed"),
        (GOOD + '{"id": ' + "9" * 5000 + ', "title": "x"}\n', None, None, r"products\.jsonl, line 2: .*digits"),
        (GOOD + "[" * 5000 + "]" * 5000 + "\n", None, None, r"products\.jsonl, line 2: .*nesting too deep"),
        (GOOD, None, "q1\t0\tp1\t1\nq1\t0\tp1\t3\n", r"qrels\.tsv, line 2: .*already graded on line 1"),
    ],
)
def test_malformed_generic_files_name_file_line_and_expectation(tmp_path, products, queries, qrels, message) -> None:
    directory = _write(tmp_path / "c", products, queries or "q1\tchair\n", qrels or "q1\t0\tp1\t1\n")
    with pytest.raises(CatalogFormatError, match=message):
        read_catalog_dir(directory)


def test_missing_and_non_utf8_files_are_named(tmp_path: Path) -> None:
    directory = _write(tmp_path / "c", GOOD)
    (directory / "qrels.tsv").unlink()
    with pytest.raises(CatalogError, match=r"qrels\.tsv: missing"):
        read_catalog_dir(directory)
    _write(directory, GOOD)
    (directory / "products.jsonl").write_bytes(b'{"id": "p1", "title": "caf\xe9"}\n')
    with pytest.raises(CatalogFormatError, match=r"products\.jsonl: expected UTF-8 text"):
        read_catalog_dir(directory)
    (directory / "catalog.json").write_text("{not json")
    with pytest.raises(CatalogFormatError, match=r"catalog\.json.*expected a JSON object"):
        read_catalog_dir(directory)


def test_split_is_stable_and_roughly_80_10_10(homedepot: Catalog) -> None:
    parts = {split: set(homedepot.query_ids(split)) for split in Split}
    assert not parts[Split.TRAIN] & parts[Split.TEST]
    assert not parts[Split.TRAIN] & parts[Split.VALIDATION]
    assert not parts[Split.VALIDATION] & parts[Split.TEST]
    assert set().union(*parts.values()) == set(homedepot.queries)
    share = {split: len(ids) / len(homedepot.queries) for split, ids in parts.items()}
    assert 0.78 < share[Split.TRAIN] < 0.82 and 0.08 < share[Split.TEST] < 0.12


def test_split_values_are_pinned() -> None:
    # Golden values computed once; they must never change (they define every reported number).
    golden = json.loads((FIXTURES / "split_golden.json").read_text())
    assert len(set(golden.values())) == 3
    assert {query_id: split_of(query_id).value for query_id in golden} == golden


def test_synthetic_catalog_is_cached_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    first = synthetic_catalog(seed=5, n_products=500, n_queries=60, cache=tmp_path)
    cached = next((tmp_path / "catalogs").iterdir())
    again = synthetic_catalog(seed=5, n_products=500, n_queries=60, cache=tmp_path)
    assert again.content_hash == first.content_hash
    lines = (cached / "products.jsonl").read_text().splitlines(keepends=True)
    (cached / "products.jsonl").write_text("".join(lines[:-10]))  # cut at a line boundary: still parses
    rebuilt = synthetic_catalog(seed=5, n_products=500, n_queries=60, cache=tmp_path)
    assert rebuilt.content_hash == first.content_hash


def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path: Path) -> None:
    directory = _write(tmp_path / "c", "\ufeff" + GOOD, "\ufeffq1\tchair\n", "\ufeffq1\t0\tp1\t1\n")
    (directory / "catalog.json").write_text('\ufeff{"name": "bom"}', encoding="utf-8")
    catalog = read_catalog_dir(directory)
    assert catalog.name == "bom" and list(catalog.queries) == ["q1"] and catalog.relevant("q1") == {"p1"}


def test_a_catalog_name_must_be_text(tmp_path: Path) -> None:
    directory = _write(tmp_path / "c", GOOD)
    (directory / "catalog.json").write_text('{"name": ["a"]}')
    with pytest.raises(CatalogFormatError, match=r"catalog\.json: expected a string 'name', found .*\['a'\]"):
        read_catalog_dir(directory)


def test_export_onto_an_existing_file_is_a_clear_error(tiny_catalog: Catalog, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(CatalogError, match="taken: exists and is not a directory"):
        write_catalog_dir(tiny_catalog, tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "mine"
