"""Invariant 5 (issue 12, finding 6): no error, repr, explanation or exception chain carries a secret.

A secret here is a value given in a secret-bearing field (``api_key``, a key pasted into
``api_key_env``, a Redis URL with a password) or anything shaped like a credential (URL userinfo,
``sk-``/``pa-`` keys, ``Bearer`` tokens). Each check reads the whole rendered traceback
(``traceback.format_exception``), which includes every ``__cause__`` / ``__context__`` link.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
from conftest import build_remote
from pydantic import ValidationError

from router import Router
from router.backends.cohere import CohereBackend
from router.backends.http import HttpBackend
from router.backends.voyage import VoyageBackend
from router.config import SharedStateConfig, load_config
from router.errors import (
    AuthenticationError,
    BackendError,
    ConfigError,
    RerankRouterError,
    ServerError,
    scrub_exception,
)
from router.secrets import RedactedError, env_var_name, looks_like_a_key, redact, safe_url
from router.testing import Fault, LoopbackRerankServer

SK_KEY = "sk-live-9f8e7d6c5b4a39281706"
COHERE_SHAPED_KEY = "Zk3PqL9vT2mWx8RbN4cY7hJ1sD6fG0aE5uKoIiMn"  # 40 mixed-case letters and digits, like Cohere's
VOYAGE_KEY = "pa-Xy12Zw34Vu56Ts78Rq90"
REDIS_PASSWORD = "hunter2-Redis-pw-77"
REDIS_URL = f"redis://:{REDIS_PASSWORD}@127.0.0.1:6390/0"
DOCS = ["green tea has health benefits", "coffee beans are roasted", "tea grows on hills"]


def rendered(exc: BaseException) -> str:
    """All a traceback shows of ``exc``: its message and every chained exception's."""
    return "".join(traceback.format_exception(exc))


def config_error(config: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value


# -- config: values given in secret-bearing fields are never echoed ----------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        {"type": "cohere", "model": "rerank-v3.5"},
        {"type": "voyage", "model": "rerank-2.5"},
        {"type": "http", "protocol": "vllm-v2", "base_url": "http://127.0.0.1:8000", "model": "m"},
    ],
)
@pytest.mark.parametrize("secret", [SK_KEY, COHERE_SHAPED_KEY, "plain-words-key"])
def test_an_api_key_in_a_backend_config_is_refused_and_never_echoed(backend, secret):
    err = config_error({"backends": {"b": {**backend, "api_key": secret}}})
    assert secret not in rendered(err)
    assert "backends.b" in str(err) and "api_key" in str(err) and "api_key_env" in str(err)


@pytest.mark.parametrize("pasted", [SK_KEY, COHERE_SHAPED_KEY, VOYAGE_KEY, "Bearer abcdefgh12345678", "key with spaces"])
@pytest.mark.parametrize("kind", ["cohere", "voyage", "http"])
def test_a_key_pasted_into_api_key_env_is_rejected_without_echo(pasted, kind):
    fields: dict[str, Any] = {"type": kind, "model": "m", "api_key_env": pasted}
    if kind == "http":
        fields |= {"protocol": "tei", "base_url": "http://127.0.0.1:8080"}
    err = config_error({"backends": {"b": fields}})
    assert pasted not in rendered(err)
    assert "backends.b" in str(err) and "api_key_env" in str(err) and "environment variable" in str(err)
    with pytest.raises(ConfigError) as via_router:
        Router({"backends": {"b": fields}})
    assert pasted not in rendered(via_router.value)


def test_env_var_names_are_validated_as_names():
    for name in ("CO_API_KEY", "VOYAGE_API_KEY", "_private", "my_key_2", "COHERE_API_KEY_PRODUCTION_EU_WEST_1"):
        assert env_var_name(name) == name
    for bad in ("", "1ABC", "CO-API-KEY", "a b", "x" * 200, COHERE_SHAPED_KEY, SK_KEY):
        with pytest.raises(ValueError) as info:
            env_var_name(bad)
        assert (bad or "\0") not in str(info.value)
    assert looks_like_a_key(COHERE_SHAPED_KEY) and not looks_like_a_key("COHEREAPIKEYPRODUCTION2026")


