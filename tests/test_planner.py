"""Step 4: which option the planner picks under each constraint, and why it rejects the others."""

from __future__ import annotations

import pytest
from specs import CLOSED_API

from policies import POLICIES, CheapestPolicy, FastestPolicy, FixedPolicy, create_policy
from router import Availability, ConfigError, UnknownNameError, Usage
from router.plan import RETRIEVER_ORDER, Assessed, Plan
from router.testing import FakeBackend

STRONG = {"quality": {"web": 0.9}, "latency": {"per_token_ms": 0.5}}
CHEAP = {"quality": {"web": 0.7}, "latency": {"per_token_ms": 0.01}}
# Billed per token like Voyage: billed tokens = query tokens x documents + Σ document tokens.
PER_TOKEN_API = {
    "license": "proprietary",
    "data_leaves_premises": True,
    "provider": "voyage",
    "pricing": {"scheme": "per_token", "usd": 1e-6},
    "quality": {"web": 0.95},
}
NON_COMMERCIAL = {"license": "CC-BY-NC-4.0", "quality": {"web": 0.99}}


def docs(n: int, words: int = 8) -> list[str]:
    return [" ".join(f"word{i}x{j}" for j in range(words)) for i in range(n)]


def find(plan: Plan, name: str) -> Assessed:
    return next(a for a in plan.assessed if a.option.name == name)


def rules(plan: Plan, name: str) -> set[str]:
    return {r.rule for r in find(plan, name).rejections}


def fallback_names(plan: Plan) -> list[str]:
    return [o.name for o in plan.fallbacks]


def test_every_plan_ends_with_the_retriever_order(make_router):
    router = make_router({"strong": FakeBackend("strong", spec=STRONG), "cheap": FakeBackend("cheap", spec=CHEAP)})
    plan = router.plan("query", docs(10))
    assert plan.primary.name == "strong"
    assert fallback_names(plan) == ["cheap", RETRIEVER_ORDER]
    assert {a.option.name for a in plan.assessed} == {"strong", "cheap", RETRIEVER_ORDER}


# -- latency budget, candidate count, token length ------------------------------------------------


def test_latency_budget_rejects_the_strong_model(make_router):
    router = make_router({"strong": FakeBackend("strong", spec=STRONG), "cheap": FakeBackend("cheap", spec=CHEAP)})
    roomy = router.plan("query", docs(20), latency_budget_ms=10_000)
    predicted = find(roomy, "strong").option.estimate.latency_ms
    assert roomy.primary.name == "strong"
    assert predicted > 50

    tight = router.plan("query", docs(20), latency_budget_ms=predicted / 2)
    assert tight.primary.name == "cheap"
    assert rules(tight, "strong") == {"latency_budget"}
    assert "strong" not in fallback_names(tight)
    assert f"predicted {predicted:.0f} ms over the {predicted / 2:.0f} ms budget" in str(find(tight, "strong").rejections[0])


def test_latency_grows_with_candidates_until_the_budget_rejects(make_router):
    router = make_router({"strong": FakeBackend("strong", spec=STRONG), "cheap": FakeBackend("cheap", spec=CHEAP)})
    few = router.plan("query", docs(5), latency_budget_ms=100)
    many = router.plan("query", docs(100), latency_budget_ms=100)
    assert find(many, "strong").option.estimate.latency_ms > 10 * find(few, "strong").option.estimate.latency_ms
    assert few.primary.name == "strong"
    assert many.primary.name == "cheap"
    assert rules(many, "strong") == {"latency_budget"}


def test_quadratic_token_term_is_the_length_wall(make_router):
    quadratic = {"quality": {"web": 0.9}, "latency": {"per_token_sq_ms": 0.001}}
    router = make_router({"strong": FakeBackend("strong", spec=quadratic), "cheap": FakeBackend("cheap", spec=CHEAP)})
    short = router.plan("query", docs(10, words=10), latency_budget_ms=200)
    long = router.plan("query", docs(10, words=100), latency_budget_ms=200)
    short_ms = find(short, "strong").option.estimate.latency_ms
    long_ms = find(long, "strong").option.estimate.latency_ms
    assert long_ms > 50 * short_ms  # ~10x the tokens per item, ~100x the time
    assert short.primary.name == "strong"
    assert long.primary.name == "cheap"


