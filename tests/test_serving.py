"""Serving: the expansion store, `leser precompute` (local and on a local Ray cluster), and
`leser serve` as a real uvicorn server that httpx talks to, concurrent requests included."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.base import Agent
from agents.grpo import GRPOAgent
from agents.precompute import fingerprints, precompute
from agents.serve import ExpansionService, serve_in_process, serve_in_thread
from agents.store import ExpansionStore, StoredExpansion, StoreError, normalize_query
from leser_env.actions import encode_action
from leser_env.env import LeserEnv

pytest.importorskip("fastapi", reason="the serve extra: pip install -e '.[serve]'")


NO_MATCH_ACTION = encode_action(["office chair", "zzqx nomatch"])  # the second matches no product


@pytest.fixture(scope="module")
def env() -> LeserEnv:
    return LeserEnv(catalog="synthetic", split="train")


@pytest.fixture(scope="module")
def test_queries(env: LeserEnv) -> list[str]:
    return [env.catalog.queries[qid] for qid in env.catalog.query_ids("test")[:6]]


@pytest.fixture
def tiny_run(tiny_model_dir: Path, tmp_path: Path, tiny_policy) -> Path:
    """A trained-run directory over the tiny random model (greedy decoding is deterministic)."""
    run = tmp_path / "run"
    policy = tiny_policy(max_new_tokens=12)
    policy.config = replace(policy.config, model=str(tiny_model_dir))  # loadable by path, as a user's model
    policy.save(run / "policy")
    GRPOAgent.describe(run, "synthetic", None)
    return run


# -- the store ------------------------------------------------------------------------------


def test_the_store_keys_queries_by_their_normalised_text(tmp_path: Path) -> None:
    store = ExpansionStore(tmp_path / "store.db", {"policy_fingerprint": "p", "catalog_fingerprint": "c"})
    record = StoredExpansion(normalize_query("Office  CHAIR"), "Office  CHAIR", ["ergonomic chair"], 1.5, {"r_rel": 1})
    store.put_many([record])
    assert store.get("  office chair ").expansions == ["ergonomic chair"] and store.get("office chairs") is None
    assert store.missing(["OFFICE CHAIR", "sofa", "Sofa", "  "]) == ["sofa"]
    store.close()
    again = ExpansionStore(tmp_path / "store.db", {"policy_fingerprint": "p", "catalog_fingerprint": "c"})
    assert len(again) == 1 and again.get("office chair").breakdown == {"r_rel": 1}


def test_a_stale_or_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    ExpansionStore(tmp_path / "store.db", {"policy_fingerprint": "p", "catalog_fingerprint": "c"}).close()
    with pytest.raises(StoreError, match="stale store: its policy_fingerprint is 'p', this run's is 'q'"):
        ExpansionStore(tmp_path / "store.db", {"policy_fingerprint": "q", "catalog_fingerprint": "c"})
    (tmp_path / "garbage.db").write_bytes(b"\x00not sqlite\xff" * 200)
    with pytest.raises(StoreError, match=r"garbage\.db: not an expansion store"):
        ExpansionStore(tmp_path / "garbage.db")
    with pytest.raises(StoreError, match="no such store"):
        ExpansionStore(tmp_path / "missing.db", create=False)


# -- precompute -----------------------------------------------------------------------------


def test_precompute_scores_stores_and_resumes(tiny_run: Path, tmp_path: Path, test_queries: list[str]) -> None:
    store_path = tmp_path / "store.db"
    first = precompute(str(tiny_run), "synthetic", test_queries[:4], store_path, batch_size=3)
    assert first["generated"] == 4 and first["size"] == 4
    again = precompute(str(tiny_run), "synthetic", [*test_queries, test_queries[0].upper()], store_path, batch_size=3)
    assert again["generated"] == 2 and again["already_stored"] == 4 and again["size"] == 6
    store = ExpansionStore(store_path)
    for query in test_queries:
        record = store.get(query)
        assert record is not None and record.breakdown is not None and record.reward == record.breakdown["reward"]
    with pytest.raises(StoreError, match="stale store: its policy_fingerprint"):
        precompute("prf", "synthetic", test_queries, store_path)


def test_precompute_engine_check_puts_any_run_behind_the_check(
    tiny_run: Path, tmp_path: Path, test_queries: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run not trained with the check (a warm-up, say) stored behind it: the expansion that matches
    nothing is dropped before it is scored, and the store says which policy made it."""
    monkeypatch.setattr(GRPOAgent, "act", lambda self, observations: [NO_MATCH_ACTION] * len(observations))
    plain, checked = tmp_path / "plain.db", tmp_path / "checked.db"
    precompute(str(tiny_run), "synthetic", test_queries[:2], plain)
    precompute(str(tiny_run), "synthetic", test_queries[:2], checked, engine_check=True)
    for record in ExpansionStore(plain):
        assert record.expansions == ["office chair", "zzqx nomatch"] and not record.breakdown["dropped_expansions"]
    for record in ExpansionStore(checked):
        assert record.expansions == ["office chair"] and record.breakdown["dropped_expansions"] == ["zzqx nomatch"]
    made_with = {path: ExpansionStore(path).meta["policy_fingerprint"] for path in (plain, checked)}
    assert made_with[checked] == fingerprints(str(tiny_run), "synthetic", engine_check=True)["policy_fingerprint"]
    assert made_with[checked] != made_with[plain] == fingerprints(str(tiny_run), "synthetic")["policy_fingerprint"]
    with pytest.raises(StoreError, match="stale store: its policy_fingerprint"):  # one store, one way of serving
        precompute(str(tiny_run), "synthetic", test_queries, plain, engine_check=True)
    with pytest.raises(ValueError, match="engine check is for a trained run's policy, not the baseline 'prf'"):
        precompute("prf", "synthetic", test_queries, tmp_path / "prf.db", engine_check=True)
    assert not (tmp_path / "prf.db").exists()


