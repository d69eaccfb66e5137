"""The ``decision_log`` section of the config, and the log it builds.

```yaml
decision_log: {sink: jsonl, path: logs/decisions.jsonl}   # or sqlite (path), otel, none
```
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.decisions.log import DecisionLog, DecisionSink

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
        return self


def build_sink(config: DecisionLogConfig) -> DecisionSink | None:
    """The configured sink (None for ``none``); heavy sinks import their dependency here."""
    if config.sink == "none":
        return None
    if config.sink == "otel":
        from router.decisions.otel import OtelSink

        return OtelSink()
    assert config.path is not None  # the validator guarantees it
    if config.sink == "sqlite":
        from router.decisions.sqlite import SqliteSink

        return SqliteSink(config.path)
    from router.decisions.jsonl import JsonlSink

    return JsonlSink(config.path)


def build_decision_log(config: DecisionLogConfig) -> DecisionLog | None:
    """A running :class:`DecisionLog` for ``config``, or None when ``sink: none``."""
    sink = build_sink(config)
    return None if sink is None else DecisionLog(sink, queue_size=config.queue_size)