def test_more_candidates_push_a_per_token_model_over_the_cost_ceiling(make_router):
    router = make_router({"api": FakeBackend("api", spec=PER_TOKEN_API), "cheap": FakeBackend("cheap", spec=CHEAP)})
    few = router.plan("query", docs(10), max_cost_usd=0.001)
    many = router.plan("query", docs(300), max_cost_usd=0.001)
    assert few.primary.name == "api"
    assert find(few, "api").option.estimate.cost_usd < 0.001
    assert many.primary.name == "cheap"
    assert find(many, "api").option.estimate.cost_usd > 0.001
    assert rules(many, "api") == {"max_cost"}
    assert "api" not in fallback_names(many)


def test_long_documents_push_a_per_token_model_over_the_cost_ceiling(make_router):
    router = make_router({"api": FakeBackend("api", spec=PER_TOKEN_API), "cheap": FakeBackend("cheap", spec=CHEAP)})
    short = router.plan("query", docs(10, words=8), max_cost_usd=0.001)
    long = router.plan("query", docs(10, words=500), max_cost_usd=0.001)
    assert short.primary.name == "api"
    assert long.primary.name == "cheap"
    assert rules(long, "api") == {"max_cost"}
    assert "over the $0.001000 ceiling" in str(find(long, "api").rejections[0])


def test_no_truncation_rejects_a_model_whose_context_is_too_small(make_router):
    small = {"quality": {"web": 0.9}, "max_tokens_per_doc": 512}
    large = {"quality": {"web": 0.6}, "max_tokens_per_doc": 32_000}
    router = make_router({"small": FakeBackend("small", spec=small), "large": FakeBackend("large", spec=large)})
    long_docs = docs(5, words=400)  # ~1,000 estimated tokens each
    truncating = router.plan("query", long_docs)
    assert truncating.primary.name == "small"
    assert any("truncated" in note for note in truncating.primary.notes)

    strict = router.plan("query", long_docs, constraints={"allow_truncation": False})
    assert strict.primary.name == "large"
    assert rules(strict, "small") == {"truncation"}
    assert "512-token context" in str(find(strict, "small").rejections[0])
    assert "small" not in fallback_names(strict)


def test_query_over_a_model_query_limit_is_rejected(make_router):
    router = make_router(
        {
            "capped": FakeBackend("capped", spec={"quality": {"web": 0.9}, "max_query_tokens": 5}),
            "other": FakeBackend("other", spec={"quality": {"web": 0.5}}),
        }
    )
    plan = router.plan("a rather long query " * 5, docs(3))
    assert plan.primary.name == "other"
    assert rules(plan, "capped") == {"max_query_tokens"}


def test_candidates_over_a_provider_document_limit(make_router):
    limited = {**CLOSED_API, "max_documents": 100}
    router = make_router({"api": FakeBackend("api", spec=limited), "cheap": FakeBackend("cheap", spec=CHEAP)})
    assert router.plan("query", docs(100), max_cost_usd=1).primary.name == "api"
    over = router.plan("query", docs(101), max_cost_usd=1)
    assert over.primary.name == "cheap"
    assert rules(over, "api") == {"max_documents"}
    split = make_router({"api": FakeBackend("api", spec={**limited, "split_requests": True})})
    assert split.plan("query", docs(101), max_cost_usd=1).primary.name == "api"


# -- cost ceiling ---------------------------------------------------------------------------------


def test_zero_cost_ceiling_rejects_the_paid_api(make_router):
    router = make_router({"api": FakeBackend("api", spec=CLOSED_API), "cheap": FakeBackend("cheap", spec=CHEAP)})
    assert router.plan("query", docs(10)).primary.name == "api"  # no ceiling: best quality
    plan = router.plan("query", docs(10), max_cost_usd=0)
    assert plan.primary.name == "cheap"
    assert rules(plan, "api") == {"max_cost"}
    assert "api" not in fallback_names(plan)