def test_an_interrupted_precompute_keeps_every_finished_batch(
    tiny_run: Path, tmp_path: Path, test_queries: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import agents.precompute as module

    real, calls = module.expand_batch, []

    def dies_on_the_second_batch(*args: Any) -> list[StoredExpansion]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(module, "expand_batch", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        precompute(str(tiny_run), "synthetic", test_queries, tmp_path / "store.db", batch_size=2)
    assert len(ExpansionStore(tmp_path / "store.db")) == 2
    monkeypatch.setattr(module, "expand_batch", real)
    assert precompute(str(tiny_run), "synthetic", test_queries, tmp_path / "store.db", batch_size=2)["generated"] == 4


def test_precompute_on_a_local_ray_cluster_stores_what_the_local_path_stores(
    tiny_run: Path, tmp_path: Path, test_queries: list[str]
) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
    local = tmp_path / "local.db"
    precompute(str(tiny_run), "synthetic", test_queries, local, batch_size=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = precompute(
            str(tiny_run), "synthetic", test_queries, tmp_path / "ray.db", batch_size=4, ray_address="local"
        )
    finally:
        ray.shutdown()
    assert result["generated"] == len(test_queries)
    by_ray = {record.query: record for record in ExpansionStore(tmp_path / "ray.db")}
    for record in ExpansionStore(local):
        assert by_ray[record.query].expansions == record.expansions
        assert by_ray[record.query].reward == pytest.approx(record.reward)


# -- serve ----------------------------------------------------------------------------------


class ScriptedPolicy(Agent):
    """Stands in for a trained policy where the test needs valid actions and a known generation time."""

    name = "scripted"

    def __init__(self, seconds: float = 0.0, **config: Any) -> None:
        super().__init__(**config)
        self.seconds, self.batches = seconds, []

    def act(self, observations: Sequence[dict[str, Any]]) -> list[str]:
        self.batches.append(len(observations))
        time.sleep(self.seconds)
        return [encode_action([f"{o['query']} chair"]) for o in observations]


@pytest.fixture
def head_store(tmp_path: Path) -> ExpansionStore:
    store = ExpansionStore(tmp_path / "store.db")
    store.put_many([StoredExpansion("office chair", "office chair", ["ergonomic office chair"], 1.0, None)])
    return store


def test_head_tail_and_fallback_answers(head_store: ExpansionStore, env: LeserEnv) -> None:
    policy = ScriptedPolicy()
    with serve_in_thread(ExpansionService(head_store, env, policy, tail_budget_ms=5000)) as url:
        head = httpx.get(f"{url}/expand", params={"q": "Office Chair"}).json()
        assert head["source"] == "store" and head["expansions"] == ["ergonomic office chair"]
        tail = httpx.get(f"{url}/expand", params={"q": "grey sofa"}).json()
        assert tail == {**tail, "source": "model", "expansions": ["grey sofa chair"], "query": "grey sofa"}
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "store_size": 1, "policy": True}
    with serve_in_thread(ExpansionService(head_store, env, None, fallback="prf")) as url:  # no policy: prf answers
        fallback = httpx.get(f"{url}/expand", params={"q": "grey sofa"}).json()
        assert fallback["source"] == "fallback" and fallback["expansions"]
    with serve_in_thread(ExpansionService(head_store, env, None, fallback="none")) as url:
        assert httpx.get(f"{url}/expand", params={"q": "grey sofa"}).json()["expansions"] == []


def test_a_policy_behind_the_engine_check_serves_tail_answers_without_what_matches_nothing(
    head_store: ExpansionStore, env: LeserEnv
) -> None:
    policy = ScriptedPolicy()
    policy.act = lambda observations: [NO_MATCH_ACTION] * len(observations)  # type: ignore[method-assign]
    with serve_in_thread(ExpansionService(head_store, env, policy, tail_budget_ms=5000)) as url:
        assert httpx.get(f"{url}/expand", params={"q": "grey sofa"}).json()["expansions"] == [
            "office chair",
            "zzqx nomatch",
        ]
    policy.engine_check = True
    with serve_in_thread(ExpansionService(head_store, env, policy, tail_budget_ms=5000)) as url:
        assert httpx.get(f"{url}/expand", params={"q": "grey sofa"}).json()["expansions"] == ["office chair"]


def test_a_tail_query_past_its_budget_gets_the_fallback_and_later_the_models_answer(
    head_store: ExpansionStore, env: LeserEnv
) -> None:
    policy = ScriptedPolicy(seconds=0.6)
    with serve_in_thread(ExpansionService(head_store, env, policy, tail_budget_ms=100)) as url:
        late = httpx.get(f"{url}/expand", params={"q": "leather sofa"}).json()
        assert late["source"] == "fallback" and late["latency_ms"] < 600
        time.sleep(0.8)  # the generation finished after the answer: its expansions are kept
        assert httpx.get(f"{url}/expand", params={"q": "leather sofa"}).json()["source"] == "model"
        # Now the measured generation time (0.6 s) exceeds the budget: new tail queries are not queued.
        before = len(policy.batches)
        assert httpx.get(f"{url}/expand", params={"q": "oak desk"}).json()["source"] == "fallback"
        assert len(policy.batches) == before


def test_concurrent_tail_requests_are_batched_into_few_generations(head_store: ExpansionStore, env: LeserEnv) -> None:
    policy = ScriptedPolicy(seconds=0.2)
    queries = [f"sofa {i}" for i in range(12)]
    with serve_in_thread(ExpansionService(head_store, env, policy, tail_budget_ms=10_000, batch_wait_ms=50)) as url:
        results: list[dict] = [{}] * len(queries)

        def ask(index: int) -> None:
            results[index] = httpx.get(f"{url}/expand", params={"q": queries[index]}, timeout=30).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(queries))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batch = httpx.post(
            f"{url}/expand", json={"queries": ["office chair", "red lamp", "red lamp"]}, timeout=30
        ).json()
        metrics = httpx.get(f"{url}/metrics").text
    assert [r["source"] for r in results] == ["model"] * 12
    assert [r["expansions"] for r in results] == [[f"{q} chair"] for q in queries]
    assert sum(policy.batches[:-1]) >= 12 and len(policy.batches) < 12  # several queries per generation
    assert [r["source"] for r in batch["results"]] == ["store", "model", "model"]
    assert 'leser_expand_requests_total{source="model"}' in metrics and "leser_store_hit_rate" in metrics
    assert "leser_expand_latency_seconds_bucket" in metrics and "leser_generation_batch_size_count" in metrics


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        ({"params": {"q": ""}}, 400),
        ({"params": {"q": "   "}}, 400),
        ({"params": {"q": "x" * 10_000}}, 413),
        ({"params": {"q": 'title:"chair" AND -(sofa) OR \\ ~2 ^3 🛋️'}}, 200),
        ({"url_suffix": "?q=chair%FF%FE"}, 200),  # undecodable bytes
        ({"content": b'{"queries": ["chair\\ud800"]}', "headers": {"content-type": "application/json"}}, 200),
        ({"json": {"queries": [["not", "text"]]}}, 400),
        ({"json": {"queries": "chair"}}, 422),
        ({"content": b"\xff{not json", "headers": {"content-type": "application/json"}}, 400),
    ],
)
def test_bad_input_gets_a_clear_4xx_or_a_normal_answer_and_the_server_keeps_serving(
    head_store: ExpansionStore, env: LeserEnv, request_args: dict, status: int
) -> None:
    request_args = dict(request_args)
    with serve_in_thread(ExpansionService(head_store, env, ScriptedPolicy(), tail_budget_ms=2000)) as url:
        suffix = request_args.pop("url_suffix", "")
        post = "json" in request_args or "content" in request_args
        response = (httpx.post if post else httpx.get)(f"{url}/expand{suffix}", **request_args)
        assert response.status_code == status, response.text
        assert "detail" in response.json() if status >= 400 else response.json()
        assert httpx.get(f"{url}/expand", params={"q": "office chair"}).json()["source"] == "store"


