"""Configuration: shipped configs load; invalid ones fail at load, naming the bad field's path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import router.api as router_api
from router import ConfigError, Router, RouterConfig, UnknownNameError, load_config
from router.api import get_default_router, route_rerank, set_default_router
from router.backends.registry import BACKEND_TYPES
from router.config import CONFIG_ENV

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def test_default_config_loads():
    config = load_config(CONFIGS / "default.yaml")
    assert config.policy.name == "constrained"
    assert config.constraints.on_premise is True
    assert config.budgets.max_cost_usd == 0.0
    assert config.backends


def test_packaged_default_is_configs_default():
    assert load_config("default") == load_config(CONFIGS / "default.yaml")


def test_default_config_builds_a_router_without_loading_models():
    router = Router(CONFIGS / "default.yaml")
    try:
        assert set(router.backends) == set(router.config.backends)
        for backend in router.backends.values():
            assert getattr(backend, "_model", None) is None  # lazy: nothing loaded at build time
            assert backend.spec.data_leaves_premises is False
    finally:
        router.close()


def test_production_example_config_loads():
    path = CONFIGS / "production.example.yaml"
    if not path.exists():
        pytest.skip("configs/production.example.yaml not written yet")
    config = load_config(path)
    assert isinstance(config, RouterConfig)
    router = Router(config)  # spec overrides are validated when backends are built
    router.close()


def test_load_config_accepts_every_source(tmp_path):
    mapping = {"domain": "legal", "backends": {}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(mapping))
    from_mapping = load_config(mapping)
    assert load_config(path) == from_mapping
    assert load_config(str(path)) == from_mapping
    assert load_config(from_mapping) is from_mapping
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    assert load_config(empty) == RouterConfig()


def test_config_is_frozen():
    config = load_config({"backends": {}})
    with pytest.raises(Exception, match="frozen"):
        config.domain = "other"


# -- invalid configs -----------------------------------------------------------------------------


def cross_encoder(**fields):
    return {"type": "cross_encoder", "model": "cross-encoder/ms-marco-MiniLM-L6-v2", **fields}


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        (
            {"backends": {"x": {"type": "colbert"}}},
            ["backends.x:", "'colbert'", f"backend types: {', '.join(BACKEND_TYPES)}"],
        ),
        ({"backends": {"x": {"model": "m"}}}, ["backends.x:", "type"]),
        (
            {"backends": {"x": cross_encoder(batch_size=-1)}},
            ["backends.x.cross_encoder.batch_size:", "greater than or equal to 1", "got -1"],
        ),
        ({"backends": {"x": cross_encoder(max_concurrency=0)}}, ["backends.x.cross_encoder.max_concurrency:"]),
        ({"backends": {"x": cross_encoder(colour="red")}}, ["backends.x.cross_encoder.colour: Extra inputs are not permitted"]),
        ({"backends": {"x": {"type": "lexical", "b": 2}}}, ["backends.x.lexical.b:", "less than or equal to 1"]),
        ({"backends": {}, "colour": "red"}, ["colour: Extra inputs are not permitted", "got 'red'"]),
        ({"budgets": {"latency_ms": 0}}, ["budgets.latency_ms: Input should be greater than 0"]),
        ({"budgets": {"latency_ms": -5}}, ["budgets.latency_ms:", "got -5"]),
        ({"budgets": {"latency_ms": 3_600_000}}, ["budgets.latency_ms: Input should be less than or equal to 600000"]),
        ({"budgets": {"max_cost_usd": -1}}, ["budgets.max_cost_usd: Input should be greater than or equal to 0"]),
        ({"budgets": {"max_cost_usd": 500}}, ["budgets.max_cost_usd: Input should be less than or equal to 100"]),
        ({"budgets": {"latency_ms": "fast"}}, ["budgets.latency_ms:", "got 'fast'"]),
        ({"budgets": {"deadline": 5}}, ["budgets.deadline: Extra inputs are not permitted"]),
        ({"constraints": {"on_prem": True}}, ["constraints.on_prem: Extra inputs are not permitted"]),
        ({"constraints": {"on_premise": "maybe"}}, ["constraints.on_premise:"]),
        ({"limits": {"max_documents": 0}}, ["limits.max_documents:"]),
        ({"policy": {"name": "cheapest", "params": {"speed": 1}}}, ["policy.params.speed: Extra inputs are not permitted"]),
        ({"policy": {"name": "fixed"}}, ["policy.params.backend: Field required"]),
        (
            {"policy": {"name": "fixed", "params": {"backend": "cohere"}}, "backends": {"bm25": {"type": "lexical"}}},
            ["policy.params.backend: 'cohere' is not a configured backend (bm25)"],
        ),
    ],
)
def test_invalid_config_names_the_path(config, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message


def test_every_error_is_listed():
    with pytest.raises(ConfigError) as info:
        load_config({"budgets": {"latency_ms": -1, "max_cost_usd": -1}, "colour": 1})
    message = str(info.value)
    assert "budgets.latency_ms" in message and "budgets.max_cost_usd" in message and "colour" in message


def test_unknown_policy_lists_valid_names():
    with pytest.raises(
        UnknownNameError, match=r"unknown policy 'smart'; valid policy names: adaptive, cheapest, constrained, fastest, fixed"
    ):
        load_config({"policy": {"name": "smart"}})


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"pricing": {"scheme": "weird"}}, ["backends.x.spec.pricing.scheme:", "'per_search_unit'"]),
        ({"pricing": {"usd": -1}}, ["backends.x.spec.pricing.usd:"]),
        ({"latency": {"overhead_ms": -3}}, ["backends.x.spec.latency.overhead_ms:"]),
        ({"input": "triple"}, ["backends.x.spec.input:"]),
        ({"max_tokens_per_doc": 0}, ["backends.x.spec.max_tokens_per_doc:"]),
        ({"licence": "MIT"}, ["backends.x.spec.licence: Extra inputs are not permitted"]),
    ],
)
def test_bad_spec_override_names_the_path(spec, fragments):
    # Spec overrides merge into the catalog entry; they are validated when the router is built.
    with pytest.raises(ConfigError) as info:
        Router({"backends": {"x": cross_encoder(spec=spec)}})
    for fragment in fragments:
        assert fragment in str(info.value)


def test_spec_override_applies_over_the_catalog():
    router = Router({"backends": {"x": cross_encoder(spec={"license": "MIT", "latency": {"overhead_ms": 1}})}})
    try:
        spec = router.backends["x"].spec
        assert spec.license == "MIT"
        assert spec.latency.overhead_ms == 1
        assert spec.latency.per_token_ms > 0  # the rest of the catalog entry is kept
        assert spec.quality["web"] > 0.7
    finally:
        router.close()


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("backends:\n  x: {type: lexical\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="config must be a mapping at the top level"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_wrong_source_type():
    with pytest.raises(ConfigError, match="config must be a path, mapping or RouterConfig, got int"):
        load_config(42)


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError):
        load_config({"colour": 1})


# -- the default router ------------------------------------------------------------------------------


@pytest.fixture
def fresh_default_router():
    set_default_router(None)
    yield
    router = router_api._default  # close whatever the test built
    set_default_router(None)
    if router is not None:
        router.close()


def test_env_var_picks_the_default_routers_config(tmp_path, monkeypatch, fresh_default_router):
    path = tmp_path / "app.yaml"
    path.write_text("domain: legal\npolicy: {name: cheapest}\nbackends: {}\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    router = get_default_router()
    assert router.config.domain == "legal"
    assert router.policy.name == "cheapest"
    assert get_default_router() is router  # built once
    result = route_rerank("q", ["a", "b"])
    assert result.explanation.policy == "cheapest"
    assert result.indices == (0, 1)


def test_env_var_with_a_bad_path_fails_loudly(tmp_path, monkeypatch, fresh_default_router):
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        get_default_router()


def test_without_the_env_var_the_packaged_default_is_used(monkeypatch, fresh_default_router):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert get_default_router().config == load_config("default")


def test_set_default_router(make_router, fresh_default_router):
    mine = make_router(domain="medical")
    set_default_router(mine)
    assert get_default_router() is mine