def test_search_units_cost_steps_at_100_documents(make_router):
    router = make_router({"api": FakeBackend("api", spec=CLOSED_API)})
    assert find(router.plan("q", docs(100)), "api").option.estimate.cost_usd == pytest.approx(0.002)
    assert find(router.plan("q", docs(101)), "api").option.estimate.cost_usd == pytest.approx(0.004)
    plan = router.plan("q", docs(101), max_cost_usd=0.003)
    assert plan.primary.name == RETRIEVER_ORDER
    assert rules(plan, "api") == {"max_cost"}


def test_unknown_price_is_rejected_only_under_a_ceiling(make_router):
    unpriced = {**CLOSED_API, "pricing": {"scheme": "per_search_unit", "usd": None}}
    router = make_router({"api": FakeBackend("api", spec=unpriced), "cheap": FakeBackend("cheap", spec=CHEAP)})
    no_ceiling = router.plan("query", docs(5))
    assert no_ceiling.primary.name == "api"
    assert no_ceiling.primary.estimate.cost_usd is None
    plan = router.plan("query", docs(5), max_cost_usd=10)
    assert plan.primary.name == "cheap"
    assert rules(plan, "api") == {"max_cost"}
    assert "price unknown for api; set spec.pricing.usd" in str(find(plan, "api").rejections[0])


# -- license --------------------------------------------------------------------------------------


def test_commercial_request_never_gets_a_non_commercial_model(make_router):
    nc = FakeBackend("nc", spec=NON_COMMERCIAL)
    router = make_router({"nc": nc, "cheap": FakeBackend("cheap", spec=CHEAP)})
    plan = router.plan("query", docs(5))
    assert plan.primary.name == "cheap"
    assert "nc" not in fallback_names(plan)
    assert rules(plan, "nc") == {"license"}
    assert "CC-BY-NC-4.0 forbids commercial use" in str(find(plan, "nc").rejections[0])


def test_non_commercial_model_never_called_when_everything_else_fails(make_router):
    nc = FakeBackend("nc", spec=NON_COMMERCIAL)
    cheap = FakeBackend("cheap", spec=CHEAP, fail=lambda call: RuntimeError("down"))
    result = make_router({"nc": nc, "cheap": cheap}).rerank("query", docs(5))
    assert nc.calls == []
    assert result.degraded
    assert result.indices == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("license_id", ["unknown", "LicenseRef-custom"])
def test_unknown_license_is_rejected_for_commercial_use(make_router, license_id):
    odd = FakeBackend("odd", spec={"license": license_id, "quality": {"web": 0.99}})
    router = make_router({"odd": odd, "cheap": FakeBackend("cheap", spec=CHEAP)})
    plan = router.plan("query", docs(5))
    assert plan.primary.name == "cheap"
    assert f"license {license_id} is unknown (set spec.license)" in str(find(plan, "odd").rejections[0])


def test_non_commercial_config_allows_nc_models(make_router):
    nc = FakeBackend("nc", spec=NON_COMMERCIAL)
    router = make_router({"nc": nc, "cheap": FakeBackend("cheap", spec=CHEAP)}, constraints={"commercial_use": False})
    plan = router.plan("query", docs(5))
    assert plan.primary.name == "nc"
    assert find(plan, "nc").feasible
    # ... and a request can still mark itself commercial.
    assert router.plan("query", docs(5), constraints={"commercial_use": True}).primary.name == "cheap"


def test_allowed_licenses(make_router):
    router = make_router(
        {
            "mit": FakeBackend("mit", spec={"license": "MIT", "quality": {"web": 0.5}}),
            "apache": FakeBackend("apache", spec={"license": "Apache-2.0", "quality": {"web": 0.9}}),
        }
    )
    plan = router.plan("query", docs(3), constraints={"allowed_licenses": {"MIT"}})
    assert plan.primary.name == "mit"
    assert rules(plan, "apache") == {"license"}


# -- data residency -----------------------------------------------------------------------------


