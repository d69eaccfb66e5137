"""Catalog lifecycle: ``available_until`` refuses an ended provider in plans and fallbacks (the rule
reads ``policies.rules.today``, which these tests pin), and the catalog's 2026 changes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from policies import create_policy
from policies import rules as rules_module
from policies.base import assess, single_stage_options
from policies.context import PlanningContext
from policies.rules import CONSTRAINT_RULES, DEFAULT_RULES, in_service
from router.catalog import BackendSpec, load_catalog
from router.plan import RETRIEVER_ORDER, Plan, Stage
from router.testing import FakeBackend, planning_context

SUNSET = dt.date(2026, 9, 4)
STRONG = {"quality": {"web": 0.9}, "latency": {"per_token_ms": 0.5}}
CHEAP = {"quality": {"web": 0.7}, "latency": {"per_token_ms": 0.01}}
ENDING = {**STRONG, "available_until": "2026-06-30", "lifecycle": "the vendor shut its API down [vendor blog]"}


def docs(n: int) -> list[str]:
    return [f"word{i} shared words here" for i in range(n)]


@pytest.fixture
def on_day(monkeypatch: pytest.MonkeyPatch):
    """``on_day(date)``: the rules see ``date`` as today."""

    def pin(day: dt.date) -> None:
        monkeypatch.setattr(rules_module, "today", lambda: day)

    return pin


def rejections(plan: Plan, name: str) -> list[str]:
    [assessed] = [a for a in plan.assessed if a.option.name == name]
    return [f"{r.rule}: {r.reason}" for r in assessed.rejections]


# -- the rule ------------------------------------------------------------------------------------


def test_the_rule_refuses_from_the_date_on_and_quotes_it(on_day) -> None:
    ctx = planning_context({"ending": ENDING, "cheap": CHEAP})
    option = ctx.estimate((Stage("ending", 10),))
    on_day(dt.date(2026, 6, 29))
    assert in_service(option, ctx) is None
    on_day(dt.date(2026, 6, 30))  # the day itself: no longer served
    rejection = in_service(option, ctx)
    assert rejection is not None and rejection.rule == "available_until"
    assert "2026-06-30" in rejection.reason and "the vendor shut its API down [vendor blog]" in rejection.reason
    assert in_service(ctx.estimate((Stage("cheap", 10),)), ctx) is None
    assert in_service(ctx.estimate(()), ctx) is None  # the retriever's order never ends


def test_it_is_a_default_rule_and_a_constraint_the_executor_rechecks() -> None:
    assert in_service in DEFAULT_RULES
    assert in_service in CONSTRAINT_RULES


def test_today_is_the_utc_date() -> None:
    assert rules_module.today() == dt.datetime.now(dt.UTC).date()


def test_config_can_set_or_clear_the_date(on_day) -> None:
    on_day(dt.date(2027, 1, 1))
    cleared = planning_context({"zerank": {"model": "zerank-2", "available_until": None}})
    assert in_service(cleared.estimate((Stage("zerank", 10),)), cleared) is None
    contract = planning_context({"cheap": {**CHEAP, "available_until": "2026-12-31"}})
    assert in_service(contract.estimate((Stage("cheap", 10),)), contract) is not None


# -- plans and fallbacks --------------------------------------------------------------------------


def test_an_ended_backend_is_rejected_in_the_plan_and_its_fallbacks(make_router, on_day) -> None:
    ending = FakeBackend("ending", spec=ENDING)
    router = make_router({"ending": ending, "cheap": FakeBackend("cheap", spec=CHEAP)})
    on_day(dt.date(2026, 6, 1))
    assert router.plan("query", docs(5)).primary.name == "ending"
    on_day(dt.date(2026, 7, 1))
    plan = router.plan("query", docs(5))
    assert plan.primary.name == "cheap"
    assert [o.name for o in plan.fallbacks] == [RETRIEVER_ORDER]
    [why] = rejections(plan, "ending")
    assert why.startswith("available_until: ending: ") and "(available_until 2026-06-30)" in why
    result = router.rerank("query", docs(5))
    assert result.backends == ("cheap",) and ending.calls == []
    assert "2026-06-30" in str(result.explanation)


def test_an_ended_backend_is_never_called_when_everything_else_fails(make_router, on_day) -> None:
    on_day(dt.date(2026, 7, 1))
    ending = FakeBackend("ending", spec=ENDING)
    cheap = FakeBackend("cheap", spec=CHEAP, fail=lambda call: RuntimeError("down"))
    result = make_router({"ending": ending, "cheap": cheap}).rerank("query", docs(5))
    assert ending.calls == []
    assert result.degraded and result.indices == (0, 1, 2, 3, 4)


@dataclasses.dataclass
class IgnoresTheDate:
    """A policy of one's own that plans without the default rules (it only checks availability)."""

    name: str = "ignores-the-date"

    def plan(self, ctx: PlanningContext) -> Plan:
        options = {o.name: o for o in single_stage_options(ctx)}
        return Plan(
            policy=self.name,
            primary=options["cheap"],
            fallbacks=(options["ending"], options[RETRIEVER_ORDER]),
            assessed=tuple(assess(options.values(), ctx, rules=(rules_module.available,))),
            reason="cheap first, whatever the catalog says",
        )


