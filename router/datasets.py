"""Labelled sets for replay: queries, their candidates with text, graded judgments, recorded runs.

Formats (see ``../shared/data/README.md``):

- TREC DL (``trec-dl19/``, ``trec-dl21/``): ``bm25-top100.json``, a list of
  ``{"query": str, "hits": [{"content", "qid", "docid", "rank", "score"}]}`` (castorini/rank_llm);
  ``qrels.txt`` in TREC format ``qid Q0 docid grade``; ``runs/*.run`` in TREC run format
  ``qid Q0 docid rank score tag`` (only the rank is used: rank_llm's score column is BM25's scores
  reassigned by rank).
- Cranfield (``cranfield/``): ``cran.all.1400`` / ``cran.qry`` in the SMART ``.I/.T/.A/.B/.W``
  layout and ``cranqrel``. Gotchas handled here: ``cranqrel`` numbers queries 1..225 by their
  *position* in ``cran.qry`` (the ``.I`` ids skip numbers), its codes run from 1 (complete answer)
  to 4 (minimal interest) plus -1, so gain = 5 - code and -1 -> 0; two abstracts are empty. The
  collection has no first stage: candidates are the BM25 (bm25s, title + abstract) top ``depth``,
  which reproduces the README's nDCG@10 of 0.352.
- Your own data (``.jsonl``): one query per line,
  ``{"qid": "q1", "query": "...", "candidates": [{"id": "d1", "text": "..."}, ...]}`` in the
  first stage's order, with judgments in a TREC qrels file (``--qrels``).

Nothing here copies data anywhere: loaders read the files where they are.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from router.errors import ConfigError

__all__ = [
    "Candidate",
    "Dataset",
    "LabelledQuery",
    "load_cranfield",
    "load_dataset",
    "load_jsonl",
    "load_rank_llm_json",
    "load_trec_dl",
    "read_trec_qrels",
    "read_trec_run",
]

Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class Candidate:
    docid: str
    text: str
    score: float | None = None
    """The retriever's score, when the data records it (rank_llm hits' ``score``)."""


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    qid: str
    text: str
    candidates: tuple[Candidate, ...]
    """In the first stage's order (the retriever order the router starts from)."""

    def documents(self) -> list[dict[str, Any]]:
        """The candidates as router documents: ``{"text", "id"}`` with the docid as id, and the retriever's
        ``score`` where the data records one (router.retrieval)."""
        return [
            {"text": c.text, "id": c.docid} if c.score is None else {"text": c.text, "id": c.docid, "score": c.score}
            for c in self.candidates
        ]

    def retriever_scores(self) -> tuple[float, ...] | None:
        """The retriever's score of each candidate, or None unless every one has one."""
        scores = [c.score for c in self.candidates]
        return None if not scores or None in scores else tuple(float(v) for v in scores if v is not None)


@dataclass(frozen=True)
class Dataset:
    name: str
    domain: str
    """The router domain its quality figures belong to ('web', 'scientific', ...)."""
    queries: tuple[LabelledQuery, ...]
    qrels: Qrels
    runs: Mapping[str, Path] = field(default_factory=dict)
    """Recorded runs found beside the data: name -> TREC run file."""
    rel: int = 2
    """Grade from which a document counts as relevant for binary measures (MRR, recall)."""

    def __post_init__(self) -> None:
        qids = [q.qid for q in self.queries]
        if len(set(qids)) != len(qids):
            raise ConfigError(f"dataset {self.name}: duplicate query ids")

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def qids(self) -> tuple[str, ...]:
        return tuple(q.qid for q in self.queries)

    def subset(self, qids: Iterable[str], name: str | None = None) -> Dataset:
        """The queries whose ids are in ``qids``, in this dataset's order."""
        keep = set(qids)
        return replace(self, name=name or self.name, queries=tuple(q for q in self.queries if q.qid in keep))

    def head(self, n: int) -> Dataset:
        return replace(self, queries=self.queries[:n])