def test_on_premise_rejects_closed_apis_in_fallbacks_too(make_router):
    router = make_router(
        {
            "api": FakeBackend("api", spec=CLOSED_API),
            "strong": FakeBackend("strong", spec=STRONG),
            "cheap": FakeBackend("cheap", spec=CHEAP),
        }
    )
    plan = router.plan("query", docs(10), max_cost_usd=1, constraints={"on_premise": True})
    assert plan.primary.name == "strong"
    assert rules(plan, "api") == {"on_premise"}
    assert "api: sends documents to cohere; the request is on-premise only" in str(find(plan, "api").rejections[0])
    rejected = {a.option.name for a in plan.assessed if not a.feasible}
    assert rejected == {"api"}
    assert not rejected & {o.name for o in plan.options_in_order}


@pytest.mark.parametrize(
    "failure", [RuntimeError("boom"), TimeoutError(), ValueError("bad"), ConnectionError("reset"), KeyError("x")]
)
def test_on_premise_request_never_reaches_the_api_even_when_all_else_fails(make_router, failure):
    api = FakeBackend("api", spec=CLOSED_API)
    strong = FakeBackend("strong", spec=STRONG, fail=lambda call: failure)
    cheap = FakeBackend("cheap", spec=CHEAP, scores_override=lambda call: [float("nan")] * 10)
    router = make_router({"api": api, "strong": strong, "cheap": cheap})
    result = router.rerank("query", docs(10), max_cost_usd=1, constraints={"on_premise": True})
    assert api.calls == []
    # A TimeoutError is transient: retried up to the default 3 attempts; the others are not retried.
    assert len(strong.calls) == (3 if isinstance(failure, TimeoutError) else 1)
    assert len(cheap.calls) == 1
    assert result.degraded
    assert result.indices == tuple(range(10))
    assert "kept the retriever's order" in (result.degraded_reason or "")


def test_on_premise_from_config(make_router):
    api = FakeBackend("api", spec=CLOSED_API)
    router = make_router({"api": api}, constraints={"on_premise": True})
    result = router.rerank("query", docs(3), max_cost_usd=1)
    assert api.calls == []
    assert result.explanation.chosen == RETRIEVER_ORDER
    assert not result.degraded  # keeping the retriever order was the plan, not a failure


# -- availability, allowed and blocked backends ----------------------------------------------------


def test_unavailable_backend_is_rejected_with_its_reason(make_router):
    gone = FakeBackend("gone", spec=STRONG, available=Availability(False, "model not in the cache and the hub is offline"))
    router = make_router({"gone": gone, "cheap": FakeBackend("cheap", spec=CHEAP)})
    result = router.rerank("query", docs(5))
    assert result.backends == ("cheap",)
    assert gone.calls == []
    assert rules(router.plan("query", docs(5)), "gone") == {"available"}
    assert "available: gone: model not in the cache and the hub is offline" in str(result.explanation)


def test_allowed_backends(make_router):
    router = make_router({"strong": FakeBackend("strong", spec=STRONG), "cheap": FakeBackend("cheap", spec=CHEAP)})
    plan = router.plan("query", docs(5), constraints={"allowed_backends": {"cheap"}})
    assert plan.primary.name == "cheap"
    assert fallback_names(plan) == [RETRIEVER_ORDER]
    assert "strong is not in constraints.allowed_backends" in str(find(plan, "strong").rejections[0])


def test_blocked_backends(make_router):
    router = make_router({"strong": FakeBackend("strong", spec=STRONG), "cheap": FakeBackend("cheap", spec=CHEAP)})
    plan = router.plan("query", docs(5), constraints={"blocked_backends": {"strong"}})
    assert plan.primary.name == "cheap"
    assert "strong is in constraints.blocked_backends" in str(find(plan, "strong").rejections[0])


def test_blocked_wins_over_allowed(make_router):
    router = make_router({"strong": FakeBackend("strong", spec=STRONG)})
    plan = router.plan("query", docs(5), constraints={"allowed_backends": {"strong"}, "blocked_backends": {"strong"}})
    assert plan.primary.name == RETRIEVER_ORDER


def test_every_rejection_reason_is_listed(make_router):
    gone = FakeBackend("gone", spec={**CLOSED_API, "license": "CC-BY-NC-4.0"}, available=Availability(False, "no key"))
    router = make_router({"gone": gone})
    plan = router.plan("query", docs(5), max_cost_usd=0, constraints={"on_premise": True, "blocked_backends": {"gone"}})
    assert rules(plan, "gone") == {"available", "allowed_backends", "license", "on_premise", "max_cost"}