@pytest.mark.parametrize(
    "shared_state",
    [REDIS_URL, [REDIS_URL], {"redis_url_env": REDIS_URL}, {"redis_url_env": REDIS_PASSWORD}, {"redis_url": 5, "key_prefix": ""}],
    ids=["string", "list", "url-in-redis_url_env", "password-in-redis_url_env", "bad-fields"],
)
def test_a_redis_url_or_password_given_in_shared_state_is_never_echoed(shared_state):
    err = config_error({"shared_state": shared_state})
    text = rendered(err)
    assert REDIS_PASSWORD not in text and REDIS_URL not in text
    assert "shared_state" in str(err)
    with pytest.raises(ConfigError) as via_router:
        Router({"shared_state": shared_state})
    assert REDIS_PASSWORD not in rendered(via_router.value)
    if isinstance(shared_state, dict):  # validated alone, the model hides inputs too
        with pytest.raises(ValidationError) as direct:
            SharedStateConfig.model_validate(shared_state)
        assert REDIS_PASSWORD not in rendered(direct.value)


def test_a_malformed_redis_url_is_scrubbed_when_the_client_is_built():
    pytest.importorskip("redis")
    bad = f"redis://:{REDIS_PASSWORD}@127.0.0.1:notaport/0"
    with pytest.raises(ConfigError) as info:
        Router({"shared_state": {"redis_url": bad}})
    assert REDIS_PASSWORD not in rendered(info.value)


def test_credentials_in_a_base_url_are_refused_without_echo():
    url = f"http://admin:{REDIS_PASSWORD}@10.0.0.5:8000"
    err = config_error({"backends": {"b": {"type": "http", "protocol": "tei", "base_url": url, "model": "m"}}})
    assert REDIS_PASSWORD not in rendered(err)
    assert "base_url" in str(err) and "credentials" in str(err)


def test_valid_configs_still_load():
    config = load_config(
        {
            "backends": {"c": {"type": "cohere", "model": "rerank-v3.5", "api_key_env": "MY_COHERE_KEY"}},
            "shared_state": {"redis_url_env": "MY_REDIS_URL", "key_prefix": "p"},
        }
    )
    assert config.backends["c"].api_key_env == "MY_COHERE_KEY"  # type: ignore[union-attr]
    assert config.shared_state is not None and config.shared_state.redis_url_env == "MY_REDIS_URL"


# -- errors and their chains -----------------------------------------------------------------------


def test_router_errors_redact_credential_shapes_whoever_builds_the_message():
    err = BackendError(f"failed with Authorization: Bearer {COHERE_SHAPED_KEY} at {REDIS_URL} key {SK_KEY}", backend="x")
    for secret in (COHERE_SHAPED_KEY, REDIS_PASSWORD, SK_KEY):
        assert secret not in str(err) and secret not in repr(err)
    assert str(err).startswith("x: failed with Authorization: Bearer ***")
    assert redact("no API key: the environment variable CO_API_KEY is not set") == (
        "no API key: the environment variable CO_API_KEY is not set"
    )
    assert safe_url(f"https://u:{REDIS_PASSWORD}@host:1/p?api_key=abc") == "https://***@host:1/p"


def test_scrub_exception_replaces_foreign_links_and_keeps_router_ones():
    secret = "plainsecretvalue"  # no credential shape: only known-value redaction finds it

    class SdkError(Exception):
        pass

    try:
        try:
            try:
                raise ValueError(f"low level {secret}")
            except ValueError as low:
                raise SdkError(f'status 401, body: {{"message": "invalid key {secret}"}}') from low
        except SdkError as sdk:
            raise AuthenticationError("rejected", backend="b") from sdk
    except AuthenticationError as caught:
        err: BaseException = caught
    scrubbed = scrub_exception(err, [secret])
    assert scrubbed is err and secret not in rendered(err)
    assert isinstance(err.__cause__, RedactedError) and err.__cause__.original_type.endswith("SdkError")
    assert isinstance(err.__cause__.__cause__, RedactedError)
    assert "test_secrets" in rendered(err)  # the tracebacks of the replaced links are kept


