"""Config ``cache:``: the score cache (router.cache)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from router.validation import FiniteFloat, NotBool

__all__ = ["CacheConfig"]


class CacheConfig(BaseModel):
    """Off by default: a provider may change the model behind a name (catalog ``served_as``) with
    nothing in the request to show it, so serving yesterday's score is a choice you make, with a
    TTL you accept. Turned on, it caches the tiers a repeat costs money or a network round trip
    for, unless ``backends`` names them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    backends: tuple[str, ...] | None = None
    """The backends to cache. None: every priced or remote backend whose scores are per document
    (a lexical tier, which scores against the request's own candidates, never is)."""
    scope: Literal["tenant", "shared"] = "tenant"
    """'tenant': each tenant (``context["tenant"]``, set by the gateway) reads only its own
    entries; 'shared': every caller reads every entry."""
    max_entries: Annotated[int, NotBool] = Field(100_000, ge=1)
    max_bytes: Annotated[int, NotBool] = Field(64 * 1024 * 1024, ge=1024)
    """Approximate bytes of this process's store (router.cache.memory)."""
    ttl_s: FiniteFloat = Field(3600.0, gt=0)
    shared: bool = True
    """With ``shared_state:``, also keep entries in Redis for every replica."""
    coalesce: bool = True
    """Concurrent identical backend calls (same backend, query and missing documents) become one."""
    version: str = ""
    """Part of every key: change it to drop every cached score at once."""
