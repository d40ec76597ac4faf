"""The event log and its fan-out: every record gets the next global `seq`, is committed to
SQLite, then pushed to every live WebSocket subscriber, in that order, under one lock.

Why this order: a subscriber that reconnects with `after=N` first registers for live records,
then reads the log from SQLite. A record committed before that read is in the read; one
committed after it was published after the subscriber registered, so it is in its queue. The
subscriber drops queued records whose seq it already sent, so it sees every record once, in
seq order, with no gap between the replay and the live part (`replay_then_live`).

A subscriber that cannot keep up (its queue over `SUBSCRIBER_LIMIT`) is cut off with a
sentinel rather than letting the server's memory grow; it reconnects with `after=` and misses
nothing, because the log is on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from app.server.db import Database

log = logging.getLogger(__name__)

#: Records queued for one subscriber before it is told to reconnect.
SUBSCRIBER_LIMIT = 20_000
#: Records read from SQLite per query while replaying.
REPLAY_PAGE = 500


class Overflow(Exception):
    """A subscriber fell more than SUBSCRIBER_LIMIT records behind; it should reconnect with after=."""


class Subscriber:
    """One live listener on an asyncio loop; records arrive through `queue` as (seq, text)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, job: str | None, limit: int) -> None:
        self.loop = loop
        self.job = job
        self.limit = limit
        self.queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        self.dropped = False
        self._backlog = 0  # pushed and not taken yet (counted here: the queue fills later, on its loop)
        self._lock = threading.Lock()

    def push(self, seq: int, job: str, text: str) -> None:
        """Called with the hub's lock held, from any thread."""
        if self.dropped or (self.job is not None and job != self.job):
            return
        with self._lock:
            self._backlog += 1
            over = self._backlog > self.limit
        try:
            if over:
                self.dropped = True
                self.loop.call_soon_threadsafe(self.queue.put_nowait, None)
            else:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (seq, text))
        except RuntimeError:  # the subscriber's loop is closed: it is gone
            self.dropped = True

    async def get(self) -> tuple[int, str] | None:
        item = await self.queue.get()
        with self._lock:
            self._backlog -= 1
        return item


class EventHub:
    """Appends records to the `events` table and fans them out (see the module docstring)."""

    def __init__(self, db: Database, subscriber_limit: int = SUBSCRIBER_LIMIT) -> None:
        self.db = db
        self.subscriber_limit = subscriber_limit
        self._subs: list[Subscriber] = []
        self._seq = int(db.scalar("SELECT COALESCE(MAX(seq), 0) FROM events") or 0)

    @property
    def last_seq(self) -> int:
        with self.db.lock:
            return self._seq

    # writing --------------------------------------------------------------------------------------
    def insert(self, conn: sqlite3.Connection,
               items: Sequence[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> list[tuple[int, str, str]]:
        """Number and store records inside the caller's transaction (`db.tx()`, which holds the
        lock); returns (seq, job, text) to hand to `publish` after the commit."""
        out = []
        seq = self._seq
        for job, event, extra in items:  # on an error the transaction rolls back, self._seq untouched
            seq += 1
            record: dict[str, Any] = {"seq": seq, "job": job, "event": event}
            if extra:
                record.update(extra)
            text = json.dumps(record, separators=(",", ":"))
            conn.execute("INSERT INTO events (seq, job, record) VALUES (?, ?, ?)", (seq, job, text))
            out.append((seq, job, text))
        self._seq = seq
        return out

    def publish(self, records: Sequence[tuple[int, str, str]]) -> None:
        """Push committed records to the live subscribers (call with the db lock held)."""
        if not records or not self._subs:
            return
        for sub in tuple(self._subs):
            for seq, job, text in records:
                sub.push(seq, job, text)

    def append(self, job: str, event: dict[str, Any], extra: dict[str, Any] | None = None,
               before_commit: Callable[[sqlite3.Connection], None] | None = None) -> int:
        """Store and publish one record (the server's own events: a queued job cancelled, a job
        interrupted by a restart); `before_commit` writes more in the same transaction."""
        with self.db.lock:
            with self.db.tx() as conn:
                if before_commit is not None:
                    before_commit(conn)
                records = self.insert(conn, [(job, event, extra)])
            self.publish(records)
            return records[0][0]

    # reading --------------------------------------------------------------------------------------
    def page(self, after: int, limit: int, job: str | None = None) -> list[tuple[int, str]]:
        """Records with seq > after, oldest first, at most `limit`."""
        if job is None:
            rows = self.db.rows("SELECT seq, record FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        else:
            rows = self.db.rows("SELECT seq, record FROM events WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?",
                                (job, after, limit))
        return [(int(r[0]), str(r[1])) for r in rows]

    def subscribe(self, job: str | None = None) -> Subscriber:
        sub = Subscriber(asyncio.get_running_loop(), job, self.subscriber_limit)
        with self.db.lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self.db.lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def replay_then_live(self, after: int | None, job: str | None = None,
                               run_sync: Callable[..., Awaitable[Any]] | None = None) -> AsyncIterator[str]:
        """Every record after `after` (None: from now on), then live ones, each once, in seq order.

        Raises Overflow when the consumer fell too far behind. `run_sync` runs the SQLite reads
        off the event loop (anyio's `to_thread.run_sync` in the app).
        """
        sub = self.subscribe(job)
        try:
            last = self.last_seq if after is None else int(after)
            while True:  # the replay, a page at a time (registered first: see the module docstring)
                if run_sync is not None:
                    page = await run_sync(self.page, last, REPLAY_PAGE, job)
                else:
                    page = self.page(last, REPLAY_PAGE, job)
                for seq, text in page:
                    last = seq
                    yield text
                if len(page) < REPLAY_PAGE:
                    break
            while True:
                item = await sub.get()
                if item is None:
                    raise Overflow(f"too far behind (more than {self.subscriber_limit} records): "
                                   f"reconnect with after={last}")
                seq, text = item
                if seq <= last:
                    continue  # already sent by the replay
                last = seq
                yield text
        finally:
            self.unsubscribe(sub)