def test_leser_precompute_and_serve_from_the_command_line(tmp_path: Path, env: LeserEnv) -> None:
    """The commands a search team runs: a prf store for test queries, then a server on it."""
    from typer.testing import CliRunner

    from agents.cli import app

    store = tmp_path / "prf.db"
    result = CliRunner().invoke(
        app, ["precompute", "--agent", "prf", "--split", "test", "--out", str(store), "--json", "--batch-size", "64"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["size"] == len(env.catalog.query_ids("test"))
    assert ExpansionStore(store).meta == {"format_version": "1", **fingerprints("prf", "synthetic")}

    with serve_in_process(["--store", str(store), "--fallback", "none"]) as url:
        query = env.catalog.queries[env.catalog.query_ids("test")[0]]
        answer = httpx.get(f"{url}/expand", params={"q": query}).json()
        assert answer["source"] == "store" and answer["expansions"] == ExpansionStore(store).get(query).expansions
        assert httpx.get(f"{url}/expand", params={"q": "zz unknown tail"}).json()["source"] == "fallback"
    missing = serve_in_process(["--store", str(tmp_path / "missing.db")])
    with pytest.raises(RuntimeError, match=r"did not start \(exit code 2\)[\s\S]*no such store"), missing:
        pass
    stale = CliRunner().invoke(app, ["serve", "--store", str(store), "--catalog", str(tmp_path / "nope")])
    assert stale.exit_code == 2 and "Traceback" not in stale.output
    unchecked = CliRunner().invoke(app, ["serve", "--store", str(store), "--engine-check"])
    assert unchecked.exit_code == 2 and "--engine-check applies to the --checkpoint's policy" in unchecked.output


def test_the_serving_benchmark_runs_end_to_end(tiny_run: Path, tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "benchmarks" / "bench_serve.py"
    args = ["--checkpoint", str(tiny_run), "--head", "4", "--tail", "2", "--clients", "2", "--quality-limit", "4"]
    args.append("--engine-check")  # a run trained without it, measured behind it: the flag reaches every path
    result = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench" / "serve.json").read_text())
    assert {"store hit", "online tail (model)", "fallback (prf)", "bare store lookup"} <= set(report["latency"])
    assert report["latency"]["store hit"]["ratio_to_bare"] > 0 and report["engine_check"] is True
    assert set(report["quality"]) == {"none", "prf", "grpo+check"}
    assert (tmp_path / "bench" / "latency.png").stat().st_size > 1000
