"""`leser serve`: expansions over HTTP, for a search team's query pipeline.

A head query is answered from the expansion store (``leser precompute``); a tail query is
generated online by the policy within a latency budget, concurrent tail requests batched into
one generation; when the budget would be exceeded (or no policy is loaded, or the policy writes
no valid action) the fallback answers: prf's expansions, or none.

- ``GET /expand?q=...`` -> ``{"query", "expansions", "source": "store" | "model" | "fallback",
  "latency_ms"}``; ``POST /expand`` with ``{"queries": [...]}`` -> ``{"results": [...]}``.
- ``GET /healthz`` -> ``{"status": "ok", "store_size", "policy"}``.
- ``GET /metrics``: Prometheus text (requests by source, store lookups by result and the hit
  rate, a latency histogram by source, batch sizes of online generation).

An empty query gets a 400, a query over 1,000 characters a 413; any other text (query syntax,
emoji, undecodable bytes, lone surrogates) gets a normal answer. A generation that outlives its
request's budget is kept: its expansions answer the same tail query next time.

The budget: a tail request is admitted to generation only if the expected wait (queued batches
and the one running, at the measured seconds per batch) leaves room for its own batch within
``tail_budget_ms``; otherwise the fallback answers at once. An admitted request that is still
waiting when its budget runs out also gets the fallback.
"""

import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from agents.base import Agent
from agents.store import MAX_QUERY_CHARS, ExpansionStore
from leser_env.actions import parse_action
from leser_env.env import LeserEnv
from leser_env.search import LONE_SURROGATES

FALLBACKS = ("prf", "none")


class QueryError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ExpansionService:
    """What the HTTP app calls: store, online policy, fallback, and the metrics they feed."""

    def __init__(
        self,
        store: ExpansionStore,
        env: LeserEnv,
        policy: Agent | None = None,
        fallback: str = "prf",
        tail_budget_ms: float = 500.0,
        max_batch: int = 8,
        batch_wait_ms: float = 5.0,
        tail_cache_size: int = 10_000,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        import agents

        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, not {fallback!r}")
        self.store, self.env, self.policy = store, env, policy
        self.fallback_agent = (
            agents.make("prf", catalog=env.catalog_spec, data_dir=env.data_dir) if fallback == "prf" else None
        )
        self.engine_check = bool(getattr(policy, "engine_check", False))
        self.budget = tail_budget_ms / 1000
        self.max_batch, self.batch_wait = max_batch, batch_wait_ms / 1000
        self.seconds_per_batch: float | None = None  # measured; None until the first batch (then admitted)
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], asyncio.Future]] | None = None
        self.running = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leser-policy")
        self.tail_cache: OrderedDict[str, list[str]] = OrderedDict()
        self.tail_cache_size = tail_cache_size
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "leser_expand_requests", "Queries answered, by source", ["source"], registry=self.registry
        )
        self.lookups = Counter("leser_store_lookups", "Store lookups, by result", ["result"], registry=self.registry)
        self.hit_rate = Gauge("leser_store_hit_rate", "Share of lookups the store answered", registry=self.registry)
        self.looked_up = {True: 0, False: 0}
        self.latency = Histogram(
            "leser_expand_latency_seconds",
            "Time to answer one query, by source",
            ["source"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_sizes = Histogram(
            "leser_generation_batch_size",
            "Tail queries per online generation",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        Gauge("leser_store_size", "Queries in the store", registry=self.registry).set_function(lambda: len(store))

    # -- answering ------------------------------------------------------------------------

    async def expand(self, text: Any) -> dict[str, Any]:
        started = time.perf_counter()
        query = clean(text)
        stored = self.store.get(query)
        self.lookups.labels("hit" if stored else "miss").inc()
        self.looked_up[stored is not None] += 1
        self.hit_rate.set(self.looked_up[True] / sum(self.looked_up.values()))
        if stored is not None:
            return self._answer(query, stored.expansions, "store", started)
        key = " ".join(query.casefold().split())
        if key in self.tail_cache:
            self.tail_cache.move_to_end(key)
            return self._answer(query, self.tail_cache[key], "model", started)
        observation, _ = self.env.observe(text=query)
        if self.policy is not None and self._admit():
            future = asyncio.get_running_loop().create_future()
            assert self.queue is not None
            await self.queue.put((key, observation, future))
            remaining = self.budget - (time.perf_counter() - started)
            try:
                expansions = await asyncio.wait_for(asyncio.shield(future), timeout=max(remaining, 0.0))
            except TimeoutError:
                expansions = None
            if expansions:
                return self._answer(query, expansions, "model", started)
        return self._answer(query, self._fallback(observation), "fallback", started)

    async def expand_many(self, texts: Sequence[Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.expand(text) for text in texts)))

    def _answer(self, query: str, expansions: list[str], source: str, started: float) -> dict[str, Any]:
        seconds = time.perf_counter() - started
        self.requests.labels(source).inc()
        self.latency.labels(source).observe(seconds)
        return {"query": query, "expansions": expansions, "source": source, "latency_ms": round(seconds * 1000, 3)}

    def _fallback(self, observation: dict[str, Any]) -> list[str]:
        if self.fallback_agent is None:
            return []
        parsed = parse_action(self.fallback_agent.act([observation])[0])
        return list(parsed.expansions) if parsed.valid else []

    # -- online generation ---------------------------------------------------------------

    def _admit(self) -> bool:
        """Whether a new tail request's batch can be expected to finish within the budget."""
        if self.seconds_per_batch is None:
            return True
        assert self.queue is not None
        batches_ahead = self.running + self.queue.qsize() // self.max_batch
        return (batches_ahead + 1) * self.seconds_per_batch + self.batch_wait <= self.budget

    async def run_batches(self) -> None:
        """The generation loop: up to ``max_batch`` queued tail queries at a time, in one thread."""
        if self.queue is None:
            self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.batch_wait
            while len(batch) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout=left))
                except TimeoutError:
                    break
            self.running = 1
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self._generate, [item[1] for item in batch])
            except Exception as error:  # a failing policy must not stop the server: the fallback answers
                results = [None] * len(batch)
                print(f"leser serve: generation failed: {error!r}", flush=True)
            seconds = time.perf_counter() - started
            self.seconds_per_batch = (
                seconds if self.seconds_per_batch is None else 0.7 * self.seconds_per_batch + 0.3 * seconds
            )
            self.running = 0
            self.batch_sizes.observe(len(batch))
            for (key, _, future), expansions in zip(batch, results, strict=True):
                if expansions:
                    self.tail_cache[key] = expansions
                    if len(self.tail_cache) > self.tail_cache_size:
                        self.tail_cache.popitem(last=False)
                if not future.done():
                    future.set_result(expansions)

    def _generate(self, observations: list[dict[str, Any]]) -> list[list[str] | None]:
        assert self.policy is not None
        results: list[list[str] | None] = []
        for action in self.policy.act(observations):
            parsed = parse_action(action)
            expansions = list(parsed.expansions) if parsed.valid else []
            if self.engine_check:  # served as trained: without the expansions that match nothing
                expansions = [y for y in expansions if self.env.engine.search(y, 1, self.env.matching).ids]
            results.append(expansions or None)
        return results