def direct_call_error(backend: Any) -> BaseException:
    import asyncio

    async def call() -> BaseException:
        try:
            await backend.rerank("tea", DOCS)
        except RerankRouterError as exc:
            return exc
        finally:
            await backend.aclose()
        raise AssertionError("the call did not fail")

    return asyncio.run(call())


@pytest.mark.parametrize("kind", ["cohere", "voyage", "http"])
def test_a_direct_backend_calls_traceback_does_not_show_a_body_that_echoes_the_key(kind, monkeypatch):
    key = {"cohere": COHERE_SHAPED_KEY, "voyage": VOYAGE_KEY, "http": "plainsecretvalue-http"}[kind]
    with LoopbackRerankServer(api_key=key) as server:
        # The provider rejects the call and echoes the key in its body, as some APIs do.
        server.script([Fault.error(401, f"invalid api key {key!s} for this account")])
        if kind == "cohere":
            monkeypatch.setenv("CO_API_KEY", key)
            backend: Any = build_remote(CohereBackend, "c", {"model": "rerank-v3.5", "base_url": server.base_url("cohere")})
        elif kind == "voyage":
            monkeypatch.setenv("VOYAGE_API_KEY", key)
            backend = build_remote(VoyageBackend, "v", {"model": "rerank-2.5", "base_url": server.base_url("voyage")})
        else:
            monkeypatch.setenv("TEI_KEY", key)
            backend = build_remote(
                HttpBackend, "h", {"protocol": "tei", "model": "m", "base_url": server.base_url("tei"), "api_key_env": "TEI_KEY"}
            )
        err = direct_call_error(backend)
    assert isinstance(err, AuthenticationError)
    assert key not in rendered(err)
    assert "401" in str(err)


def test_an_unexpected_exception_inside_a_backend_leaves_scrubbed(monkeypatch):
    key = "plainsecretvalue-unexpected"
    monkeypatch.setenv("TEI_KEY", key)
    backend = build_remote(
        HttpBackend, "h", {"protocol": "tei", "model": "m", "base_url": "http://127.0.0.1:9", "api_key_env": "TEI_KEY"}
    )

    async def boom(query: str, documents: Any) -> Any:
        raise RuntimeError(f"client state dump: headers={{'Authorization': 'Bearer {key}'}}")

    monkeypatch.setattr(backend, "_score_batch", boom)
    err = direct_call_error(backend)
    assert type(err) is BackendError and key not in rendered(err)


def test_reprs_and_explanations_hold_no_key(monkeypatch):
    monkeypatch.setenv("CO_API_KEY", COHERE_SHAPED_KEY)
    with LoopbackRerankServer(api_key="another-key-the-server-wants") as server:
        router = Router(
            {
                "backends": {
                    "cohere": {"type": "cohere", "model": "rerank-v3.5", "base_url": server.base_url("cohere"), "timeout_s": 5},
                    "tei": {"type": "http", "protocol": "tei", "model": "m", "base_url": server.base_url("tei")},
                },
                "policy": {"name": "fixed", "params": {"backend": "cohere"}},
            }
        )
        try:
            result = router.rerank("tea", DOCS)
            texts = [repr(router), repr(result), repr(result.explanation), *map(repr, router.backends.values())]
        finally:
            router.close()
    assert result.stages[0].error is not None and "401" in result.stages[0].error
    for text in texts:
        assert COHERE_SHAPED_KEY not in text


def test_a_server_error_message_is_redacted_of_credential_shapes():
    err = ServerError(f'upstream said {{"api_key": "{COHERE_SHAPED_KEY}"}} via https://bob:{REDIS_PASSWORD}@proxy')
    assert COHERE_SHAPED_KEY not in str(err) and REDIS_PASSWORD not in str(err)
