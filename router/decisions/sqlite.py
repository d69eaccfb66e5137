"""A sink for querying: SQLite (stdlib) in WAL mode, so readers never wait on the writer and several
processes can append to one file (each batch is one ``BEGIN IMMEDIATE`` transaction; a writer that
finds the database locked waits up to ``busy_timeout_s``).

The schema is fixed (the reader and the report depend on it): the JSON of ``to_dict()`` in
``record``, plus the columns that queries filter on.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from router.decisions.record import DecisionRecord, FeedbackRecord

__all__ = ["SCHEMA", "SqliteSink"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (request_id TEXT NOT NULL, timestamp REAL NOT NULL, experiment TEXT, arm TEXT, shadow INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_request_id ON decisions (request_id);
CREATE INDEX IF NOT EXISTS decisions_experiment_arm ON decisions (experiment, arm);
CREATE TABLE IF NOT EXISTS feedback (request_id TEXT NOT NULL, timestamp REAL NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_request_id ON feedback (request_id);
"""


def _json(record: DecisionRecord | FeedbackRecord) -> str:
    return json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))


class SqliteSink:
    """Writes records to the ``decisions`` and ``feedback`` tables of the database at ``path``.

    The connection opens on the first write, i.e. in the log's writer thread (sqlite3 connections
    belong to the thread that made them); a lock makes direct use from other threads safe too.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteSink({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        # autocommit mode (isolation_level=None): transactions are the explicit BEGIN/COMMIT below
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL keeps it consistent
            conn.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def write(self, records: Sequence[DecisionRecord | FeedbackRecord]) -> None:
        decisions = [
            (r.request_id, r.timestamp, r.experiment, r.arm, int(r.shadow), _json(r))
            for r in records
            if isinstance(r, DecisionRecord)
        ]
        feedback = [(r.request_id, r.timestamp, _json(r)) for r in records if isinstance(r, FeedbackRecord)]
        if not decisions and not feedback:
            return
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if decisions:
                    conn.executemany(
                        "INSERT INTO decisions (request_id, timestamp, experiment, arm, shadow, record) VALUES (?, ?, ?, ?, ?, ?)",
                        decisions,
                    )
                if feedback:
                    conn.executemany("INSERT INTO feedback (request_id, timestamp, record) VALUES (?, ?, ?)", feedback)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
