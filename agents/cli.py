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
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from catalogs import CatalogError, load_catalog, write_catalog_dir
from catalogs.storage import write_json_atomically
from leser_env.search import LONE_SURROGATES

if TYPE_CHECKING:
    from agents.evaluate import StoredAgents

app = typer.Typer(
    help="LESER-Gym: search-engine-feedback RL for e-commerce query expansion.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Inspect, export and download catalogs.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

console = Console()
errors = Console(stderr=True)
MAX_RESULTS = 10_000

CatalogOption = Annotated[
    str, typer.Option("--catalog", "-c", help="synthetic, homedepot, wands, or a catalog directory.")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where real catalogs live (default $LESER_DATA_DIR or ../shared/data)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ModeOption = Annotated[str, typer.Option("--mode", help="Matching: 'and' (conjunctive) or 'or'.")]
RewardOption = Annotated[
    str, typer.Option("--reward", help="Reward preset: default (v2: judged page and coverage) or paper.")
]


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors in user-supplied data into one readable line and exit code 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (CatalogError, ValueError, FileNotFoundError) as error:
            errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper


def json_text(payload: Any, indent: int | None = None) -> str:
    """JSON that is always valid UTF-8: lone surrogates (undecodable input bytes) become U+FFFD."""
    return LONE_SURROGATES.sub("\ufffd", json.dumps(payload, indent=indent, ensure_ascii=False))


def emit_json(payload: Any) -> None:
    sys.stdout.write(json_text(payload, indent=2) + "\n")


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
    k: Annotated[int, typer.Option("-k", min=0, max=MAX_RESULTS, help="How many results (0..10000).")] = 10,
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
    table = Table(title=escape(f"{query!r} on {loaded.name} ({mode}): {hits.total:,} matches"))
    for column in ("#", "id", "score", "title"):
        table.add_column(column)
    for row in results:
        table.add_row(str(row["rank"]), escape(row["id"]), f"{row['score']:.2f}", escape(row["title"]))
    console.print(table)


relevance_app = typer.Typer(
    help="Train and evaluate the relevance model (LightGBM on human labels).", no_args_is_help=True
)
app.add_typer(relevance_app, name="relevance")


@relevance_app.command("train")
@user_errors
def relevance_train(
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    retrain: Annotated[bool, typer.Option("--retrain", help="Ignore a cached model.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Train (or load from cache) the relevance model on train-split labels."""
    from leser_env.relevance import RelevanceModel

    loaded = load_catalog(catalog, data_dir)
    with console.status(f"training the relevance model on {loaded.name}", spinner="dots"):
        model = RelevanceModel.load_or_train(loaded, retrain=retrain)
    info = {key: value for key, value in model.info.items() if key != "feature_names"}
    if as_json:
        emit_json(info)
        return
    source = "loaded from cache" if model.info["loaded_from_cache"] else "trained now"
    console.print(
        f"relevance model for {loaded.name}: {source}; {info['train_pairs']:,} train pairs from "
        f"{info['train_queries']:,} queries; validation nDCG@10 "
        + ", ".join(f"{name} {value:.4f}" for name, value in info["validation_ndcg@10"].items())
        + f"; the reward uses {info['objective']}"
    )


@relevance_app.command("evaluate")
@user_errors
def relevance_evaluate(
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    split: Annotated[str, typer.Option("--split", help="train, validation or test.")] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="Write metrics.json and a feature-importance PNG.")] = None,
    as_json: JsonOption = False,
) -> None:
    """nDCG@10 of both GBDTs and of BM25 over each held-out query's labelled products."""
    from leser_env.relevance import RelevanceModel

    loaded = load_catalog(catalog, data_dir)
    with console.status(f"evaluating the relevance model on {loaded.name} ({split})", spinner="dots"):
        model = RelevanceModel.load_or_train(loaded)
        report = model.evaluate(split)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report["feature_importance_png"] = str(model.plot_feature_importance(out / "feature_importance.png"))
        write_json_atomically(out / "metrics.json", report)
    if as_json:
        emit_json(report)
        return
    table = Table(
        title=f"relevance on {loaded.name}, {split} split: {report['queries']:,} queries, "
        f"{report['pairs']:,} labelled pairs"
    )
    table.add_column("ordering of each query's labelled products")
    table.add_column("nDCG@10", justify="right")
    names = {
        "gbdt_cross_entropy": "GBDT, pointwise cross-entropy",
        "gbdt_lambdarank": "GBDT, LambdaRank",
        "bm25": "BM25 alone",
    }
    for name, value in report["ndcg@10"].items():
        marker = "  <- the reward's model" if name == report["reward_model"] else ""
        table.add_row(names.get(name, name) + marker, f"{value:.4f}")
    console.print(table)
    console.print(f"calibration error (mean |predicted - label| over 10 bins): {report['calibration_error']:.4f}")
    if out is not None:
        console.print(f"wrote {out / 'metrics.json'} and {report['feature_importance_png']}")


@app.command("score")
@user_errors
def score(
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    mode: ModeOption = "and",
    reward_preset: RewardOption = "default",
    as_json: JsonOption = False,
) -> None:
    """Score expansions read as JSON lines on stdin: {"query": ..., "action": "<raw text>"} or
    {"query": ..., "expansions": [...]}. Writes one JSON line per input (--json) or a table.
    A malformed line gets an error line and the rest go on; the exit code is 1 if any line was malformed."""
    from leser_env.resources import reward_for
    from leser_env.reward import RewardConfig

    reward = reward_for(catalog, data_dir, RewardConfig.preset(reward_preset, mode=mode))
    table = Table(title=f"rewards on {reward.engine.catalog.name} ({reward_preset})")
    for column in ("line", "query", "expansions", "reward", "r_rel", "r_page", "r_size", "|R(q)|", "|U(Y)|", "error"):
        table.add_column(column, justify="right" if column not in ("query", "expansions", "error") else "left")
    failures = 0
    for number, raw in enumerate(getattr(sys.stdin, "buffer", sys.stdin), start=1):
        line, problem = _decode_line(raw)
        if not line.strip() and not problem:
            continue
        record, problem = _score_input(line) if not problem else ({}, problem)
        if problem:
            failures += 1
            result = {"line": number, "error": problem}
        else:
            action = record["action"] if "action" in record else record["expansions"]
            result = {"line": number, "query": record["query"], **reward.score(record["query"], action).to_dict()}
        if as_json:
            sys.stdout.write(json_text(result) + "\n")
            sys.stdout.flush()
        elif problem:
            table.add_row(str(number), "", "", "", "", "", "", "", "", escape(problem))
        else:
            table.add_row(
                str(number),
                escape(result["query"]),
                escape("; ".join(result["expansions"])),
                f"{result['reward']:.4f}",
                f"{result['r_rel']:.4f}",
                f"{result['r_page']:.4f}",
                f"{result['r_size']:.4f}",
                str(result["query_result_count"]),
                str(result["union_size"]),
                result["error"] or "",
            )
    if not as_json:
        console.print(table)
    if failures:
        errors.print(f"{failures} malformed input line(s)")
        raise typer.Exit(1)


def _decode_line(raw: bytes | str) -> tuple[str, str]:
    """An input line as text, or the reason it is not UTF-8."""
    if isinstance(raw, str):
        return raw, ""
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as error:
        return "", f"not valid UTF-8 (byte {error.start})"


def _score_input(line: str) -> tuple[dict, str]:
    """A decoded input record, or the reason it is not one."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return {}, f"not JSON: {error.msg}"
    except (ValueError, RecursionError) as error:  # a 5,000-digit number, brackets nested 1,000 deep
        return {}, f"not JSON this tool reads: {type(error).__name__}: {str(error)[:80]}"
    if LONE_SURROGATES.search(json.dumps(record, ensure_ascii=False)):
        return {}, "a string holds a lone surrogate (\\ud800-\\udfff), which no UTF-8 text can"
    if not isinstance(record, dict):
        return {}, "expected a JSON object"
    if not isinstance(record.get("query"), str):
        return {}, "expected a string 'query'"
    if "action" not in record and "expansions" not in record:
        return {}, "expected 'action' (raw policy text) or 'expansions' (a list of strings)"
    if "expansions" in record and "action" not in record and not isinstance(record["expansions"], list):
        return {}, "expected 'expansions' to be a list of strings"
    return record, ""


reward_app = typer.Typer(help="The reward: audit its agreement with human labels.", no_args_is_help=True)
app.add_typer(reward_app, name="reward")


@reward_app.command("audit")
@user_errors
def reward_audit(
    out: Annotated[Path, typer.Option("--out", help="Write audit.json, audit.md, audit.png, candidates.jsonl.")],
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    rewards: Annotated[str, typer.Option("--reward", help="Comma-separated presets; the first is the reference.")] = (
        "paper,default"
    ),
    split: Annotated[str, typer.Option("--split", help="train, validation or test (the oracle: test only).")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N queries of the split.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Kendall tau between each reward and human-label gains over a pool of candidate expansions; junk probes."""
    from agents.audit import print_audit, run_audit

    names = [name.strip() for name in rewards.split(",") if name.strip()]
    data = str(data_dir) if data_dir else None
    report = run_audit(catalog, data, names, limit, out, split, progress=not as_json)
    if as_json:
        emit_json(report)
        return
    print_audit(report, console)
    console.print(f"wrote {out}/audit.json, audit.md, audit.png, candidates.jsonl")


SplitOption = Annotated[str, typer.Option("--split", help="train, validation or test.")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N queries of the split.")]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="Write metrics.json, episodes.jsonl, results.md, metrics.png.")
]
DecodingOption = Annotated[
    str | None,
    typer.Option(
        "--decoding",
        help="LLM agents: greedy, guided (greedy within the action format) or vote (the expansions 8 samples "
        "agree on); default: the run's own (greedy unless trained guided).",
    ),
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="LLM agents: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps.")
]
DtypeOption = Annotated[
    str | None, typer.Option("--dtype", help="LLM agents: auto (bfloat16 on a GPU), float32, bfloat16, float16.")
]
EngineCheckOption = Annotated[
    bool,
    typer.Option("--engine-check", help="LLM agents: drop the expansions the engine matches nothing for."),
]


def placement(device: str | None, dtype: str | None) -> dict[str, str]:
    """The --device and --dtype a user gave, as policy options (absent ones keep the policy's own)."""
    return {key: value for key, value in (("device", device), ("dtype", dtype)) if value}


def build_agent(
    name: str,
    checkpoint: Path | None,
    catalog: str,
    data_dir: Path | None,
    seed: int,
    engine_check: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    decoding: str | None = None,
    reward: str | None = None,
):
    """An agent by registry name, or restored from a checkpoint directory; an agent that reads the
    reward while it acts is built with ``reward``, the preset it is evaluated under."""
    import agents

    options: dict[str, Any] = {"catalog": catalog, "data_dir": str(data_dir) if data_dir else None}
    if engine_check:
        options["engine_check"] = True
    if checkpoint is None and reward and agents.agent_class(name).reads_reward:
        options["reward"] = reward
    if decoding:
        if checkpoint is None and name not in ("sft", "grpo", "ppo"):
            raise ValueError(f"--decoding is for LLM agents (sft, grpo, ppo), not {name!r}")
        options["decoding"] = decoding
    options.update(placement(device, dtype))
    built = agents.load(checkpoint, **options) if checkpoint is not None else agents.make(name, seed=seed, **options)
    if engine_check and not hasattr(built, "engine_check"):
        raise ValueError(
            f"--engine-check is for LLM agents (sft, grpo, ppo), learned-edit and reward-search, not {built.name!r}"
        )
    return built


def print_summaries(summaries: dict, out: Path | None) -> None:
    from agents.evaluate import METRICS

    first = next(iter(summaries.values()))
    table = Table(title=f"{first['catalog']}, {first['split']} split, {first['queries']:,} queries")
    table.add_column("metric")
    for name in summaries:
        table.add_column(name, justify="right")
    for key, (label, style) in METRICS.items():
        table.add_row(label, *("n/a" if s.get(key) is None else style.format(s[key]) for s in summaries.values()))
    console.print(table)
    names = list(summaries)
    if len(names) > 1:
        from agents.evaluate import PAIRED

        paired = Table(title="paired differences on the same queries (A - B), bootstrap 95% intervals")
        paired.add_column("A - B")
        for metric in PAIRED:
            paired.add_column(METRICS[metric][0], justify="right")
        for index, name in enumerate(names):
            for other in names[index + 1 :]:
                cells = []
                for metric in PAIRED:
                    entry = summaries[name]["paired"][other].get(metric)
                    cells.append(
                        "n/a"
                        if entry is None
                        else f"{entry['difference']:+.4f} [{entry['low']:+.4f}, {entry['high']:+.4f}]"
                    )
                paired.add_row(f"{name} - {other}", *cells)
        console.print(paired)
    if out is not None:
        console.print(f"wrote {out}/metrics.json, episodes.jsonl, results.md, metrics.png")


@app.command("evaluate")
@user_errors
def evaluate_command(
    agent: Annotated[str, typer.Option("--agent", "-a", help="Agent name (none, random, prf, ...).")] = "none",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="A saved agent directory.")] = None,
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    split: SplitOption = "test",
    limit: LimitOption = None,
    seed: int = 0,
    out: OutOption = None,
    as_json: JsonOption = False,
    engine_check: EngineCheckOption = False,
    reward_preset: RewardOption = "default",
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    decoding: DecodingOption = None,
) -> None:
    """Run one agent over every query of a split and report the metrics."""
    from agents.evaluate import evaluate

    built = build_agent(
        agent, checkpoint, catalog, data_dir, seed, engine_check, device, dtype, decoding, reward=reward_preset
    )
    data = str(data_dir) if data_dir else None
    summary = evaluate(built, catalog, split, data, limit, out, progress=not as_json, reward=reward_preset)
    if as_json:
        emit_json(summary)
    else:
        print_summaries({built.label: summary}, out)