# -- ties and objectives --------------------------------------------------------------------------


def test_quality_ties_broken_by_cost_then_latency(make_router):
    same = {"quality": {"web": 0.8}}
    router = make_router(
        {
            "paid_fast": FakeBackend("paid_fast", spec={**same, "pricing": {"scheme": "per_call", "usd": 0.001}}),
            "free_slow": FakeBackend("free_slow", spec={**same, "latency": {"overhead_ms": 50}}),
            "free_fast": FakeBackend("free_fast", spec={**same, "latency": {"overhead_ms": 10}}),
        }
    )
    plan = router.plan("query", docs(5))
    assert plan.primary.name == "free_fast"
    assert fallback_names(plan) == ["free_slow", "paid_fast", RETRIEVER_ORDER]


def test_unknown_quality_ranks_below_any_known_figure(make_router):
    router = make_router(
        {
            "mystery": FakeBackend("mystery", spec={"quality": {"scientific": 0.99}}),
            "known": FakeBackend("known", spec={"quality": {"web": 0.3}}),
        }
    )
    plan = router.plan("query", docs(3))
    assert plan.primary.name == "known"
    assert any("quality unknown for domain 'web'" in n for n in find(plan, "mystery").option.notes)
    # The request's domain picks the figures.
    assert router.plan("query", docs(3), context={"domain": "scientific"}).primary.name == "mystery"


def test_general_quality_is_the_domain_fallback(make_router):
    router = make_router(
        {
            "general": FakeBackend("general", spec={"quality": {"general": 0.6}}),
            "web_only": FakeBackend("web_only", spec={"quality": {"web": 0.5}}),
        }
    )
    plan = router.plan("query", docs(3))
    assert find(plan, "general").option.estimate.quality == 0.6
    assert plan.primary.name == "general"


def backends_for_objectives() -> dict[str, FakeBackend]:
    return {
        "api": FakeBackend("api", spec={**CLOSED_API, "latency": {"overhead_ms": 200}}),
        "strong": FakeBackend("strong", spec=STRONG),
        "fast": FakeBackend("fast", spec={"quality": {"web": 0.5}, "latency": {"overhead_ms": 1}}),
    }


def test_cheapest_policy(make_router):
    router = make_router(backends_for_objectives(), policy=CheapestPolicy())
    plan = router.plan("query", docs(20))
    assert plan.policy == "cheapest"
    # strong and fast are both free: the faster of the two wins the tie.
    assert plan.primary.name == "fast"
    assert fallback_names(plan) == ["strong", "api", RETRIEVER_ORDER]
    assert "lowest predicted cost" in plan.reason


def test_fastest_policy(make_router):
    router = make_router(backends_for_objectives(), policy=FastestPolicy())
    plan = router.plan("query", docs(20))
    assert plan.primary.name == "fast"
    latencies = [o.estimate.latency_ms for o in plan.options_in_order if o.stages]
    assert latencies == sorted(latencies)
    assert "lowest predicted latency" in plan.reason


def test_fastest_policy_still_obeys_constraints(make_router):
    router = make_router(backends_for_objectives(), policy=FastestPolicy())
    plan = router.plan("query", docs(20), constraints={"blocked_backends": {"fast"}})
    assert plan.primary.name == "strong"


def test_policies_by_name_from_config(make_router):
    for name in ("cheapest", "fastest", "constrained"):
        router = make_router(backends_for_objectives(), policy={"name": name})
        assert router.policy.name == name
        assert router.plan("query", docs(5)).policy == name


def test_fixed_policy_uses_the_pinned_backend_when_feasible(make_router):
    router = make_router(backends_for_objectives(), policy=FixedPolicy("fast"))
    plan = router.plan("query", docs(5), max_cost_usd=1)
    assert plan.primary.name == "fast"
    assert plan.reason == "fast is pinned"
    # fallbacks still follow quality
    assert fallback_names(plan) == ["api", "strong", RETRIEVER_ORDER]