def clean(text: Any) -> str:
    """A request's query as text, or a QueryError with the status to answer."""
    if not isinstance(text, str):
        raise QueryError(400, f"a query is a string, not {type(text).__name__}")
    text = LONE_SURROGATES.sub("\ufffd", text)  # undecodable input is answered as text, never a 500
    if not text.strip():
        raise QueryError(400, "empty query")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(413, f"query of {len(text):,} characters (at most {MAX_QUERY_CHARS:,})")
    return text.strip()


def create_app(service: ExpansionService) -> Any:
    """The FastAPI app over a service."""
    from contextlib import asynccontextmanager

    from fastapi import Body, FastAPI, Query
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.queue = asyncio.Queue()  # before the first request can arrive
        task = asyncio.create_task(service.run_batches())
        yield
        task.cancel()
        service.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="LESER expansions", lifespan=lifespan)

    @app.exception_handler(QueryError)
    async def query_error(_: Any, error: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.get("/expand")
    async def expand(q: Annotated[str, Query(description="the shopper's query")] = "") -> dict[str, Any]:
        return await service.expand(q)

    @app.post("/expand")
    async def expand_batch(queries: Annotated[list[Any], Body(embed=True, max_length=1000)]) -> dict[str, Any]:
        for text in queries:
            clean(text)  # one bad query refuses the batch, naming why
        return {"results": await service.expand_many(queries)}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "store_size": len(service.store), "policy": service.policy is not None}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    return app


@contextlib.contextmanager
def serve_in_thread(service: ExpansionService, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """A real uvicorn server for ``service`` in a background thread (tests, benchmarks, notebooks);
    yields its base URL. ``port=0`` takes a free port."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def serve_in_process(
    arguments: Sequence[str], host: str = "127.0.0.1", port: int = 0, start_timeout: float = 600.0
) -> Iterator[str]:
    """``leser serve ARGUMENTS`` in a process of its own, as a search team runs it (a benchmark's
    clients then share no interpreter with the server); yields its base URL once ``/healthz``
    answers, and stops it on leaving. ``port=0`` takes a free port. A server that exits before it
    answers raises, with the end of what it printed."""
    import httpx

    port = port or free_port(host)
    url = f"http://{host}:{port}"
    command = [sys.executable, "-c", "from agents.cli import app; app()", "serve", *arguments]
    with tempfile.TemporaryFile() as output:
        server = subprocess.Popen(
            [*command, "--host", host, "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    printed = output.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"`leser serve` on {url} did not start (exit code {server.poll()}):\n{printed}")
                time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (the operating system's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
