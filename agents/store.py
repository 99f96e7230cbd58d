"""The expansion store: precomputed expansions for head queries, one SQLite file.

SQLite through the standard library: one file any tool reads (``sqlite3 store.db "select * from
expansions limit 5"``), every batch written in one transaction (a killed precompute loses at most
the batch in flight), readers never see half a batch. Tables:

- ``expansions(query, text, expansions, reward, breakdown)``: ``query`` is the normalised query
  (``normalize_query``: Unicode NFKC, case-folded, whitespace collapsed), the key a server looks
  up; ``text`` the query as first written; ``expansions`` a JSON list (what is served: the
  expansions the reward kept); ``reward`` and ``breakdown`` (JSON) the environment's score.
- ``meta(key, value)``: the store's format version and the fingerprints of the policy and the
  catalog that produced it (``policy_fingerprint``, ``catalog_fingerprint``), so that a store
  made by another policy or for another catalog is detected, never served silently.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = "1"
MAX_QUERY_CHARS = 1000  # a longer text is no shopping query: refused, not stored or generated for

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS expansions (
    query TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    expansions TEXT NOT NULL,
    reward REAL,
    breakdown TEXT
);
"""


class StoreError(Exception):
    """A store that cannot be used: not an SQLite file, not this format, or stale."""


def normalize_query(text: str) -> str:
    """The key a query is stored and looked up under: NFKC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class StoredExpansion:
    query: str
    text: str
    expansions: list[str]
    reward: float | None
    breakdown: dict[str, Any] | None


class ExpansionStore:
    """Open (or create) a store. ``fingerprints`` (policy, catalog) are recorded on creation and
    checked on every later open: a mismatch raises ``StoreError`` naming what differs."""

    def __init__(self, path: str | Path, fingerprints: dict[str, str] | None = None, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no such store (build one with `leser precompute`)")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path}: not a file (a store is one SQLite file)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # check_same_thread=False: the server reads from its worker threads; SQLite serialises.
            self.connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.executescript(SCHEMA)
            meta = dict(self.connection.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path}: not an expansion store ({error})") from None
        if not meta:
            self._set_meta({"format_version": FORMAT_VERSION, **(fingerprints or {})})
            meta = dict(self.connection.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: store format {meta.get('format_version')!r}, this version reads {FORMAT_VERSION!r}"
            )
        self.meta = meta
        for name, value in (fingerprints or {}).items():
            if meta.get(name) != value:
                raise StoreError(
                    f"{self.path}: stale store: its {name} is {meta.get(name)!r}, this run's is {value!r} "
                    "(precompute into a new store, or serve it with the policy and catalog that made it)"
                )

    def _set_meta(self, values: dict[str, str]) -> None:
        with self.transaction():
            self.connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def transaction(self) -> Any:
        return _Transaction(self.connection)

    def put_many(self, records: Iterable[StoredExpansion]) -> None:
        """Insert or replace records, all in one transaction."""
        rows = [
            (
                r.query,
                r.text,
                json.dumps(r.expansions, ensure_ascii=False),
                r.reward,
                None if r.breakdown is None else json.dumps(r.breakdown, ensure_ascii=False),
            )
            for r in records
        ]
        with self.transaction():
            self.connection.executemany("INSERT OR REPLACE INTO expansions VALUES (?, ?, ?, ?, ?)", rows)

    def get(self, text: str) -> StoredExpansion | None:
        row = self.connection.execute(
            "SELECT query, text, expansions, reward, breakdown FROM expansions WHERE query = ?",
            (normalize_query(text),),
        ).fetchone()
        return None if row is None else _record(row)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The texts whose normalised query is not stored yet (first spelling of each), in order."""
        stored = {row[0] for row in self.connection.execute("SELECT query FROM expansions")}
        wanted: dict[str, str] = {}
        for text in texts:
            wanted.setdefault(normalize_query(text), text)
        return [text for key, text in wanted.items() if key not in stored and key]

    def __len__(self) -> int:
        return int(self.connection.execute("SELECT COUNT(*) FROM expansions").fetchone()[0])

    def __iter__(self) -> Iterator[StoredExpansion]:
        for row in self.connection.execute("SELECT query, text, expansions, reward, breakdown FROM expansions"):
            yield _record(row)

    def close(self) -> None:
        self.connection.close()


class _Transaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type | None, *_: Any) -> None:
        self.connection.execute("ROLLBACK" if kind else "COMMIT")


def _record(row: tuple) -> StoredExpansion:
    query, text, expansions, reward, breakdown = row
    return StoredExpansion(
        query, text, json.loads(expansions), reward, None if breakdown is None else json.loads(breakdown)
    )