def test_fixed_policy_falls_back_to_constrained_choice_when_pinned_is_infeasible(make_router):
    router = make_router(backends_for_objectives(), policy=FixedPolicy("api"))
    plan = router.plan("query", docs(5), max_cost_usd=1, constraints={"on_premise": True})
    assert plan.primary.name == "strong"
    assert plan.reason.startswith("pinned api rejected (on_premise: api: sends documents to cohere")
    assert "best feasible quality instead" in plan.reason
    assert "api" not in fallback_names(plan)


def test_fixed_policy_from_config():
    from router import Router

    config = {
        "policy": {"name": "fixed", "params": {"backend": "bm25"}},
        "backends": {"bm25": {"type": "lexical"}},
    }
    router = Router(config)
    try:
        assert isinstance(router.policy, FixedPolicy)
        assert router.policy.backend == "bm25"
    finally:
        router.close()


def test_fixed_policy_naming_an_unknown_backend_does_not_crash(make_router):
    router = make_router(backends_for_objectives(), policy=FixedPolicy("nope"))
    plan = router.plan("query", docs(5), max_cost_usd=0)
    assert plan.primary.name == "strong"
    assert plan.reason == "pinned nope is not a configured backend: best feasible quality instead"
    assert router.rerank("query", docs(5), max_cost_usd=0).backends == ("strong",)


def test_unknown_policy_name_lists_the_valid_ones(make_router):
    with pytest.raises(
        UnknownNameError, match=r"unknown policy 'greedy'; valid policy names: adaptive, cheapest, constrained, fastest, fixed"
    ) as info:
        make_router(policy={"name": "greedy"})
    assert info.value.valid == tuple(sorted(POLICIES))
    assert isinstance(info.value, ConfigError)
    with pytest.raises(UnknownNameError):
        create_policy("greedy")


def test_policy_params_are_validated():
    with pytest.raises(ConfigError, match=r"policy\.params\.backend: Field required"):
        create_policy("fixed", {})
    with pytest.raises(ConfigError, match=r"policy\.params\.speed: Extra inputs are not permitted"):
        create_policy("cheapest", {"speed": 3})


# -- explanation ----------------------------------------------------------------------------------


def test_explanation_lists_every_option_with_predictions_and_rejections(make_router):
    router = make_router(
        {
            "api": FakeBackend("api", spec=CLOSED_API, usage=Usage(search_units=1)),
            "strong": FakeBackend("strong", spec=STRONG),
            "cheap": FakeBackend("cheap", spec=CHEAP),
            "nc": FakeBackend("nc", spec=NON_COMMERCIAL),
        }
    )
    result = router.rerank("query", docs(20), latency_budget_ms=50, max_cost_usd=0.01)
    text = str(result.explanation)
    plan = router.plan("query", docs(20), latency_budget_ms=50, max_cost_usd=0.01)
    assert result.explanation.chosen == plan.primary.name == "api"
    assert text.startswith("policy constrained: chose api (api has the best predicted quality of the 2 feasible option(s))")
    assert f"fallbacks: cheap > {RETRIEVER_ORDER}" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in router.backends}
    assert set(rows) == {"api", "strong", "cheap", "nc"}
    for name, row in rows.items():
        estimate = find(plan, name).option.estimate
        assert f"{estimate.latency_ms:.1f}" in row
        assert f"{estimate.cost_usd:.6f}" in row
        assert f"{estimate.quality:.3f}" in row
    assert rows["api"].endswith("feasible")
    assert "latency_budget: predicted" in rows["strong"]
    assert "license: nc: license CC-BY-NC-4.0 forbids commercial use" in rows["nc"]
    assert RETRIEVER_ORDER in text
    reports = {o.name: o for o in result.explanation.options}
    assert reports["strong"].rejected and not reports["cheap"].rejected
    assert reports["api"].cost_usd == pytest.approx(0.002)
    assert reports["api"].quality == 0.95


def test_unknown_cost_and_quality_read_as_unknown(make_router):
    unpriced = {**CLOSED_API, "pricing": {"scheme": "per_token", "usd": None}, "quality": {}}
    router = make_router({"api": FakeBackend("api", spec=unpriced)})
    result = router.rerank("query", docs(3))
    row = next(line for line in str(result.explanation).splitlines() if line.startswith("api "))
    assert row.split()[2:4] == ["unknown", "unknown"]
