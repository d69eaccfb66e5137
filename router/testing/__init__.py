"""Test doubles shipped with the library, so users can test configs and policies offline.

- :class:`FakeBackend` (``router.testing.fake``): scores from a function, with scripted latency and
  failures; no model, no network.
- :func:`planning_context` and :class:`FakeClock` (``router.testing.planning``): a PlanningContext
  as the Router builds it, to test a policy or a rule directly; a clock that moves only when told.
- :class:`LoopbackRerankServer` (``router.testing.server``): a real HTTP server on 127.0.0.1 that
  speaks the wire formats of Cohere, Voyage, vLLM, TEI, Infinity, ZeroEntropy and Jina, bills like
  them, and fails on cue (:class:`Fault`), so remote backend configs can be tested with the real
  SDKs and no key or network::

    from router import Router
    from router.testing import Fault, LoopbackRerankServer

    with LoopbackRerankServer(api_key="test-key") as srv:
        srv.script([Fault.rate_limited(retry_after=2), None])   # first call 429, then success
        router = Router({"backends": {"cohere": {"type": "cohere", "model": "rerank-v3.5",
                                                 "base_url": srv.base_url("cohere")}}})
"""

from router.testing.fake import FakeBackend, word_overlap
from router.testing.planning import FakeClock, planning_context
from router.testing.server import PROVIDERS, Fault, LoopbackRerankServer, RecordedRequest

__all__ = [
    "PROVIDERS",
    "FakeBackend",
    "FakeClock",
    "Fault",
    "LoopbackRerankServer",
    "RecordedRequest",
    "planning_context",
    "word_overlap",
]