@app.command("compare")
@user_errors
def compare_command(
    agent_names: Annotated[str, typer.Option("--agents", help="Comma-separated agent names.")] = "none,random,prf",
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    split: SplitOption = "test",
    limit: LimitOption = None,
    seed: int = 0,
    out: OutOption = None,
    as_json: JsonOption = False,
    checkpoints: Annotated[
        list[Path] | None, typer.Option("--checkpoint", help="A saved agent directory to add (repeatable).")
    ] = None,
    reward_preset: RewardOption = "default",
    decodings: Annotated[
        str | None,
        typer.Option(
            "--decoding",
            help="For each --checkpoint: greedy, guided, vote, or several (greedy,guided); default: the run's own.",
        ),
    ] = None,
    engine_check: Annotated[
        bool,
        typer.Option(
            "--engine-check",
            help="Each --checkpoint (and reward-search): drop the expansions the engine matches nothing for.",
        ),
    ] = False,
    stored: Annotated[
        list[str] | None,
        typer.Option(
            "--with",
            help="[PREFIX=]DIR[:LABEL,...]: add the agents of a comparison written earlier (--out), or only "
            "those labelled LABEL, from its stored episodes, labelled 'PREFIX label' (repeatable).",
        ),
    ] = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Run several agents on the same queries: one table, one chart, paired differences with 95% intervals.

    --with adds agents from a comparison written earlier without running them again (the same catalog,
    split, reward and queries), e.g. a warm-up compared once, beside the RL run that continues it:
    --with v1=runs/v1/comparison:grpo+check takes only v1's agent labelled grpo+check."""
    import agents
    from agents.evaluate import compare

    names = [name.strip() for name in agent_names.split(",") if name.strip()]
    reads_reward = [agents.agent_class(name).reads_reward for name in names]
    if engine_check and not checkpoints and not any(reads_reward):
        raise ValueError("--engine-check applies to the --checkpoint agents and reward-search, and none was given")
    built = [
        build_agent(name, None, catalog, data_dir, seed, engine_check and reads, reward=reward_preset)
        for name, reads in zip(names, reads_reward, strict=True)
    ]
    chosen: list[str | None] = [decoding.strip() for decoding in (decodings or "").split(",") if decoding.strip()]
    chosen = chosen or [None]  # each run's own
    built += [
        build_agent("", path, catalog, data_dir, seed, engine_check, device, dtype, decoding=decoding)
        for path in checkpoints or []
        for decoding in chosen
    ]
    earlier = [parse_stored(text) for text in stored or []]
    if not built and not earlier:
        raise ValueError("no agents to compare: pass --agents, --checkpoint and/or --with")
    data = str(data_dir) if data_dir else None
    summaries = compare(
        built, catalog, split, data, limit, out, progress=not as_json, reward=reward_preset, stored=earlier
    )
    if as_json:
        emit_json(summaries)
    else:
        print_summaries(summaries, out)


def parse_stored(text: str) -> StoredAgents:
    """``--with``'s [PREFIX=]DIR[:LABEL,...]: a label list follows the last colon when what follows
    it holds no path separator (so a Windows drive's colon stays part of DIR)."""
    from agents.evaluate import StoredAgents

    prefix, _, where = text.partition("=") if "=" in text else ("", "", text)
    directory, colon, labels = where.rpartition(":")
    if not colon or not directory or "/" in labels or "\\" in labels:
        return StoredAgents(prefix.strip(), where)
    chosen = tuple(label.strip() for label in labels.split(",") if label.strip())
    if not chosen:
        raise ValueError(f"--with {text}: no agent label after the colon (DIR:LABEL[,LABEL...])")
    return StoredAgents(prefix.strip(), directory, chosen)


@app.command("train")
@user_errors
def train_command(
    agent: Annotated[str, typer.Option("--agent", "-a", help="sft, grpo, ppo or learned-edit.")],
    out: Annotated[Path, typer.Option("--out", help="The run directory (checkpoints, logs, curves).")],
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    model: Annotated[str | None, typer.Option("--model", help="A Hugging Face causal LM name or path.")] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Optimizer steps (the same as --set max_steps=N).")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="A config field, FIELD=VALUE (repeatable), e.g. --set beta=0.04 --set loss_type=dapo."
        ),
    ] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Start from this run's policy (e.g. an SFT run).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped run in --out.")] = False,
    seed: int = 0,
    engine_check: Annotated[
        bool, typer.Option("--engine-check", help="grpo, ppo: score and act without expansions that match nothing.")
    ] = False,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Train an LLM agent (sft, grpo, ppo) or learned-edit; every field of its config can be set with
    --set (an unknown field's error lists them all); `leser evaluate --checkpoint OUT` evaluates the run."""
    from agents.policy import PolicyConfig
    from agents.training import configure, has_checkpoint, parse_settings, trainer
    from leser_env.env import LeserEnv

    chosen = trainer(agent)
    overrides = {"seed": seed, **({"max_steps": steps} if steps else {}), **parse_settings(settings or [])}
    config = configure(chosen.config_class, overrides)
    if engine_check and not chosen.scores_samples:
        raise ValueError(f"--engine-check trains agents that score their own samples, not {agent}")
    if resume and not has_checkpoint(out):  # has_checkpoint raises, naming the file, on a damaged one
        raise ValueError(
            f"--resume: {out} holds no checkpoint to continue (no {out}/trainer_state.json); "
            "leave out --resume to start a run there"
        )
    if not resume and has_checkpoint(out):
        raise ValueError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    policy_config = PolicyConfig(**({"model": model} if model else {}), **placement(device, dtype))
    data = str(data_dir) if data_dir else None
    env = LeserEnv(catalog=catalog, data_dir=data, split="train", engine_check=engine_check or None)
    result = chosen.run(config, env, out, resume, init=init, policy_config=policy_config)
    console.print(f"{escape(result['summary'])}; evaluate with: leser evaluate --checkpoint {escape(str(out))}")


@app.command("precompute")
@user_errors
def precompute_command(
    out: Annotated[Path, typer.Option("--out", help="The expansion store (one SQLite file).")],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="A trained run directory (or --agent for a baseline).")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="A baseline instead of a run: prf, none.")] = None,
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    queries: Annotated[
        Path | None, typer.Option("--queries", help="A file of queries, one a line (a TSV's last column).")
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Or a catalog split's queries (default train).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1024)] = 16,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Run on a Ray cluster: its address, or 'local' to start one here."),
    ] = None,
    device: DeviceOption = None,
    engine_check: EngineCheckOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate, score and store expansions for many queries; a stopped run resumes where it stopped.

    A run trained with --engine-check is stored behind the check; --engine-check puts any run behind it
    (a warm-up, say): its expansions that match no product are dropped before they are scored and stored."""
    from agents.precompute import precompute, read_queries
    from agents.progress import progress_bar
    from agents.store import StoreError

    if (checkpoint is None) == (agent is None):
        raise ValueError("pass --checkpoint RUN or --agent NAME, exactly one")
    if queries is not None and split is not None:
        raise ValueError("pass --queries FILE or --split NAME, not both")
    data = str(data_dir) if data_dir else None
    texts = read_queries(catalog, data, split, queries)
    with progress_bar(not as_json) as bar:
        task = bar.add_task(f"precomputing {len(texts):,} queries", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = precompute(
                checkpoint or agent, catalog, texts, out, data, batch_size, ray, device, advance, engine_check
            )
        except StoreError as error:
            raise ValueError(str(error)) from None
    if as_json:
        emit_json(result)
    else:
        console.print(
            f"{escape(str(out))}: {result['size']:,} queries stored ({result['generated']:,} generated now, "
            f"{result['already_stored']:,} already there, {result['too_long']:,} too long)"
        )


@app.command("serve")
@user_errors
def serve_command(
    store: Annotated[Path, typer.Option("--store", help="An expansion store made by `leser precompute`.")],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="The run that generates tail queries online (optional).")
    ] = None,
    catalog: CatalogOption = "synthetic",
    data_dir: DataDirOption = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    tail_budget_ms: Annotated[
        float, typer.Option("--tail-budget-ms", min=0, help="Time a tail query may wait for the policy.")
    ] = 500.0,
    fallback: Annotated[str, typer.Option("--fallback", help="prf or none: what answers past the budget.")] = "prf",
    device: DeviceOption = None,
    engine_check: EngineCheckOption = False,
) -> None:
    """Serve expansions over HTTP: GET /expand?q=..., POST /expand, /healthz, /metrics.

    --engine-check serves the --checkpoint's tail answers behind the engine check (a run trained with
    it always is); the store must have been precomputed the same way."""
    import uvicorn

    from agents.precompute import load_agent
    from agents.serve import ExpansionService, create_app
    from agents.store import ExpansionStore, StoreError
    from leser_env.env import LeserEnv

    if engine_check and not checkpoint:
        raise ValueError("--engine-check applies to the --checkpoint's policy, and none was given")
    data = str(data_dir) if data_dir else None
    try:
        opened = ExpansionStore(store, create=False)
        check_store(opened, checkpoint, catalog, data, engine_check)
    except StoreError as error:
        raise ValueError(str(error)) from None
    policy = load_agent(checkpoint, catalog, data, device, engine_check) if checkpoint else None
    env = LeserEnv(catalog=catalog, data_dir=data, split="train")
    service = ExpansionService(opened, env, policy, fallback, tail_budget_ms)
    errors.print(f"serving {len(opened):,} stored queries on http://{host}:{port} (policy: {checkpoint or 'none'})")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


def check_store(
    store: Any, checkpoint: str | None, catalog: str, data_dir: str | None, engine_check: bool = False
) -> None:
    """Refuse a store made for another catalog, or by another policy than --checkpoint (the engine
    check included)."""
    from agents.precompute import fingerprints
    from agents.store import StoreError

    expected = fingerprints(checkpoint or "none", catalog, data_dir, engine_check)
    names = ["catalog_fingerprint"] + (["policy_fingerprint"] if checkpoint else [])
    for name in names:
        if store.meta.get(name) != expected[name]:
            raise StoreError(
                f"{store.path}: stale store: its {name} is {store.meta.get(name)!r}, "
                f"this server's is {expected[name]!r}"
            )


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