def read_run_ranks(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC run -> {qid: {docid: rank}}; the best rank is kept if a docid repeats."""
    ranks: dict[str, dict[str, int]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise ValueError(f"{path}:{number}: expected 'qid Q0 docid rank score [tag]', got {line!r}")
        table = ranks.setdefault(parts[0], {})
        rank = int(parts[3])
        table[parts[2]] = min(rank, table.get(parts[2], rank))
    return ranks


def read_trec_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid iter docid grade`` -> {qid: {docid: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise ConfigError(f"{path}:{number}: expected 'qid Q0 docid grade', got {line!r}")
        qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return qrels


def read_trec_run(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC run ``qid Q0 docid rank score tag`` -> {qid: {docid: rank}} (best rank kept on repeats)."""
    try:
        return read_run_ranks(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _score(value: object) -> float | None:
    """A recorded retriever score: a finite number, else none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def load_rank_llm_json(path: str | Path, depth: int | None = None) -> list[LabelledQuery]:
    """castorini/rank_llm retrieve results: ``[{"query", "hits": [{"content", "qid", "docid", "rank"}]}]``."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    queries: list[LabelledQuery] = []
    for position, entry in enumerate(raw):
        hits = sorted(entry["hits"], key=lambda h: int(h.get("rank", 0)))[:depth]
        if not hits:
            raise ConfigError(f"{path}: query #{position} has no hits")
        qid = str(hits[0]["qid"])
        candidates = tuple(Candidate(str(h["docid"]), str(h["content"]), _score(h.get("score"))) for h in hits)
        queries.append(LabelledQuery(qid, str(entry["query"]), candidates))
    return queries


def load_trec_dl(directory: str | Path, *, name: str | None = None, domain: str = "web", depth: int | None = None) -> Dataset:
    """A TREC DL folder: ``bm25-top100.json``, ``qrels.txt`` and optional ``runs/*.run``."""
    folder = Path(directory)
    qrels = read_trec_qrels(folder / "qrels.txt")
    queries = tuple(q for q in load_rank_llm_json(folder / "bm25-top100.json", depth) if q.qid in qrels)
    runs = {p.stem: p for p in sorted((folder / "runs").glob("*.run"))} if (folder / "runs").is_dir() else {}
    return Dataset(name or folder.name, domain, queries, _frozen(qrels), MappingProxyType(runs))


_FIELD = re.compile(r"^\.([TABW])\s*$")


def _smart_records(path: Path) -> list[dict[str, str]]:
    """Records of the SMART format: ``.I id`` then ``.T``/``.A``/``.B``/``.W`` sections."""
    records: list[dict[str, str]] = []
    section: str | None = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            records.append({"I": line.split()[1]})
            section = None
            continue
        match = _FIELD.match(line)
        if match:
            section = match.group(1)
            records[-1][section] = ""
        elif section is not None and records:
            records[-1][section] += line + "\n"
    return records


def _squash(text: str) -> str:
    return " ".join(text.split())


def load_cranfield(directory: str | Path, *, depth: int = 100, name: str = "cranfield", domain: str = "scientific") -> Dataset:
    """Cranfield with BM25 (bm25s over title + abstract) as the first stage, top ``depth``."""
    folder = Path(directory)
    docs = _smart_records(folder / "cran.all.1400")
    texts = [_squash(d.get("T", "") + " " + d.get("W", "")) for d in docs]
    topics = [_squash(q.get("W", "")) for q in _smart_records(folder / "cran.qry")]
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "cranqrel").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        code = int(parts[2])
        # cranqrel's query numbers are positions in cran.qry; codes 1 (best) .. 4, and -1.
        qrels.setdefault(parts[0], {})[parts[1]] = 0 if code < 0 else 5 - code
    try:
        import bm25s
    except ImportError as exc:  # the first stage needs it
        raise ConfigError("loading Cranfield needs bm25s: pip install 'rerank-router[lexical]'") from exc
    index = bm25s.BM25()
    index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    found, _ = index.retrieve(bm25s.tokenize(topics, stopwords="en", show_progress=False), k=depth, show_progress=False)
    queries = tuple(
        LabelledQuery(str(position), topic, tuple(Candidate(docs[int(j)]["I"], texts[int(j)]) for j in found[position - 1]))
        for position, topic in enumerate(topics, 1)
        if str(position) in qrels
    )
    return Dataset(name, domain, queries, _frozen(qrels))


def load_jsonl(
    path: str | Path, qrels: str | Path | None = None, *, name: str | None = None, domain: str = "web", rel: int = 2
) -> Dataset:
    """Your own labelled set: JSON Lines of ``{"qid", "query", "candidates": [{"id", "text"}]}``.

    Without ``qrels`` the set has no judgments: enough for a replay backend's index, not to measure."""
    queries: list[LabelledQuery] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            candidates = tuple(Candidate(str(c.get("id", c.get("docid"))), str(c["text"])) for c in entry["candidates"])
            queries.append(LabelledQuery(str(entry["qid"]), str(entry["query"]), candidates))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{path}:{number}: expected {{'qid', 'query', 'candidates': [{{'id', 'text'}}]}} ({type(exc).__name__}: {exc})"
            ) from exc
    judged = read_trec_qrels(qrels) if qrels is not None else {}
    return Dataset(name or Path(path).stem, domain, tuple(queries), _frozen(judged), rel=rel)


def load_dataset(
    path: str | Path, *, qrels: str | Path | None = None, domain: str | None = None, depth: int | None = None
) -> Dataset:
    """A TREC DL folder, a Cranfield folder, or a ``.jsonl`` file with ``qrels``: whichever ``path`` is."""
    target = Path(path)
    if (target / "bm25-top100.json").is_file():
        return load_trec_dl(target, domain=domain or "web", depth=depth)
    if (target / "cran.all.1400").is_file():
        return load_cranfield(target, depth=depth or 100, domain=domain or "scientific")
    if target.is_file() and target.suffix == ".jsonl":
        return load_jsonl(target, qrels, domain=domain or "web")
    raise ConfigError(
        f"{target}: not a dataset (expected a TREC DL folder with bm25-top100.json, a Cranfield folder, or a .jsonl file)"
    )


def _frozen(qrels: Mapping[str, Mapping[str, int]]) -> Qrels:
    return MappingProxyType({q: MappingProxyType(dict(d)) for q, d in qrels.items()})
