"""What the remote backends (Cohere, Voyage, self-hosted HTTP) share.

A remote backend implements one method, ``_score_batch(query, documents) -> BatchResult``, for at
most one provider call. :class:`RemoteBackend` does the rest around it:

- **API keys** are read from the environment variable the config names, held as
  ``pydantic.SecretStr``, and never put in a repr, a log line or an error message (messages are
  also scrubbed of the key's value, in case a provider echoes it).
- **Truncation**: documents are cut to the model's context by an estimated character budget
  (tokens x the tokenizer family's characters per token). This is a payload guard; the exact
  cut is the provider's (Cohere ``max_tokens_per_doc``, Voyage ``truncation``, TEI ``truncate``,
  vLLM ``truncate_prompt_tokens``).
- **Splitting**: a list longer than ``spec.max_documents``, or heavier than
  ``spec.max_request_tokens`` (query + document tokens, estimated; the config's
  ``max_request_tokens`` sets it), is split into contiguous batches by the rule cost prediction
  also uses (:mod:`router.backends.batching`); they run concurrently (at most ``max_concurrency``
  in flight) and are merged back in input order. Each batch is billed as its own call; ``Usage``
  adds them up.
- **Validation**: every index a provider returns must be in range and appear once, and every
  document must be scored, else :class:`~router.errors.MalformedResponseError`. No document is
  ever dropped or scored twice silently.
- **Errors**: HTTP statuses map to the router's tree (:func:`error_for_status`); an SDK's own
  exceptions map through :class:`SdkErrors` (which of its classes mean timeout, connection failure,
  error status or unreadable response); anything else a backend did not foresee still leaves
  ``rerank`` as a :class:`~router.errors.BackendError`.
- **Clients per event loop**: the Router runs sync calls on its own loop thread and async callers
  run on theirs; a pooled async client must not cross loops, so :class:`PerLoop` keeps one per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import importlib.util
import json
import math
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from router.backends.base import AVAILABLE, Availability, Backend, Scores, Usage, attach_billed, billed_of, new_scores
from router.backends.batching import counts_tokens, plan_batches, split_request
from router.backends.wire import WireErrors
from router.catalog import BackendSpec
from router.cost import predict_usage
from router.errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    MalformedResponseError,
    MissingDependencyError,
    RateLimitedError,
    ServerError,
    scrub_exception,
)
from router.secrets import env_var_name, url_without_credentials
from router.shells import shell_of
from router.tokens import TokenCounter, TokenCounters

__all__ = [
    "BatchResult",
    "PerLoop",
    "RemoteBackend",
    "RemoteConfig",
    "ScoreMapping",
    "SdkErrors",
    "StatusReply",
    "error_detail",
    "error_for_status",
    "map_scores",
    "parse_retry_after",
    "plan_batches",
    "read_api_key",
    "scores_from_results",
    "truncate_documents",
]

T = TypeVar("T")

# A score this far outside [0, 1] is float noise and is clamped; further out, the backend returns
# raw scores and the config should say so (score_mapping: sigmoid).
_SCORE_TOLERANCE = 1e-6
_MESSAGE_CHARS = 300
# Never cut a document below this many tokens, even when the query fills the context.
_MIN_DOC_TOKENS = 16


class RemoteConfig(BaseModel):
    """Fields every remote backend accepts (each type adds its own and sets its defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    model: str
    """The provider's model id (also the catalog key unless ``catalog`` is given)."""
    catalog: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (the key itself never goes in config)."""
    base_url: str
    timeout_s: float = Field(30.0, gt=0, le=600)
    """Per provider call; the request's latency budget may cut it shorter."""
    max_concurrency: int = Field(8, ge=1, le=256)
    """Provider calls in flight at once for one split request."""
    max_request_tokens: int | None = Field(None, ge=1)
    """Split a request whose query + document tokens (estimated) exceed this."""
    spec: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the catalog spec (max_documents, pricing, quality, license, ...)."""

    _env_name = field_validator("api_key_env")(env_var_name)  # a name, never a pasted key
    _url = field_validator("base_url")(url_without_credentials)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One provider call: a score per document of the batch, in its order, and what was billed."""

    values: tuple[float, ...]
    usage: Usage


new_batch_result: Callable[..., BatchResult] = shell_of(BatchResult)
"""BatchResult's constructor for every call (router.shells)."""


# -- API keys -------------------------------------------------------------------------------------


def read_api_key(env: str | None) -> SecretStr | None:
    """The key in ``$env`` (None if the name is unset or the variable empty)."""
    if not env:
        return None
    value = os.environ.get(env, "").strip()
    return SecretStr(value) if value else None


def _redact(text: str, secret: SecretStr | None) -> str:
    if secret is None:
        return text
    value = secret.get_secret_value()
    return text.replace(value, "***") if value else text


# -- clients per event loop -----------------------------------------------------------------------


class PerLoop(Generic[T]):
    """One client per running event loop, made on first use there.

    A pooled async client (httpx, aiohttp) belongs to the loop it was first used on. A loop that
    ends the way ``asyncio.run`` ends it (``loop.shutdown_asyncgens()``) closes its client itself:
    each client comes with an async generator parked at its ``yield`` on that loop, whose cleanup
    is what the shutdown runs (an app calling ``asyncio.run(router.arerank(...))`` in a loop would
    otherwise leave a pool of open sockets per call). Clients of loops that closed without that are
    dropped; ``aclose`` (shutdown) closes the current loop's client and asks the other loops still
    running to close theirs; ``aclose_current`` closes only the current loop's.
    """

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._factory = factory
        self._close = close
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()
        # A plain dict: a parked generator holds its loop (asyncio's finalizer hook is the loop's
        # method), so a weak key would never die; closed loops are pruned on the next new client.
        self._closers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                for other in [lp for lp in self._clients if lp.is_closed()]:
                    del self._clients[other]
                for other in [lp for lp in self._closers if lp.is_closed()]:
                    del self._closers[other]  # its finalizer does nothing on a closed loop
                client = self._factory()
                self._clients[loop] = client
                self._closers[loop] = self._park_closer()
            return client

    def _park_closer(self) -> AsyncIterator[None]:
        """An async generator run to its ``yield`` now: the running loop registers it (asyncio's
        first-iteration hook) and ``shutdown_asyncgens`` closes it, running its cleanup there."""
        closer = self._close_at_shutdown()
        step = closer.__anext__()
        with contextlib.suppress(StopIteration):  # nothing before the yield awaits: one step parks it
            step.send(None)  # type: ignore[attr-defined]
        return closer

    async def _close_at_shutdown(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # No reference to the loop is held while parked (it would keep the loop alive).
            loop = asyncio.get_running_loop()
            with self._lock:
                client = self._clients.pop(loop, None)
                self._closers.pop(loop, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await self._close(client)

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose_current(self) -> None:
        """Close only the running loop's client (for a loop about to end; others keep theirs)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
            self._closers.pop(loop, None)
        if client is not None:
            await self._close(client)

    async def aclose(self) -> None:
        with self._lock:
            clients = list(self._clients.items())
            self._clients.clear()
            self._closers.clear()
        current = asyncio.get_running_loop()
        for loop, client in clients:
            if loop is current:
                await self._close(client)
            elif loop.is_running() and not loop.is_closed():

                async def close(c: T = client) -> None:
                    await self._close(c)

                asyncio.run_coroutine_threadsafe(close(), loop)


# -- merging a provider's answer ------------------------------------------------------------------


def scores_from_results(results: Iterable[tuple[object, object]], n: int, backend: str) -> list[float]:
    """(index, score) pairs from a provider -> one score per document in input order.

    Raises MalformedResponseError unless every index is an integer in [0, n), none repeats, every
    document is scored and every score is a finite number."""
    values: list[float | None] = [None] * n
    for index, score in results:
        # The common case in one test (an int index in range, not yet scored, a finite float);
        # anything else goes through the checks one by one, for the message.
        if type(index) is int and 0 <= index < n and values[index] is None and type(score) is float and math.isfinite(score):
            values[index] = score
            continue
        if not isinstance(index, int) or isinstance(index, bool):
            raise MalformedResponseError(f"result index {index!r} is not an integer", backend=backend)
        if not 0 <= index < n:
            raise MalformedResponseError(f"result index {index} is out of range for {n} documents", backend=backend)
        if values[index] is not None:
            raise MalformedResponseError(f"document {index} was scored twice", backend=backend)
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise MalformedResponseError(f"document {index} has score {score!r}, not a finite number", backend=backend)
        values[index] = float(score)
    if None in values:
        missing = [i for i, v in enumerate(values) if v is None]
        first = ", ".join(map(str, missing[:5]))
        raise MalformedResponseError(f"{len(missing)} of {n} documents were not scored (first: {first})", backend=backend)
    return cast(list[float], values)


# -- score scales ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoreMapping:
    """How a backend's raw score becomes the router's [0, 1] scale.

    identity: the backend already returns a probability-like score on [0, 1] (Cohere, Voyage, vLLM
    and Infinity with their default activation, TEI without raw_scores); values outside it
    are an error, since they mean the server returns raw logits. sigmoid: raw logits,
    mapped by 1 / (1 + exp(-score / scale)) (zerank-2's raw logit: scale 5).
    """

    kind: str = "identity"
    scale: float = 1.0

    def __call__(self, value: float, backend: str) -> float:
        if self.kind == "sigmoid":
            z = value / self.scale
            if z >= 0:
                return 1.0 / (1.0 + math.exp(-z))
            e = math.exp(z)
            return e / (1.0 + e)
        if -_SCORE_TOLERANCE <= value <= 1 + _SCORE_TOLERANCE:
            return min(1.0, max(0.0, value))
        raise MalformedResponseError(
            f"score {value!r} is outside [0, 1]: the server returns raw scores; set score_mapping: sigmoid",
            backend=backend,
        )


def map_scores(values: Sequence[float], mapping: ScoreMapping, backend: str) -> tuple[float, ...]:
    if mapping.kind == "identity" and all(0.0 <= v <= 1.0 for v in values):
        return tuple(values)  # already on [0, 1]: nothing to clamp, nothing to reject
    return tuple(mapping(v, backend) for v in values)


# -- errors ---------------------------------------------------------------------------------------


def error_detail(body: object) -> str:
    """The human message in a provider's error body: Cohere ``{"message"}``, Voyage / FastAPI
    ``{"detail"}``, vLLM / Infinity ``{"error": {"message"}}``, TEI ``{"error", "error_type"}``."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            return body.strip()[:_MESSAGE_CHARS] or "(empty body)"
        return error_detail(parsed) if isinstance(parsed, dict) else body.strip()[:_MESSAGE_CHARS]
    if isinstance(body, Mapping):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, Mapping):
                return error_detail(value)
            if isinstance(value, str):
                return value[:_MESSAGE_CHARS]
            if isinstance(value, list) and value and all(isinstance(v, Mapping) and "msg" in v for v in value):
                # FastAPI / pydantic validation errors: "body.query: Field required; ..."
                parts = [f"{'.'.join(map(str, v.get('loc', ())))}: {v['msg']}" for v in value]
                return "; ".join(parts)[:_MESSAGE_CHARS]
            if value is not None:
                return json.dumps(value, default=str)[:_MESSAGE_CHARS]
    if body is None:
        return "(empty body)"
    return repr(body)[:_MESSAGE_CHARS]


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def parse_retry_after(headers: Mapping[str, str] | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or an HTTP date) or ``retry-after-ms``."""
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def error_for_status(
    status: int, message: str, *, backend: str, headers: Mapping[str, str] | None = None, provider: str = "provider"
) -> BackendError:
    """The router error for an HTTP status: 400/404/413/422 (and other 4xx) BadRequestError,
    401/403/498 AuthenticationError, 408 BackendTimeoutError, 429 RateLimitedError (with
    Retry-After), 5xx ServerError; a 2xx that could not be read is a MalformedResponseError."""
    text = f"{provider} returned HTTP {status}: {message}"
    if status in (401, 403, 498):
        return AuthenticationError(text, backend=backend)
    if status == 429:
        return RateLimitedError(text, backend=backend, retry_after=parse_retry_after(headers))
    if status == 408:
        return BackendTimeoutError(text, backend=backend)
    if 500 <= status < 600:
        return ServerError(text, backend=backend)
    if 400 <= status < 500:
        return BadRequestError(text, backend=backend)
    return MalformedResponseError(text, backend=backend)


ExceptionTypes = type[Exception] | tuple[type[Exception], ...]
StatusReply = tuple[int | None, object, Mapping[str, str] | None]
"""An SDK's error status read as (status, body, headers); status None: the SDK gave none."""


def _itself(exc: BaseException) -> BaseException:
    return exc


@dataclass(frozen=True, slots=True, kw_only=True)
class SdkErrors:
    """Which exceptions of a provider SDK mean what, for :meth:`RemoteBackend._sdk_error`.

    Checked in this order: ``timeout``, ``transport``, ``status``, then ``malformed`` (first match).
    The router errors they become, and their messages, are the same for every provider.
    """

    timeout: ExceptionTypes
    """The provider did not answer in time: BackendTimeoutError."""
    transport: ExceptionTypes
    """The connection failed: BackendUnavailableError when ``transport_cause(exc)`` is one of
    ``cannot_connect``, else ServerError naming the cause's class."""
    cannot_connect: ExceptionTypes
    transport_cause: Callable[[BaseException], BaseException] = _itself
    """The transport library's exception behind a transport error (for an SDK that wraps it)."""
    status: ExceptionTypes
    """The provider answered with an error, read by ``read_status``: a 2xx is a body that could
    not be read (MalformedResponseError), other statuses map by :func:`error_for_status`, a status
    error without a status is AuthenticationError if one of ``rejected_key`` else ServerError."""
    read_status: Callable[[Any], StatusReply]
    rejected_key: ExceptionTypes = ()
    malformed: tuple[tuple[ExceptionTypes, str], ...] = ()
    """(exceptions, message): the response could not be read: MalformedResponseError with the
    message (``{exc_type}`` in it is replaced by the exception's class name)."""

    @property
    def caught(self) -> tuple[type[Exception], ...]:
        """Every exception class above: what a backend's ``except`` hands to ``_sdk_error``."""
        groups = [self.timeout, self.transport, self.status, *(types for types, _ in self.malformed)]
        return tuple(t for group in groups for t in (group if isinstance(group, tuple) else (group,)))


def truncate_documents(documents: Sequence[str], max_chars: int | None) -> list[str]:
    if max_chars is None:
        return list(documents)
    return [d if len(d) <= max_chars else d[:max_chars] for d in documents]


# -- the shared backend ---------------------------------------------------------------------------


class RemoteBackend(Backend):
    """Subclasses set ``sdk`` / ``extra`` / ``provider_label`` and implement ``_score_batch``
    (plus ``_new_client`` / ``_close_client`` when they pool a client per loop)."""

    sdk: ClassVar[str | None] = None
    """Import name of the provider SDK this backend needs, if any."""
    extra: ClassVar[str] = ""
    """The pip extra that installs it: rerank-router[extra]."""
    provider_label: ClassVar[str] = "provider"
    context_includes_query: ClassVar[bool] = True
    """True: spec.max_tokens_per_doc bounds query + document (cross-encoders, Voyage); False: the
    document alone (Cohere's max_tokens_per_doc)."""
    score_mapping: ScoreMapping = ScoreMapping("identity")
    """How the provider's scores map to [0, 1] (identity: they are on it already)."""

    def __init__(self, name: str, config: RemoteConfig, spec: BackendSpec) -> None:
        if config.max_request_tokens is not None:  # the split cost prediction also makes (batching.split_request)
            spec = spec.model_copy(update={"max_request_tokens": config.max_request_tokens})
        self.name = name
        self.config = config
        self.spec = spec
        self.label = self.provider_label
        self.requires: str | None = self.sdk
        """Import name of the package this instance calls through (its SDK, or a transport library)."""
        self._sdk_installed: bool | None = None
        self._estimate = TokenCounters().get(spec.tokenizer_family)
        self._clients: PerLoop[Any] = PerLoop(lambda: self._import_sdk(self._new_client), self._close_client)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.config.model!r}, base_url={self.config.base_url!r})"

    # -- Backend protocol -------------------------------------------------------------------------
    def availability(self) -> Availability:
        if self.requires is not None:
            if self._sdk_installed is None:
                self._sdk_installed = importlib.util.find_spec(self.requires) is not None
            if not self._sdk_installed:
                return Availability(False, f"{self.requires} is not installed: pip install 'rerank-router[{self.extra}]'")
        env = self.config.api_key_env
        if env and not os.environ.get(env, "").strip():  # what read_api_key reads, without a SecretStr
            return Availability(False, f"no API key: the environment variable {env} is not set")
        return AVAILABLE

    def token_counter(self) -> TokenCounter | None:
        return None

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def rerank(self, query: str, documents: Sequence[str]) -> Scores:
        if not documents:
            return Scores((), Usage(requests=0))
        error: BackendError
        try:
            return await self._rerank(query, documents)
        except BackendError as exc:
            error = exc
        except Exception as exc:  # the contract: only BackendError leaves a backend
            error = BackendError(self._redact(f"unexpected {type(exc).__name__}: {exc}"), backend=self.name)
            error.__cause__ = exc
        # Raised outside the handlers, with the chain scrubbed: an SDK's exception may quote the key.
        raise scrub_exception(error, [read_api_key(self.config.api_key_env)])

    # -- the shared flow --------------------------------------------------------------------------
    async def _rerank(self, query: str, documents: Sequence[str]) -> Scores:
        query_tokens = self._estimate.count([query])[0]
        texts = truncate_documents(documents, self._doc_char_budget(query_tokens))
        doc_tokens = self._estimate.count(texts) if counts_tokens(self.spec) else [0] * len(texts)
        batches = split_request(self.spec, query_tokens, doc_tokens)
        if len(batches) == 1:
            result = await self._score_batch(query, texts)
            self._check_length(result, len(texts))
            return new_scores(result.values, result.usage)
        slots = asyncio.Semaphore(self.config.max_concurrency)
        billed: list[Usage] = []  # batches answered (and billed) so far, whatever happens to the rest

        async def one(batch: range) -> BatchResult:
            async with slots:
                result = await self._score_batch(query, texts[batch.start : batch.stop])
            billed.append(result.usage)
            self._check_length(result, len(batch), attach=False)  # its units are in ``billed``
            return result

        # Every batch runs to its end even when one fails: a sibling cancelled mid-call may still be
        # billed by the provider, and then its bill could not be counted against the ceiling.
        outcomes = await asyncio.gather(*(one(b) for b in batches), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for batch, outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, BaseException) and _bill_unread(outcome):
                # Answered too broken to read its bill, or cut: the provider may have billed it,
                # so it counts at its prediction (as the executor books a single unread call).
                attach_billed(outcome, predict_usage(self.spec, query_tokens, doc_tokens[batch.start : batch.stop]))
        if failures:
            # One failed call fails the request: re-raise the first router error, so the executor
            # can fall back with a specific reason, carrying the units every answered batch billed.
            first = _first_error(failures)
            for usage in billed:
                attach_billed(first, usage)
            for other in failures:  # batches answered, billed and then rejected
                if other is not first and (rejected := billed_of(other)) is not None:
                    attach_billed(first, rejected)
            raise first from first.__cause__
        results = [o for o in outcomes if isinstance(o, BatchResult)]
        values = tuple(v for r in results for v in r.values)
        usage = results[0].usage
        for r in results[1:]:
            usage = usage + r.usage
        return Scores(values, usage)

    def _score_results(
        self, results: Iterable[tuple[object, object]], n: int, billed: Callable[[], Usage] | None = None
    ) -> tuple[float, ...]:
        """A provider's (index, score) pairs -> one score per document in input order, mapped to [0, 1]
        (validated by :func:`scores_from_results`). ``billed`` reads the units the answer was
        billed for: a rejected answer's error carries them (router.backends.base.attach_billed)."""
        try:
            return map_scores(scores_from_results(results, n, self.name), self.score_mapping, self.name)
        except MalformedResponseError as exc:
            if billed is not None:
                with contextlib.suppress(Exception):  # unreadable billing: nothing to attach
                    attach_billed(exc, billed())
            raise

    def _fast_scores(self, results: list[Any], n: int, score_key: str) -> tuple[float, ...] | None:
        """The common answer read in one pass: ``n`` objects, each index an int in range and new,
        each score a float on [0, 1], with the identity mapping. None for anything else: the full
        checks (:meth:`_score_results`) then say what is wrong, with the same result when nothing is."""
        if self.score_mapping.kind != "identity" or len(results) != n:
            return None
        values: list[float | None] = [None] * n
        try:  # subscripts, not .get(): an absent field is a KeyError here, not a None to check
            for r in results:
                if type(r) is not dict:
                    return None
                index, score = r["index"], r[score_key]
                if type(index) is not int or not 0 <= index < n or values[index] is not None:
                    return None
                if type(score) is not float or not 0.0 <= score <= 1.0:
                    return None
                values[index] = score
        except KeyError:
            return None
        return tuple(cast(list[float], values))

    def _check_length(self, result: BatchResult, expected: int, *, attach: bool = True) -> None:
        if len(result.values) != expected:
            error = MalformedResponseError(f"{len(result.values)} scores for {expected} documents", backend=self.name)
            if attach:
                attach_billed(error, result.usage)  # answered, billed, then rejected
            raise error

    def _doc_char_budget(self, query_tokens: int) -> int | None:
        """Characters to keep per document, from the model's context and the query's length."""
        context = self.spec.max_tokens_per_doc
        if context is None:
            return None
        budget = context - (query_tokens + self._overhead_tokens() if self.context_includes_query else 0)
        chars_per_token = getattr(self._estimate, "chars_per_token", 4.0)
        return int(max(budget, _MIN_DOC_TOKENS) * chars_per_token)

    def _overhead_tokens(self) -> int:
        """Tokens a prompt template adds around query and document."""
        return 0

    # -- for subclasses ---------------------------------------------------------------------------
    async def _score_batch(self, query: str, documents: Sequence[str]) -> BatchResult:
        raise NotImplementedError

    def _new_client(self) -> Any:
        """A pooled client for the running loop (an ImportError here: the SDK is not installed)."""
        raise NotImplementedError

    async def _close_client(self, client: Any) -> None:
        return None

    def _api_key(self, *, required: bool) -> SecretStr | None:
        key = read_api_key(self.config.api_key_env)
        if key is None and required:
            env = self.config.api_key_env or "(api_key_env not configured)"
            raise AuthenticationError(f"no API key: the environment variable {env} is not set", backend=self.name)
        return key

    @functools.cached_property
    def _wire_errors(self) -> WireErrors:
        """Transport failures as router errors: one wording for SDK and wire paths."""
        return WireErrors(self.name, self.label, self.config.base_url, self.config.timeout_s)

    def _redact(self, text: str) -> str:
        return _redact(text, read_api_key(self.config.api_key_env))

    def _status_error(self, status: int, body: object, headers: Mapping[str, str] | None) -> BackendError:
        message = self._redact(error_detail(body))
        return error_for_status(status, message, backend=self.name, headers=headers, provider=self.label)

    def _sdk_error(self, exc: BaseException, sdk: SdkErrors) -> BackendError:
        """The router error for one of ``sdk.caught`` raised by the provider's SDK."""
        label = self.label
        wire = self._wire_errors
        if isinstance(exc, sdk.timeout):
            return wire.timed_out()
        if isinstance(exc, sdk.transport):
            cause = sdk.transport_cause(exc)
            if isinstance(cause, sdk.cannot_connect):
                return wire.cannot_connect()
            return wire.connection_failed(cause)
        if isinstance(exc, sdk.status):
            status, body, headers = sdk.read_status(exc)
            if status is None:
                if isinstance(exc, sdk.rejected_key):
                    return AuthenticationError(f"{label} rejected the API key", backend=self.name)
                return ServerError(f"{label} call failed ({type(exc).__name__})", backend=self.name)
            if 200 <= status < 300:
                return MalformedResponseError(f"{label} returned a body that is not valid JSON", backend=self.name)
            return self._status_error(status, body, headers)
        for types, message in sdk.malformed:
            if isinstance(exc, types):
                return MalformedResponseError(message.format(exc_type=type(exc).__name__), backend=self.name)
        return BackendError(self._redact(f"unexpected {type(exc).__name__}: {exc}"), backend=self.name)

    def load(self) -> None:
        """Import the transport (and SDK) now, off the event loop: importing an SDK takes hundreds
        of milliseconds that would otherwise land on the first request."""
        modules = ["httpx", *([self.requires] if self.requires else [])]
        self._import_sdk(lambda: [importlib.import_module(m) for m in modules])

    async def prepare(self) -> None:
        """Build this loop's pooled client (and SDK client) now."""
        if self.availability().ok:
            self._clients.get()

    def _import_sdk(self, load: Callable[[], T]) -> T:
        """``load()``, which imports from the provider SDK; if that fails, MissingDependencyError
        naming the extra to install."""
        try:
            return load()
        except ImportError as exc:
            if self.requires is None:
                raise
            message = f"{self.requires} is not installed: pip install 'rerank-router[{self.extra}]'"
            raise MissingDependencyError(message, backend=self.name) from exc


def _bill_unread(exc: BaseException) -> bool:
    """A failed call whose bill the router cannot read: cut by a timeout, or answered with a body
    whose billed units could not be read."""
    return isinstance(exc, BackendTimeoutError) or (isinstance(exc, MalformedResponseError) and billed_of(exc) is None)


def _first_error(failures: Sequence[BaseException]) -> BaseException:
    """The first router error among ``failures`` (in batch order), else the first failure."""
    return next((e for e in failures if isinstance(e, BackendError)), failures[0])
