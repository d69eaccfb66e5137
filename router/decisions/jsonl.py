"""The default sink: one JSON object per line (``record.to_dict()``; ``kind`` tells decisions from feedback).

Several writers may append to one file, threads of one process and separate processes alike,
without interleaving or tearing lines: each batch is encoded first, then written with a single
``os.write`` on an ``O_APPEND`` descriptor while holding an exclusive ``fcntl.flock`` on it. O_APPEND
makes the kernel place each write at the current end of the file; the lock keeps a large batch
(which a filesystem may split) in one piece against other lock holders, and a thread lock does the
same between sinks sharing this object. (On Windows there is no flock: O_APPEND alone.)
The file is created with mode 0600, since it may hold query text when ``include_text`` is on.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from router.decisions.record import DecisionRecord, FeedbackRecord

if sys.platform != "win32":
    import fcntl

__all__ = ["JsonlSink", "encode_lines"]


def encode_lines(records: Sequence[DecisionRecord | FeedbackRecord]) -> bytes:
    """The records as UTF-8 JSON lines, each ending in a newline."""
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode()


class JsonlSink:
    """Appends records to ``path`` as JSON lines; creates the parent directories."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"

    def write(self, records: Sequence[DecisionRecord | FeedbackRecord]) -> None:
        data = encode_lines(records)
        if not data:
            return
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if sys.platform != "win32":
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:  # a regular file takes it all in one call; loop only on a short write
                    view = view[os.write(self._fd, view) :]
            finally:
                if sys.platform != "win32":
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
