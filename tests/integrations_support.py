"""Shared by the framework, batch and Ray tests: a Router over a loopback API tier and a local
fake, and the batch test's requests (deterministic, with some invalid ones)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from router import Router
from router.testing import FakeBackend, LoopbackRerankServer

API_KEY = "loopback-key"
WORDS = [
    "tea",
    "green",
    "black",
    "oolong",
    "leaf",
    "water",
    "brew",
    "steep",
    "cup",
    "hot",
    "cold",
    "milk",
    "sugar",
    "caffeine",
    "plant",
    "china",
    "india",
]


def api_config(server: LoopbackRerankServer, **extra: Any) -> dict[str, Any]:
    """A Cohere tier on the loopback server (the best quality) over a local BM25 fallback."""
    return {
        "budgets": {"max_cost_usd": 1.0, "latency_ms": 10_000},
        "backends": {
            "cohere": {
                "type": "cohere",
                "model": "rerank-v3.5",
                "base_url": server.base_url("cohere"),
                "spec": {"quality": {"web": 0.9}},
            },
            "bm25": {"type": "lexical"},
        },
        **extra,
    }


def api_and_local_router(server: LoopbackRerankServer) -> Router:
    """The loopback Cohere tier (quality 0.9) and a local fake (0.6): the API wins unless a
    request is on-premise."""
    local = FakeBackend("local", spec={"quality": {"web": 0.6}})
    config = api_config(server)
    config["backends"] = {"cohere": config["backends"]["cohere"]}
    return Router(config, backends={"local": local})


def make_requests(n: int, *, seed: int = 7, invalid_every: int = 97) -> list[dict[str, Any]]:
    """``n`` batch requests with 3-20 documents each; every ``invalid_every``-th has an empty query."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        docs = [" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(rng.randint(3, 20))]
        query = "" if invalid_every and i % invalid_every == invalid_every - 1 else " ".join(rng.choices(WORDS, k=3))
        request: dict[str, Any] = {"id": f"q{i:05d}", "query": query, "documents": docs, "top_n": 3}
        if i % 5 == 0:
            request["documents"] = [{"text": t, "id": f"d{j}"} for j, t in enumerate(docs)]
        out.append(request)
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
