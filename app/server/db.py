"""The server's SQLite file: jobs, their event log, their written files, remembered hashes.

Why SQLite (stdlib `sqlite3`): a queue and a history that survive a restart are what users of
ComfyUI's in-memory queue asked for for years, and one file in the data dir is all a rented box
needs. One connection shared by every thread behind one lock: the writers are few (the event
ingest thread, submit/cancel requests) and short, and the lock is also what keeps event `seq`
numbers, their commit and their fan-out in one order (see `hub`). WAL mode with
synchronous=NORMAL: a commit does not wait for the disk, and a crash loses at most the last
transactions, never the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    body_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    qseq INTEGER NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    nodes TEXT NOT NULL DEFAULT '{}',
    attempt INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, qseq);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job, seq);
CREATE TABLE IF NOT EXISTS files (
    job TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    node_id TEXT,
    frame INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, path)
);
CREATE TABLE IF NOT EXISTS model_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""


class Database:
    """One SQLite file; `tx()` for a write transaction, `rows()` / `row()` for reads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        with self.lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer imagebash (schema {version}); "
                                   "update imagebash or start with another --data-dir")
            self._conn.executescript(SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on an exception)."""
        with self.lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._conn.execute(sql, args).fetchall()

    def row(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self.lock:
            return self._conn.execute(sql, args).fetchone()

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        r = self.row(sql, args)
        return None if r is None else r[0]

    def close(self) -> None:
        with self.lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
