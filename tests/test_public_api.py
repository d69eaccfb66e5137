"""The public surface: pinned names, a light import, frozen results with small helpers."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import policies
import router
from router.testing import FakeBackend

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "onnxruntime", "cohere", "voyageai", "sentence_transformers", "transformers", "bm25s", "scipy"]

ROUTER_ALL = {
    "AuthenticationError",
    "Availability",
    "Backend",
    "BackendError",
    "BackendSpec",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadRequestError",
    "ConfigError",
    "DeadlineExceededError",
    "Constraints",
    "Document",
    "DuplicateIdError",
    "EmptyQueryError",
    "Explanation",
    "InvalidBudgetError",
    "InvalidConstraintsError",
    "InvalidDocumentsError",
    "InvalidRequestError",
    "InvalidTopNError",
    "LatencyParams",
    "MalformedResponseError",
    "MissingDependencyError",
    "Plan",
    "Pricing",
    "QueryTooLongError",
    "RankedItem",
    "RateLimitedError",
    "RequestLimits",
    "RerankResult",
    "RerankRouterError",
    "Router",
    "RouterConfig",
    "Scores",
    "ServerError",
    "StageReport",
    "TooManyDocumentsError",
    "UnknownNameError",
    "Usage",
    "__version__",
    "aroute_rerank",
    "get_default_router",
    "load_catalog",
    "load_config",
    "record_feedback",
    "route_rerank",
    "set_default_router",
}

POLICIES_ALL = {
    "DEFAULT_RULES",
    "POLICIES",
    "BackendView",
    "CheapestPolicy",
    "ConstrainedPolicy",
    "FastestPolicy",
    "FixedPolicy",
    "PlanningContext",
    "Policy",
    "Rule",
    "assess",
    "by_cost",
    "by_latency",
    "by_quality",
    "create_policy",
    "plan_by",
    "single_stage_options",
}


@pytest.mark.parametrize(("module", "expected"), [(router, ROUTER_ALL), (policies, POLICIES_ALL)])
def test_exported_members(module, expected):
    assert set(module.__all__) == expected
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name), name
    public = {
        name for name, value in vars(module).items() if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(module.__all__), f"public but not in __all__: {public - set(module.__all__)}"


def test_exported_classes_claim_the_package():
    # Re-exported from private modules, but they belong to the package.
    for name in router.__all__:
        value = getattr(router, name)
        if isinstance(value, type):
            assert value.__module__.startswith("router."), name


def test_error_tree():
    assert issubclass(router.InvalidRequestError, router.RerankRouterError)
    assert issubclass(router.InvalidRequestError, ValueError)
    for name in ("EmptyQueryError", "QueryTooLongError", "InvalidDocumentsError", "InvalidTopNError", "InvalidBudgetError"):
        assert issubclass(getattr(router, name), router.InvalidRequestError)
    assert issubclass(router.DuplicateIdError, router.InvalidDocumentsError)
    assert issubclass(router.TooManyDocumentsError, router.InvalidDocumentsError)
    assert issubclass(router.UnknownNameError, router.ConfigError)
    assert issubclass(router.ConfigError, ValueError)
    for name in ("BackendTimeoutError", "RateLimitedError", "AuthenticationError", "BadRequestError", "ServerError"):
        assert issubclass(getattr(router, name), router.BackendError)
    assert issubclass(router.MissingDependencyError, router.BackendUnavailableError)
    assert issubclass(router.MissingDependencyError, ImportError)
    assert router.RateLimitedError("slow down", backend="api", retry_after=2.5).retry_after == 2.5


def test_import_router_loads_no_heavy_dependency():
    code = (
        "import json, sys\n"
        "import router, policies, router.testing\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT)
    assert json.loads(out.stdout) == []


def test_building_the_default_router_loads_no_heavy_dependency():
    code = (
        "import json, sys\n"
        "import router\n"
        "r = router.Router('default')\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT)
    assert json.loads(out.stdout) == []


@pytest.fixture
def result(make_router):
    backend = FakeBackend("fake", spec={"quality": {"web": 0.8}})
    docs = [
        {"text": "dogs bark", "id": "a"},
        {"text": "the cat sat", "id": "b", "metadata": {"n": 1}},
        {"text": "a cat and a dog", "id": "c"},
        {"text": "cats purr", "id": "d"},
    ]
    return make_router({"fake": backend}).rerank("the cat", docs, top_n=2)


def test_result_helpers(result):
    assert [item.id for item in result.top()] == ["b", "c"]
    assert [item.id for item in result.top(3)] == ["b", "c", "a"]
    assert len(result.top(100)) == 4
    assert result.by_id("b").metadata["n"] == 1
    assert result.by_id("d").index == 3
    with pytest.raises(KeyError):
        result.by_id("zzz")
    assert result.indices == (1, 2, 0, 3)
    assert result.backends == ("fake",)
    assert result.models == ("fake",)


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (lambda r: r, "items"),
        (lambda r: r, "degraded"),
        (lambda r: r.items[0], "score"),
        (lambda r: r.stages[0], "ok"),
        (lambda r: r.explanation, "chosen"),
        (lambda r: r.explanation.options[0], "rejected"),
    ],
)
def test_results_are_frozen(result, target, field):
    obj = target(result)
    assert dataclasses.is_dataclass(obj)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, None)


def test_result_collections_are_immutable(result):
    assert isinstance(result.items, tuple)
    assert isinstance(result.stages, tuple)
    with pytest.raises(TypeError):
        result.by_id("b").metadata["n"] = 2


def test_route_rerank_uses_the_default_router(make_router):
    backend = FakeBackend("fake", spec={"quality": {"web": 0.8}})
    mine = make_router({"fake": backend})
    router.set_default_router(mine)
    try:
        result = router.route_rerank("cat", ["dog", "cat"], top_n=1)
        assert [item.index for item in result.top()] == [1]
        assert len(backend.calls) == 1
    finally:
        router.set_default_router(None)


async def test_aroute_rerank(make_router):
    backend = FakeBackend("fake", spec={"quality": {"web": 0.8}})
    router.set_default_router(make_router({"fake": backend}))
    try:
        result = await router.aroute_rerank("cat", ["dog", "cat"])
        assert result.indices == (1, 0)
    finally:
        router.set_default_router(None)


def test_sync_rerank_works_inside_a_running_loop(make_router):
    import asyncio

    r = make_router({"fake": FakeBackend("fake")})

    async def main():
        return r.rerank("cat", ["dog", "cat"])  # blocking call from async code: runs on the router's loop

    assert asyncio.run(main()).indices == (1, 0)


def test_router_repr(make_router):
    assert repr(make_router({"fake": FakeBackend("fake")})) == "Router(policy='constrained', backends=['fake'])"


def test_fake_backend_is_a_backend():
    assert isinstance(FakeBackend("x"), router.Backend)
