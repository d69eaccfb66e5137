"""Measured routing: replay policies over labelled queries, measure quality, cost and latency.

    from router.offline.evaluation import EvalHarness, load_dataset

    dataset = load_dataset("../shared/data/trec-dl19")
    with EvalHarness(dataset, "my-config.yaml") as harness:
        tiers = harness.tiers()                                   # retriever order + each backend
        run = harness.run("constrained", create_policy("constrained"))
        print(format_table([*tiers, run]))

Modules: :mod:`~router.datasets` (loaders), :mod:`~router.offline.evaluation.metrics`
(ir-measures), :mod:`~router.offline.evaluation.runner` (the harness), :mod:`~router.offline.evaluation.frontier`
(APGR, cost to reach a quality), :mod:`~router.offline.evaluation.crossval` (fitting the learned and the
constrained policy under k-fold CV), :mod:`~router.offline.evaluation.report` (table, JSON, PNG). Not imported by
``import router``; needs the ``eval`` extra (ir-measures, matplotlib, tqdm).
"""

from router.datasets import (
    Candidate,
    Dataset,
    LabelledQuery,
    load_cranfield,
    load_dataset,
    load_jsonl,
    load_rank_llm_json,
    load_trec_dl,
    read_trec_qrels,
    read_trec_run,
)
from router.offline.evaluation.crossval import (
    CrossValidation,
    choose_without_signal,
    cross_validate,
    cross_validate_adaptive,
    cross_validate_constrained,
    escalation_evidence,
    escalation_examples,
    evaluate_options,
    examples_from_runs,
    first_stage_of,
    kfold,
)
from router.offline.evaluation.frontier import Point, apgr, cost_to_reach, pareto_frontier, strong_and_weak
from router.offline.evaluation.metrics import MeasureSet
from router.offline.evaluation.report import build_report, format_table, plot_frontier, summarise, write_json
from router.offline.evaluation.runner import (
    EvalHarness,
    MemoBackend,
    OptionPolicy,
    QueryBudget,
    QueryRecord,
    RunResult,
    SimulatedClock,
)

__all__ = [
    "Candidate",
    "CrossValidation",
    "Dataset",
    "EvalHarness",
    "LabelledQuery",
    "MeasureSet",
    "MemoBackend",
    "OptionPolicy",
    "Point",
    "QueryBudget",
    "QueryRecord",
    "RunResult",
    "SimulatedClock",
    "apgr",
    "build_report",
    "choose_without_signal",
    "cost_to_reach",
    "cross_validate",
    "cross_validate_adaptive",
    "cross_validate_constrained",
    "escalation_evidence",
    "escalation_examples",
    "evaluate_options",
    "examples_from_runs",
    "first_stage_of",
    "format_table",
    "kfold",
    "load_cranfield",
    "load_dataset",
    "load_jsonl",
    "load_rank_llm_json",
    "load_trec_dl",
    "pareto_frontier",
    "plot_frontier",
    "read_trec_qrels",
    "read_trec_run",
    "strong_and_weak",
    "summarise",
    "write_json",
]
