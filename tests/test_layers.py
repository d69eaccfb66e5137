"""Imports flow one way (../shared/DESIGN.md, "Layers"): no cycles, no edge up the layers.

Every import in ``router/`` and ``policies/`` counts, deferred ones inside functions included; only
imports under ``if TYPE_CHECKING:`` (type-only, never run) are left out. Importing ``a.b.c`` also
runs the packages ``a`` and ``a.b`` (unless the importer is inside them already), so those edges
count too: ``router/__init__`` is a lazy facade
that imports nothing at run time, which is what keeps ``policies`` free to import ``router`` leaves.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("router", "policies")

# Lowest first. A module may import its own layer or any below it, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaf types",
        (
            "router.secrets",
            "router.residency",
            "router.errors",
            "router.validation",
            "router.shells",
            "router.plan",
            "router.request",
            "router.result",
            "router.catalog",
            "router.tokens",
            "router.backends.base",
            "router.documents",
            "router.constraints",
            "router.settings",
            "router.datasets",
            "router.profile",
            "router.budget",
            "router.retrieval",
        ),
    ),
    (
        "features, estimators, backends, policies",
        (
            "router.features",
            "router.latency",
            "router.cost",
            "router.estimate",
            "router.scores",
            "router.deadline",
            "router.resilience",
            "router.backends",
            "router.onnx",
            "policies",
        ),
    ),
    (
        "executor, accounting, experiments, decisions",
        ("router.executor", "router.accounting", "router.experiments", "router.decisions", "router.cache"),
    ),
    (
        "config, engine, api",
        (
            "router.config",
            "router.compose",
            "router.engine",
            "router.api",
            "router.sync",
            "router.batch",
            "router.warmup",
            "router.testing",
            "router",
        ),
    ),
    ("service and integrations", ("router.service", "router.integrations")),
    ("offline tooling", ("router.offline", "router.cli", "router.__main__")),
)
OFFLINE = "offline tooling"


def layer_of(module: str, layers: Iterable[tuple[str, tuple[str, ...]]] = LAYERS) -> tuple[int, str]:
    """The layer whose most specific prefix matches ``module``."""
    best: tuple[int, int, str] | None = None
    for rank, (name, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, name)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to tests/test_layers.py LAYERS")
    return best[1], best[2]


def modules(root: Path = ROOT) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def import_graph(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (resolved to the longest known name), parents included."""
    known = set(sources)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def ancestors(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    def with_parents(name: str, source: str) -> set[str]:
        # Importing a.b.c first runs a and a.b, except those the importer is already inside of.
        return {name} | ((ancestors(name) - ancestors(source) - {source}) & known)

    graph: dict[str, set[str]] = {}
    for module, text in sources.items():
        tree = ast.parse(text)
        skipped = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for name in names:
                target = resolve(name)
                if target is not None:
                    targets |= with_parents(target, module)
        graph[module] = targets - {module}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_edges(graph: Mapping[str, set[str]], layers: Iterable[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    table = tuple(layers)
    out = []
    for source, targets in sorted(graph.items()):
        rank, name = layer_of(source, table)
        for target in sorted(targets):
            target_rank, target_name = layer_of(target, table)
            if target_rank > rank and not (source == "router" or target == "router"):
                out.append(f"{source} ({name}) imports {target} ({target_name})")
    return out


def _graph() -> dict[str, set[str]]:
    return import_graph({name: path.read_text(encoding="utf-8") for name, path in modules().items()})


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_import_cycles() -> None:
    assert cycles(_graph()) == []


def test_imports_flow_down_the_layers() -> None:
    assert upward_edges(_graph()) == []


def test_the_request_path_never_imports_offline_tooling() -> None:
    graph = _graph()
    offline = {m for m in graph if layer_of(m)[1] == OFFLINE}
    crossing = sorted(f"{s} -> {t}" for s, targets in graph.items() if s not in offline for t in targets & offline)
    assert crossing == []


def test_policies_import_only_leaf_router_modules() -> None:
    allowed = {"router", "router.plan", "router.features", "router.catalog", "router.constraints", "router.errors"}
    allowed |= {"router.backends", "router.backends.base", "router.validation", "router.tokens", "router.request"}
    allowed |= {"router.budget"}  # the cross-request budget's signal (a leaf type)
    allowed |= {"router.shells"}  # fast constructors of frozen dataclasses (a leaf)
    graph = _graph()
    used = {t for s, targets in graph.items() if s.startswith("policies") for t in targets if t.startswith("router")}
    assert used <= allowed, used - allowed


def test_the_router_facade_imports_nothing_at_run_time() -> None:
    assert _graph()["router"] == set()


def test_a_synthetic_cycle_and_an_upward_edge_are_caught() -> None:
    sources = {
        "router": "",
        "router.errors": "",
        "router.engine": "from router.errors import X\nfrom policies.simple import P\n",
        "policies": "",
        "policies.simple": "def f():\n    from router.engine import Router  # deferred: still an edge\n",
        "router.offline": "",
        "router.offline.fitting": "from router.errors import X\n",
        "router.plan": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from router.engine import R\n",
    }
    graph = import_graph(sources)
    assert ["policies.simple", "router.engine"] in cycles(graph)
    assert "router.plan" not in {m for c in cycles(graph) for m in c}  # type-only imports do not count
    assert (
        "policies.simple (features, estimators, backends, policies) imports router.engine (config, engine, api)"
        in upward_edges(graph)
    )
    graph["router.executor"] = {"router.offline.fitting"}
    assert any(e.startswith("router.executor") for e in upward_edges(graph))
    assert upward_edges(import_graph({"router": "", "router.errors": "", "router.plan": "import router.errors\n"})) == []


@pytest.mark.parametrize("first", ["policies", "router", "router.plan", "policies.cascade"])
def test_packages_import_in_any_order_in_a_fresh_process(first: str) -> None:
    code = f"import {first}; import policies, router; router.Router; policies.create_policy('constrained')"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_import_router_loads_no_heavy_or_offline_module() -> None:
    code = (
        "import sys, router; router.Router; router.route_rerank\n"
        "heavy = ('torch', 'onnxruntime', 'cohere', 'voyageai', 'sentence_transformers', 'matplotlib', 'ir_measures')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('router.offline') or m == 'router.cli']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