def test_the_executor_refuses_an_ended_fallback_a_policy_let_through(make_router, on_day) -> None:
    on_day(dt.date(2026, 7, 1))
    ending = FakeBackend("ending", spec=ENDING)
    cheap = FakeBackend("cheap", spec=CHEAP, fail=lambda call: RuntimeError("down"))
    result = make_router({"ending": ending, "cheap": cheap}, policy=IgnoresTheDate()).rerank("query", docs(5))
    assert ending.calls == []
    assert result.degraded and result.indices == (0, 1, 2, 3, 4)
    [refusal] = [s for s in result.stages if s.backend == "ending"]
    assert "available_until 2026-06-30" in str(refusal.error)


# -- the shipped catalog's 2026 changes ------------------------------------------------------------


@pytest.mark.parametrize("model", ["zerank-2", "zerank-1", "zerank-1-small"])
def test_zeroentropy_hosted_api_entries_ended_on_2026_09_04(model: str) -> None:
    spec = load_catalog()[model]
    assert spec.provider == "zeroentropy" and spec.available_until == SUNSET
    assert "sunset on 2026-09-04" in spec.lifecycle and "gbrain #3657" in spec.lifecycle
    assert spec.ended(SUNSET) and not spec.ended(SUNSET - dt.timedelta(days=1))


def test_the_zeroentropy_api_is_rejected_with_its_date_and_its_weights_are_not(on_day) -> None:
    on_day(dt.date(2026, 12, 1))
    ctx = planning_context(
        {"zerank-api": {"model": "zerank-2"}, "zerank-weights": {"model": "zeroentropy/zerank-2"}},
        tokenizer_families=("qwen3",),
        constraints={"commercial_use": False},
    )
    plan = create_policy("constrained").plan(ctx)
    [why] = rejections(plan, "zerank-api")
    assert "zerank-api: zerank-2 is no longer served (available_until 2026-09-04)" in why
    assert "zeroentropy/zerank-2" in why  # where to go instead
    assert rejections(plan, "zerank-weights") == []
    on_day(dt.date(2026, 9, 3))
    assert rejections(create_policy("constrained").plan(ctx), "zerank-api") == []


def test_zerank_weights_are_non_commercial_logits_over_5() -> None:
    catalog = load_catalog()
    for model in ("zeroentropy/zerank-2", "zeroentropy/zerank-1"):
        spec = catalog[model]
        assert spec.license == "CC-BY-NC-4.0" and spec.commercial_use is False
        assert (spec.score_scale, spec.logit_scale) == ("logit", 5.0)
        assert spec.license_history[-1].license == "CC-BY-NC-4.0" and spec.license_history[-1].source
    assert catalog["zeroentropy/zerank-1-small"].license == "Apache-2.0"


def test_license_histories_are_sourced_and_end_in_the_current_license() -> None:
    histories = {key: spec for key, spec in load_catalog().items() if spec.license_history}
    assert histories  # the catalog records some
    for key, spec in histories.items():
        assert spec.license_history[-1].license == spec.license, key
        assert all(change.source for change in spec.license_history), key
        dates = [c.since for c in spec.license_history if c.since is not None]
        assert dates == sorted(dates), key


def test_a_gateway_serving_another_model_is_noted() -> None:
    spec = load_catalog()["rerank-v3.5"]
    assert "cohere-rerank-3.5" in spec.aliases
    [pinecone] = spec.served_as
    assert (pinecone.by, pinecone.model, pinecone.since) == ("Pinecone", "rerank-v4.0-fast", dt.date(2026, 8, 1))
    assert pinecone.source


def test_every_ended_entry_says_why() -> None:
    catalog = load_catalog()
    for key, spec in catalog.items():
        if spec.available_until is not None:
            assert spec.lifecycle, key
        for alias in spec.aliases:
            assert alias != key
    assert BackendSpec(model="m").available_until is None
