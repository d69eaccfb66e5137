"""The ``decision_log`` section of the config, and the log it builds.

```yaml
decision_log: {sink: jsonl, path: logs/decisions.jsonl}   # or sqlite (path), otel, none
```
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.decisions.log import DecisionLog, DecisionSink
from router.errors import ConfigError
from router.validation import echo

__all__ = ["SINKS", "DecisionLogConfig", "SinkName", "build_decision_log", "build_sink"]

SinkName = Literal["jsonl", "sqlite", "otel", "none"]
SINKS: tuple[str, ...] = get_args(SinkName)


class DecisionLogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: SinkName = "jsonl"
    path: str | None = None
    """The JSONL or SQLite file (required for those sinks); parent directories are created."""
    include_text: bool = False
    """Keep the query and the top documents' text in records (never in OTel spans). Off by default."""
    top_k: int = Field(10, ge=1, le=1000)
    """How many returned document ids each record keeps, best first."""
    queue_size: int = Field(10_000, ge=1)
    """Records waiting for the writer at most; past that, records are dropped and counted."""
    query_salt: str = ""
    """Mixed into each record's query digest. Set a private value so nobody holding the log can
    find out which records are about a common query by hashing it themselves."""

    @model_validator(mode="after")
    def _path_when_needed(self) -> DecisionLogConfig:
        if self.sink in ("jsonl", "sqlite") and not (self.path and self.path.strip()):
            example = "decisions.jsonl" if self.sink == "jsonl" else "decisions.sqlite"
            raise ValueError(f"path is required for sink {self.sink!r}: the file to write (e.g. path: {example})")
        if self.path is not None and "\0" in self.path:
            raise ValueError("path contains a NUL character")
        return self


def _check_writable(sink: str, path: str) -> None:
    """Open the file the sink will write, now: a path that cannot be written is a ConfigError at
    load, not records dropped later in the writer thread. (Creates the file and its folders.)"""
    where = f"decision_log.path {echo(path)}"
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise ConfigError(f"{where} is a directory; give a file name inside it (e.g. {target / f'decisions.{sink}'})")
        os.close(os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        if sink == "sqlite":
            conn = sqlite3.connect(target)
            try:
                conn.execute("PRAGMA schema_version")
            finally:
                conn.close()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be written: {exc.strerror or exc}; give a writable file path") from None
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{where} is not an SQLite database ({exc}); give a new file or an SQLite one") from None


def build_sink(config: DecisionLogConfig) -> DecisionSink | None:
    """The configured sink (None for ``none``); heavy sinks import their dependency here."""
    if config.sink == "none":
        return None
    if config.sink == "otel":
        from router.decisions.otel import OtelSink

        return OtelSink()
    assert config.path is not None  # the validator guarantees it
    _check_writable(config.sink, config.path)
    if config.sink == "sqlite":
        from router.decisions.sqlite import SqliteSink

        return SqliteSink(config.path)
    from router.decisions.jsonl import JsonlSink

    return JsonlSink(config.path)


def build_decision_log(config: DecisionLogConfig) -> DecisionLog | None:
    """A running :class:`DecisionLog` for ``config``, or None when ``sink: none``."""
    sink = build_sink(config)
    return None if sink is None else DecisionLog(sink, queue_size=config.queue_size)
