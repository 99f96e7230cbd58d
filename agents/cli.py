"""The ``leser`` command line: catalogs, search, and (later) training and evaluation.

Every command prints a human table by default and one JSON document with ``--json``.
Errors in user input (a missing catalog, a malformed file) print one clear line and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from catalogs import CatalogError, load_catalog, write_catalog_dir

app = typer.Typer(
    help="LESER-Gym: search-engine-feedback RL for e-commerce query expansion.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Inspect, export and download catalogs.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

console = Console()
errors = Console(stderr=True)

CatalogOption = Annotated[
    str, typer.Option("--catalog", "-c", help="synthetic, homedepot, wands, or a catalog directory.")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where real catalogs live (default $LESER_DATA_DIR or ../shared/data)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ModeOption = Annotated[str, typer.Option("--mode", help="Matching: 'and' (conjunctive) or 'or'.")]


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors in user-supplied data into one readable line and exit code 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (CatalogError, ValueError, FileNotFoundError) as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


@catalog_app.command("info")
@user_errors
def catalog_info(
    catalog: CatalogOption = "synthetic", data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """Products, queries and labels, overall and per split."""
    stats = load_catalog(catalog, data_dir).stats()
    if as_json:
        emit_json(stats)
        return
    table = Table(
        title=f"catalog {stats['name']}: {stats['products']:,} products, {stats['queries']:,} queries, "
        f"{stats['labels']:,} labels (relevant: grade > {stats['relevance_threshold']:g})"
    )
    for column in ("split", "queries", "labelled queries", "labels", "relevant labels"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, counts in stats["splits"].items():
        table.add_row(
            split, *(f"{counts[key]:,}" for key in ("queries", "labelled_queries", "labels", "relevant_labels"))
        )
    console.print(table)


@catalog_app.command("export")
@user_errors
def catalog_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the generic format into.")],
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
) -> None:
    """Write a catalog in the generic directory format (products.jsonl, queries.tsv, qrels.tsv)."""
    loaded = load_catalog(catalog, data_dir)
    write_catalog_dir(loaded, out)
    console.print(f"wrote {loaded.name} ({len(loaded.products):,} products, {len(loaded.queries):,} queries) to {out}")


@catalog_app.command("download")
@user_errors
def catalog_download(
    name: Annotated[str, typer.Argument(help="The catalog to download: wands.")],
    data_dir: DataDirOption = None,
) -> None:
    """Fetch a public catalog's files into <data-dir>/<name>/ (where the network allows)."""
    from catalogs import data_dir as resolve_data_dir
    from catalogs import homedepot, wands

    if name == "homedepot":
        raise CatalogError(
            "Home Depot cannot be downloaded automatically (Kaggle terms): "
            + homedepot.DOWNLOAD_HINT.format(where=resolve_data_dir(data_dir) / "homedepot")
        )
    if name != "wands":
        raise CatalogError(f"no download for {name!r}; downloadable: wands")
    target = resolve_data_dir(data_dir) / "wands"
    with console.status("downloading WANDS") as status:
        wands.download(target, progress=lambda file, size: status.update(f"{file}: {size / 1e6:.1f} MB"))
    console.print(f"WANDS is in {target}; try: leser catalog info --catalog wands --data-dir {target.parent}")


@app.command("search")
@user_errors
def search(
    query: Annotated[str, typer.Argument(help="The query text (any text; nothing is parsed as syntax).")],
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    mode: ModeOption = "and",
    as_json: JsonOption = False,
) -> None:
    """Search a catalog as the environment does."""
    from leser_env.search import SearchEngine

    loaded = load_catalog(catalog, data_dir)
    engine = SearchEngine(loaded)
    hits = engine.search(query, k=k, mode=mode)
    results = [
        {"rank": rank, "id": pid, "score": round(score, 4), "title": loaded.product(pid).title}
        for rank, (pid, score) in enumerate(zip(hits.ids, hits.scores, strict=True), start=1)
    ]
    if as_json:
        emit_json(
            {
                "query": query,
                "terms": list(engine.analyze(query)),
                "mode": mode,
                "total": hits.total,
                "results": results,
            }
        )
        return
    table = Table(title=f"{query!r} on {loaded.name} ({mode}): {hits.total:,} matches")
    for column in ("#", "id", "score", "title"):
        table.add_column(column)
    for row in results:
        table.add_row(str(row["rank"]), row["id"], f"{row['score']:.2f}", row["title"])
    console.print(table)


@app.command("demo")
@user_errors
def demo(catalog: CatalogOption = "synthetic", data_dir: DataDirOption = None, examples: int = 6) -> None:
    """Build (or open) a catalog and its index, then show searches for test queries."""
    from catalogs import Split
    from leser_env.search import SearchEngine

    with console.status(f"loading catalog {catalog}"):
        loaded = load_catalog(catalog, data_dir)
    catalog_info(catalog, data_dir, as_json=False)
    with console.status("opening the search index (built on first use)"):
        engine = SearchEngine(loaded)
    console.print(f"index: {engine.index_path} ({'built now' if engine.rebuilt else 'reused from cache'})")
    table = Table(title="test queries: what strict matching finds, and how much of it is labelled relevant")
    for column in (
        "query",
        "AND matches",
        "OR matches",
        "relevant in AND top-100",
        "relevant in OR top-100",
        "labelled relevant",
    ):
        table.add_column(column, justify="left" if column == "query" else "right")
    for query_id in loaded.query_ids(Split.TEST)[:examples]:
        text, relevant = loaded.queries[query_id], loaded.relevant(query_id)
        conjunctive, disjunctive = engine.search(text, 100, "and"), engine.search(text, 100, "or")
        table.add_row(
            text,
            f"{conjunctive.total:,}",
            f"{disjunctive.total:,}",
            str(len(relevant.intersection(conjunctive.ids))),
            str(len(relevant.intersection(disjunctive.ids))),
            str(len(relevant)),
        )
    console.print(table)


def main() -> None:  # pragma: no cover - the console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
