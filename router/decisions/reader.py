"""Read decision logs back: JSON Lines or SQLite, one file or several, into one :class:`LogContents`.

    log = read_log(["decisions.jsonl", "replica-2.sqlite"])
    log.decisions            # every DecisionRecord, in file order
    log.feedback["r-17"]     # the merged FeedbackRecord of request r-17
    log.invalid_lines        # torn or foreign lines skipped (the writer may have died mid-line)

The format is chosen by suffix (``.jsonl``/``.ndjson``/``.json`` vs ``.sqlite``/``.sqlite3``/``.db``),
else by sniffing the SQLite header. Feedback for one request may arrive several times: clicks are
united in order of arrival (timestamp, then file order), later grades override earlier ones.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.decisions.record import DecisionRecord, FeedbackRecord

__all__ = ["LogContents", "merge_feedback", "read_log"]

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
SQLITE_SUFFIXES = frozenset({".sqlite", ".sqlite3", ".db"})
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True, slots=True)
class LogContents:
    """What a log holds: decisions in file order, feedback merged per request id."""

    decisions: tuple[DecisionRecord, ...]
    feedback: Mapping[str, FeedbackRecord]
    invalid_lines: int = 0
    """Lines (or SQLite rows) skipped because they were torn, not JSON, or not a known record."""
    sources: tuple[str, ...] = ()
    invalid_examples: tuple[str, ...] = field(default=())
    """Up to five ``path:line`` locations of skipped lines, to point a reader at them."""


def merge_feedback(records: Iterable[FeedbackRecord]) -> dict[str, FeedbackRecord]:
    """One record per request id: clicks united in the order given, later grades override."""
    merged: dict[str, FeedbackRecord] = {}
    for record in records:
        before = merged.get(record.request_id)
        if before is None:
            merged[record.request_id] = FeedbackRecord(
                record.request_id, record.timestamp, tuple(dict.fromkeys(record.clicked)), dict(record.relevance)
            )
            continue
        merged[record.request_id] = FeedbackRecord(
            record.request_id,
            max(before.timestamp, record.timestamp),
            tuple(dict.fromkeys((*before.clicked, *record.clicked))),
            {**before.relevance, **record.relevance},
        )
    return merged


def read_log(paths: str | Path | Iterable[str | Path]) -> LogContents:
    """Read one or more logs. Raises FileNotFoundError for a missing file, ValueError for a file
    that is not a decision log (e.g. a SQLite database without a ``decisions`` table)."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    decisions: list[DecisionRecord] = []
    feedback: list[FeedbackRecord] = []
    invalid: list[str] = []
    for item in items:
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such decision log (give the JSON Lines or SQLite file the router wrote)")
        rows = _sqlite_rows(path) if _is_sqlite(path) else _jsonl_rows(path)
        for where, data in rows:
            record = _parse(data)
            if isinstance(record, DecisionRecord):
                decisions.append(record)
            elif isinstance(record, FeedbackRecord):
                feedback.append(record)
            else:
                invalid.append(where)
    ordered = sorted(feedback, key=lambda r: r.timestamp)  # stable: file order among equal timestamps
    return LogContents(
        decisions=tuple(decisions),
        feedback=merge_feedback(ordered),
        invalid_lines=len(invalid),
        sources=tuple(str(p) for p in items),
        invalid_examples=tuple(invalid[:5]),
    )


def _is_sqlite(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in SQLITE_SUFFIXES:
        return True
    if suffix in JSONL_SUFFIXES:
        return False
    with path.open("rb") as stream:
        return stream.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC


_Row = tuple[str, Any]
"""(``path:line`` or ``path:table#rowid``, the decoded JSON or None when it did not decode)."""


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            yield f"{path}:{number}", _loads(raw)


def _sqlite_rows(path: Path) -> Iterator[_Row]:
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ValueError(f"{path}: cannot open as SQLite ({exc})") from exc
    try:
        for table, order in (("decisions", "rowid"), ("feedback", "timestamp, rowid")):
            try:
                cursor = connection.execute(f"SELECT rowid, record FROM {table} ORDER BY {order}")
                rows = cursor.fetchall()
            except sqlite3.DatabaseError as exc:
                raise ValueError(
                    f"{path}: not a decision log ({exc}); expected tables decisions(..., record) and feedback(..., record)"
                ) from exc
            for rowid, text in rows:
                yield f"{path}:{table}#{rowid}", _loads(text)
    finally:
        connection.close()


def _loads(raw: str | bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _parse(data: Any) -> DecisionRecord | FeedbackRecord | None:
    if not isinstance(data, dict):
        return None
    try:
        if data.get("kind") == "decision":
            return DecisionRecord.from_dict(data)
        if data.get("kind") == "feedback":
            return FeedbackRecord.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return None
