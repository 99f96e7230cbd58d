"""`leser precompute`: expansions for many queries, scored, into an expansion store.

Locally: the queries not yet in the store (a stopped run resumes where it stopped) go through
the agent in batches (greedy decoding for an LLM policy); each batch is scored by the
environment's reward (the breakdown is stored) and written in one transaction.

On a Ray cluster (``ray_address``; ``"local"`` starts one on this machine): Ray Data maps the same
batches over policy actors (one GPU each where the cluster has GPUs) and scoring actors on CPUs;
the driver writes what comes back into the same store, so the store is the same whichever way it
was built (a test checks the stored expansions are equal under greedy decoding).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.base import Agent
from agents.store import MAX_QUERY_CHARS, ExpansionStore, StoredExpansion, normalize_query
from catalogs import load_catalog
from catalogs.storage import tree_digests
from leser_env.env import LeserEnv


def fingerprints(
    agent_source: str, catalog: str, data_dir: str | None = None, engine_check: bool = False
) -> dict[str, str]:
    """What a store records about what made it: the policy (its files' digests and whether it acts
    behind the engine check, or the agent's name for a baseline) and the catalog (its content hash)."""
    source = Path(agent_source)
    if source.is_dir():
        digests = tree_digests(source / "policy") if (source / "policy").is_dir() else {}
        described = json.loads((source / "agent.json").read_text()) if (source / "agent.json").is_file() else {}
        record: dict[str, Any] = {"agent": described.get("name"), "files": digests}
        if engine_check or described.get("config", {}).get("engine_check"):
            record["engine_check"] = True  # absent without it: stores made without the check keep their fingerprint
        payload = json.dumps(record, sort_keys=True)
        policy = "run:" + hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()
    else:
        policy = f"agent:{agent_source}"
    loaded = load_catalog(catalog, data_dir)
    return {"policy_fingerprint": policy, "catalog_fingerprint": f"{loaded.name}:{loaded.content_hash[:24]}"}


def load_agent(
    agent_source: str,
    catalog: str,
    data_dir: str | None = None,
    device: str | None = None,
    engine_check: bool = False,
) -> Agent:
    """A trained run directory (its agent.json) or a baseline by name. ``engine_check`` serves a run
    behind the engine check whatever its agent.json says (a run trained with it already is)."""
    import agents

    if Path(agent_source).is_dir():
        options: dict[str, Any] = {"device": device} if device else {}
        if engine_check:
            options["engine_check"] = True
        return agents.load(agent_source, catalog=catalog, data_dir=data_dir, **options)
    refuse_engine_check_for_baseline(agent_source, engine_check)
    return agents.make(agent_source, catalog=catalog, data_dir=data_dir)


def refuse_engine_check_for_baseline(agent_source: str, engine_check: bool) -> None:
    if engine_check and not Path(agent_source).is_dir():
        raise ValueError(f"the engine check is for a trained run's policy, not the baseline {agent_source!r}")


def read_queries(catalog: str, data_dir: str | None, split: str | None, queries_file: str | Path | None) -> list[str]:
    """Query texts from a file (one a line; a TSV's last column) or a catalog split."""
    if queries_file is not None:
        texts = []
        for line in Path(queries_file).read_text(encoding="utf-8-sig").splitlines():
            text = line.rsplit("\t", 1)[-1].strip()
            if text:
                texts.append(text)
        return texts
    loaded = load_catalog(catalog, data_dir)
    return [loaded.queries[qid] for qid in loaded.query_ids(split or "train")]


def expand_batch(agent: Agent, env: LeserEnv, texts: Sequence[str]) -> list[StoredExpansion]:
    """Generate and score one batch: what both the local and the Ray path store."""
    observations = [env.observe(text=text)[0] for text in texts]
    actions = agent.act(observations)
    return [
        score(env, text, observation, action)
        for text, observation, action in zip(texts, observations, actions, strict=True)
    ]


def score(env: LeserEnv, text: str, observation: dict[str, Any], action: str) -> StoredExpansion:
    _, infos = env.score_group(observation["query"], [action])
    breakdown = infos[0]["reward_breakdown"]
    expansions = list(breakdown["expansions"]) if breakdown["valid"] else []
    return StoredExpansion(normalize_query(text), text, expansions, float(breakdown["reward"]), breakdown)


def precompute(
    agent_source: str,
    catalog: str,
    texts: Sequence[str],
    out: str | Path,
    data_dir: str | None = None,
    batch_size: int = 16,
    ray_address: str | None = None,
    device: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    engine_check: bool = False,
) -> dict[str, Any]:
    """Fill the store at ``out`` with expansions for ``texts``; returns counts. ``engine_check``: see
    ``load_agent``."""
    refuse_engine_check_for_baseline(agent_source, engine_check)
    store = ExpansionStore(out, fingerprints(agent_source, catalog, data_dir, engine_check))
    missing = store.missing(texts)
    todo = [text for text in missing if len(text) <= MAX_QUERY_CHARS]
    distinct = len({normalize_query(text) for text in texts} - {""})
    if progress:
        progress(0, len(todo))
    if ray_address is not None:
        done = _precompute_ray(
            agent_source, catalog, data_dir, todo, store, batch_size, ray_address, device, progress, engine_check
        )
    else:
        agent = load_agent(agent_source, catalog, data_dir, device, engine_check)
        env = _scoring_env(agent, catalog, data_dir)
        done = 0
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            store.put_many(expand_batch(agent, env, batch))
            done += len(batch)
            if progress:
                progress(done, len(todo))
    result = {
        "store": str(out),
        "distinct_queries": distinct,
        "already_stored": distinct - len(missing),
        "too_long": len(missing) - len(todo),
        "generated": done,
        "size": len(store),
    }
    store.close()
    return result


def _scoring_env(agent: Agent, catalog: str, data_dir: str | None) -> LeserEnv:
    """Score as the agent is served: behind the engine check when it was trained with it."""
    engine_check = True if getattr(agent, "engine_check", False) else None
    return LeserEnv(catalog=catalog, data_dir=data_dir, split="train", engine_check=engine_check)


def _precompute_ray(
    agent_source: str,
    catalog: str,
    data_dir: str | None,
    todo: Sequence[str],
    store: ExpansionStore,
    batch_size: int,
    address: str,
    device: str | None,
    progress: Callable[[int, int], None] | None,
    engine_check: bool,
) -> int:
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0

    class Generate:  # one policy per actor: on a GPU where the cluster has them
        def __init__(self) -> None:
            placed = "cuda" if gpus else (device or "cpu")
            self.agent = load_agent(agent_source, catalog, data_dir, placed, engine_check)
            self.env = _scoring_env(self.agent, catalog, data_dir)  # observations only; scoring is below

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            texts = [str(text) for text in batch["text"]]
            observations = [self.env.observe(text=text)[0] for text in texts]
            return {
                "text": texts,
                "observation": [json.dumps(o, ensure_ascii=False) for o in observations],
                "action": self.agent.act(observations),
            }

    class Score:  # the search engine and relevance model on CPU actors
        def __init__(self) -> None:
            self.env = _scoring_env(load_agent(agent_source, catalog, data_dir, "cpu", engine_check), catalog, data_dir)

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            records = [
                score(self.env, str(text), json.loads(observation), str(action))
                for text, observation, action in zip(batch["text"], batch["observation"], batch["action"], strict=True)
            ]
            return {"record": [json.dumps(record.__dict__, ensure_ascii=False) for record in records]}

    dataset = ray.data.from_items([{"text": text} for text in todo])
    generated = dataset.map_batches(Generate, batch_size=batch_size, concurrency=1, num_gpus=gpus)
    scored = generated.map_batches(Score, batch_size=batch_size, concurrency=1, num_cpus=1)
    done, pending = 0, []
    for row in scored.iter_rows():
        pending.append(StoredExpansion(**json.loads(row["record"])))
        if len(pending) >= batch_size:
            store.put_many(pending)
            done += len(pending)
            pending = []
            if progress:
                progress(done, len(todo))
    if pending:
        store.put_many(pending)
        done += len(pending)
        if progress:
            progress(done, len(todo))
    return done
