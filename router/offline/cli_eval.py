"""``rerank-router eval`` and ``rerank-router calibrate``: measured routing from the command line.

    rerank-router --config my.yaml eval --dataset ../shared/data/trec-dl19 \\
        --policy constrained --policy cheapest --sweep --out report.json --plot frontier.png
    rerank-router --config my.yaml eval --dataset my.jsonl --qrels my-qrels.txt --cv 5 --max-cost 0.0028
                                                  # + learned and constrained, cross-validated (under the ceiling)
    rerank-router --config my.yaml calibrate --latency --out profile.yaml           # time local backends, fit latency
    rerank-router --config my.yaml calibrate --quality-from report.json --out profile.yaml
    rerank-router --config my.yaml calibrate --dataset my.jsonl --qrels q.txt --fit-learned --out profile.yaml
    rerank-router --config my.yaml calibrate --dataset my.jsonl --qrels q.txt --fit-constrained --out profile.yaml
    rerank-router --config my.yaml calibrate --dataset my.jsonl --qrels q.txt --escalation-share 0.3 --out profile.yaml
    rerank-router --config my.yaml calibrate --dataset ../shared/data/trec-dl19 --scores --out profile.yaml

Everything heavy (ir-measures, models, matplotlib) loads inside the handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router.errors import ConfigError, RerankRouterError

WITHOUT_SIGNAL_MODES: tuple[str, ...] = ("curve", "means", "cv")
"""``--without-signal`` (calibrate, benchmarks/dl19.py): router.offline.evaluation.cross_validate_adaptive's ``without_signal``."""

__all__ = ["EVAL_COMMANDS", "add_eval_commands", "run_eval_command"]

EVAL_COMMANDS = frozenset({"eval", "calibrate"})


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _cascades(text: str) -> list[tuple[str, str, int]]:
    """``a>b@20,c>d@30`` -> [(a, b, 20), (c, d, 30)]."""
    out: list[tuple[str, str, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, sep, rest = part.partition(">")
        second, at, k = rest.rpartition("@")
        if not (sep and at and first and second and k.isdigit() and int(k) > 0):
            raise argparse.ArgumentTypeError(f"{part!r}: expected FIRST>SECOND@K, e.g. bm25>rankgpt@20")
        out.append((first, second, int(k)))
    return out


def _dataset_args(sub: argparse.ArgumentParser, required: bool) -> None:
    sub.add_argument("--dataset", required=required, help="TREC DL folder, Cranfield folder, or .jsonl of queries")
    sub.add_argument("--qrels", help="TREC qrels for a .jsonl dataset")
    sub.add_argument("--domain", help="router domain of the dataset (default: web; Cranfield: scientific)")
    sub.add_argument("--depth", type=int, help="candidates per query (default: all in the file; Cranfield: 100)")
    sub.add_argument("--limit", type=int, help="only the first N queries")
    sub.add_argument("--cache", help="keep live calls in this JSON file between runs")
    sub.add_argument("--no-memo", action="store_true", help="run live backends on every call (no replay of repeats)")
    sub.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_eval_commands(commands: Any) -> None:
    """Add the ``eval`` and ``calibrate`` subparsers to rerank-router's command parser."""
    ev = commands.add_parser("eval", help="replay policies over a labelled set: quality, cost, latency, frontier")
    _dataset_args(ev, required=True)
    ev.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME[:k=v,...]",
        help="a policy to evaluate, with params (repeatable; default: the config's)",
    )
    ev.add_argument("--no-tiers", action="store_true", help="skip the single tiers (retriever order, each backend)")
    ev.add_argument("--cascades", type=_ints, metavar="K,K", help="also run the fixed cascades free@N -> priced@k for these k")
    ev.add_argument("--budget-ms", type=float, help="latency budget for every query, ms")
    ev.add_argument("--max-cost", type=float, help="cost ceiling for every query, US$")
    ev.add_argument(
        "--max-cost-share",
        type=float,
        metavar="SHARE",
        help="cost ceiling for every query as a share of a tier's measured mean $/query (with --of TIER)",
    )
    ev.add_argument("--of", metavar="TIER", help="the tier --max-cost-share is a share of (default: the strongest tier)")
    ev.add_argument(
        "--no-dataset-runs",
        action="store_true",
        help="do not add the dataset folder's runs/*.run as replay tiers when the config does not declare them",
    )
    ev.add_argument("--budgets", help="JSON Lines of per-query budgets: {qid, latency_ms?, max_cost_usd?}")
    ev.add_argument(
        "--sweep",
        nargs="?",
        const="0,0.1,0.2,0.3,0.5,1",
        type=_floats,
        metavar="SHARES",
        help="sweep each policy's per-query cost ceiling over these shares of the strongest tier's mean cost (APGR, cost to 95%%)",
    )
    ev.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="also fit and report policies under K-fold cross-validation (each query routed by a fit on the other folds)",
    )
    ev.add_argument(
        "--cv-policies",
        default="learned,constrained",
        help="which policies --cv fits: learned (models + tradeoff), constrained (quality per backend + cascade "
        "saturation_k; run under --max-cost/--budgets); default both",
    )
    ev.add_argument(
        "--target-quality-share", type=float, help="learned: reach this share of the best tier's nDCG@10 (default 1.0)"
    )
    ev.add_argument("--target-cost-share", type=float, help="learned: best quality within this share of the best tier's cost")
    ev.add_argument("--ks", type=_ints, default=[10, 20, 30, 50], help="cascade depths measured for the --cv fits")
    ev.add_argument("--seed", type=int, default=0, help="fold seed of --cv (see --seeds for several)")
    ev.add_argument(
        "--seeds",
        metavar="A-B|A,B",
        help="--cv over every one of these fold seeds (e.g. 0-4): mean, spread and the paired bootstrap interval "
        "against the strongest tier; the table shows the first seed's run",
    )
    ev.add_argument(
        "--decision-log",
        metavar="PATH",
        help="log each routed query of the tiers, cascades and --policy runs as a decision (arm = run, request = query, "
        "feedback = its qrels) to this JSONL (.sqlite: SQLite) file, for `rerank-router report`: an offline A/B",
    )
    ev.add_argument("--out", help="write the JSON report here")
    ev.add_argument("--plot", help="write the cost-quality frontier PNG here")

    cal = commands.add_parser("calibrate", help="measure latency, quality and thresholds; write a profile")
    _dataset_args(cal, required=False)
    cal.add_argument("--out", required=True, help="profile YAML to write (merged into if it exists)")
    cal.add_argument("--latency", action="store_true", help="time local backends on a grid and fit the latency model")
    cal.add_argument(
        "--backends",
        help="comma-separated backends to time or to calibrate the scores of (default: every available local one to "
        "time, every available one to calibrate)",
    )
    cal.add_argument("--grid-candidates", type=_ints, default=[10, 50, 100])
    cal.add_argument("--grid-tokens", type=_ints, default=[64, 128, 256])
    cal.add_argument("--repeats", type=int, default=3)
    cal.add_argument(
        "--quality-from", action="append", default=[], metavar="REPORT", help="eval report(s): quality per backend per domain"
    )
    cal.add_argument("--fit-learned", action="store_true", help="fit policies.learned on --dataset (all its queries)")
    cal.add_argument(
        "--fit-constrained",
        action="store_true",
        help="fit the constrained policy's inputs on --dataset: each backend's quality and the cascade saturation_k",
    )
    cal.add_argument(
        "--fit-adaptive",
        action="store_true",
        help="fit the adaptive policy's escalation model on --dataset (gain per strong option from first-stage "
        "evidence) and its price of quality for --target-cost-share / --max-cost-share of --of's cost",
    )
    cal.add_argument("--target-quality-share", type=float)
    cal.add_argument("--target-cost-share", type=float)
    cal.add_argument("--of", metavar="TIER", help="--fit-adaptive: the tier the cost share is of (default: the strongest)")
    cal.add_argument("--ks", type=_ints, default=[10, 20, 30, 50], help="cascade depths measured for the fits")
    cal.add_argument(
        "--alpha", type=float, help="ridge penalty of the learned models (default: chosen per option by leave-one-out)"
    )
    cal.add_argument(
        "--escalation-share",
        type=float,
        help="cascade margin threshold: escalate this share of --dataset's queries (first stage: --first-stage)",
    )
    cal.add_argument("--first-stage", help="backend whose top-1 margin gates escalation (default: the first free one)")
    cal.add_argument(
        "--without-signal",
        choices=WITHOUT_SIGNAL_MODES,
        default="curve",
        help="--fit-adaptive: if the fit keeps no feature slope, plan with the constrained policy's curve (default), "
        "escalate every query by the options' mean gains, or choose between the two by cross-validation",
    )
    cal.add_argument("--max-cost", type=float, help="--fit-adaptive: target mean cost per query, US$")
    cal.add_argument("--max-cost-share", type=float, help="--fit-adaptive: target mean cost as a share of --of's cost")
    cal.add_argument("--no-dataset-runs", action="store_true", help="do not add the dataset folder's runs/*.run as replay tiers")
    cal.add_argument(
        "--scores",
        action="store_true",
        help="fit each backend's score calibration (isotonic or Platt, chosen by query-grouped CV) on --dataset",
    )
    cal.add_argument(
        "--relevant-grade", type=int, help="--scores: a document this grade or above is relevant (default: the dataset's, 2)"
    )
    cal.add_argument("--score-folds", type=int, default=5, help="--scores: query-grouped folds choosing the method")
    cal.add_argument("--score-metric", choices=("log-loss", "brier"), default="log-loss", help="--scores: held-out loss")
    cal.add_argument(
        "--scores-domain", help="--scores: the domain the fits are for (default: the dataset's; '*' for every domain)"
    )
    cal.add_argument(
        "--score-cascades",
        type=_cascades,
        default=[],
        metavar="A>B@K,...",
        help="--scores: also fit B's scores as the later stage of the cascade A on all -> B on the top K (key 'B after A')",
    )


def run_eval_command(args: argparse.Namespace) -> int:
    try:
        if args.command == "eval":
            return _cmd_eval(args)
        return _cmd_calibrate(args)
    except (RerankRouterError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# -- helpers ----------------------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> Any:
    from router.offline.evaluation import load_dataset

    if str(args.dataset).endswith(".jsonl") and not args.qrels:
        raise ConfigError(f"{args.dataset}: a .jsonl dataset needs its judgments (--qrels FILE, TREC format)")
    dataset = load_dataset(args.dataset, qrels=args.qrels, domain=args.domain, depth=args.depth)
    return dataset.head(args.limit) if args.limit else dataset


def _harness(args: argparse.Namespace, dataset: Any) -> Any:
    from router.config import load_config
    from router.offline.evaluation import EvalHarness

    config = load_config(args.config)
    if not getattr(args, "no_dataset_runs", False):
        config = with_dataset_runs(config, dataset)
    return EvalHarness(dataset, config, memo=not args.no_memo, cache=args.cache, progress=not args.no_progress)


def with_dataset_runs(config: Any, dataset: Any) -> Any:
    """The config plus a ``type: replay`` tier for each of the dataset's recorded runs it does not declare.

    Such a tier is named after its file and has no price (its cost is unknown: quality rows only, and no
    ceiling can admit it) until the config declares it; a notice on stderr says how."""
    from router.backends.replay import ReplayConfig

    declared = {Path(getattr(cfg, "run", "")).resolve() for cfg in config.backends.values() if getattr(cfg, "run", None)}
    missing = {name: path for name, path in dataset.runs.items() if Path(path).resolve() not in declared}
    if not missing:
        return config
    added: dict[str, Any] = {}
    for name, path in missing.items():
        key = name if name not in config.backends else f"run-{name}"
        added[key] = ReplayConfig(
            run=str(path),
            spec={"provider": "replay", "pricing": {"scheme": "per_call", "usd": None, "source": "not declared"}},
        )
    snippet = "\n".join(
        f"  {key}:\n    type: replay\n    run: {cfg.run}\n    spec:\n      license: <license>\n"
        "      data_leaves_premises: <true for an API>\n      pricing: {scheme: per_token, usd: <price>}\n"
        "      latency: {per_doc_ms: <ms>}"
        for key, cfg in added.items()
    )
    print(
        f"{dataset.name}: recorded runs {', '.join(sorted(added))} added as replay tiers with no price (quality only; "
        "no cost ceiling admits them). To price them, declare them in your config under backends:\n" + snippet,
        file=sys.stderr,
    )
    return config.model_copy(update={"backends": {**config.backends, **added}})


def _decision_log(path: str) -> Any:
    from router.decisions import DecisionLogConfig, build_decision_log

    sink = "sqlite" if Path(path).suffix in (".sqlite", ".db") else "jsonl"
    return build_decision_log(DecisionLogConfig(sink=sink, path=path))


def _parse_policy(text: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` (values as YAML: numbers, lists, paths)."""
    import yaml

    name, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--policy {text}: expected key=value after ':', got {pair!r}")
        params[key.strip()] = yaml.safe_load(value)
    return name.strip(), params


def _budgets(args: argparse.Namespace) -> Any:
    from router.offline.evaluation import QueryBudget

    if args.budgets:
        table: dict[str, QueryBudget] = {}
        for line in Path(args.budgets).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                table[str(row["qid"])] = QueryBudget(
                    row.get("latency_ms", args.budget_ms), row.get("max_cost_usd", args.max_cost)
                )
        return table
    if args.budget_ms is None and args.max_cost is None:
        return None
    return QueryBudget(args.budget_ms, args.max_cost)


def _targets(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """(target_quality_share, target_cost_share): one of them; by default, match the best tier."""
    if args.target_quality_share is not None and args.target_cost_share is not None:
        raise ConfigError("give one of --target-quality-share, --target-cost-share")
    if args.target_cost_share is not None:
        return None, float(args.target_cost_share)
    return float(args.target_quality_share or 1.0), None


# -- eval ---------------------------------------------------------------------------------------------
CV_POLICIES = ("learned", "constrained", "adaptive")


def _share_ceiling(args: argparse.Namespace, tiers: list[Any]) -> float | None:
    """--max-cost-share SHARE [--of TIER]: SHARE x that tier's measured mean $/query."""
    if args.max_cost_share is None:
        if args.of:
            raise ConfigError("--of names the tier --max-cost-share is a share of: give --max-cost-share too")
        return None
    if args.max_cost is not None:
        raise ConfigError("give one of --max-cost, --max-cost-share")
    priced = [t for t in tiers if math.isfinite(t.cost_mean)]
    if args.of:
        named = [t for t in tiers if t.label == args.of]
        if not named:
            raise ConfigError(f"--of {args.of}: not a tier here (tiers: {', '.join(t.label for t in tiers)})")
        tier = named[0]
        if not math.isfinite(tier.cost_mean) or tier.cost_mean <= 0:
            raise ConfigError(f"--of {args.of}: its cost is unknown or zero; declare its price in the config (spec.pricing)")
    else:
        if not priced:
            raise ConfigError("--max-cost-share: no priced tier to take a share of")
        tier = max(priced, key=lambda t: t.ndcg)
    ceiling = float(args.max_cost_share) * float(tier.cost_mean)
    print(
        f"ceiling: {args.max_cost_share:g} x {tier.label}'s ${tier.cost_mean:.6g}/query = ${ceiling:.6g}/query", file=sys.stderr
    )
    return ceiling


def _cmd_eval(args: argparse.Namespace) -> int:
    from policies.learned import option_key
    from router.config import build_policy
    from router.offline.evaluation import build_report, evaluate_options, format_table, plot_frontier, write_json
    from router.offline.evaluation.paired import describe_paired, paired_bootstrap, parse_seeds, seed_summary
    from router.offline.fitting import option_grid

    dataset = _load(args)
    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    with _harness(args, dataset) as harness:
        status = harness.warm_up()
        print(f"{dataset.name}: {len(dataset)} queries; backends: {status}", file=sys.stderr)
        tier_runs = harness.tiers()
        ceiling = _share_ceiling(args, tier_runs)
        if ceiling is not None:
            args.max_cost = ceiling
        budget = _budgets(args)
        if args.decision_log:
            harness.decision_log = _decision_log(args.decision_log)
        runs = [] if args.no_tiers else list(tier_runs)
        specs = {name: harness.backends[name].spec for name in harness.available()}
        options = option_grid(specs, args.ks)
        if args.cascades:
            runs.extend(harness.run_option(list(o)) for o in option_grid(specs, args.cascades) if len(o) > 1)
        named = [_parse_policy(p) for p in args.policy] or [(harness.config.policy.name, dict(harness.config.policy.params))]
        policies = [(f"{n}" + (f" {p}" if p else ""), build_policy(n, p)) for n, p in named]
        runs.extend(harness.run(label, policy, budget=budget) for label, policy in policies)
        if harness.decision_log is not None:
            harness.decision_log.close()
            harness.decision_log = None
            print(f"decision log: {args.decision_log} (rerank-router report {args.decision_log})", file=sys.stderr)
        extra: dict[str, Any] = {}
        priced = [r for r in tier_runs if math.isfinite(r.cost_mean)]
        strongest = max(priced or tier_runs, key=lambda r: r.ndcg)
        if args.cv:
            wanted = [p.strip() for p in args.cv_policies.split(",") if p.strip()]
            unknown = sorted(set(wanted) - set(CV_POLICIES))
            if unknown:
                raise ConfigError(f"--cv-policies: {', '.join(unknown)} (known: {', '.join(CV_POLICIES)})")
            option_runs = evaluate_options(harness, options)
            extra["cv"] = {"folds": args.cv, "seeds": seeds, "options": [option_key(o) for o in options], "by_policy": {}}
            for name in wanted:
                per_seed = [_cv_one(args, harness, option_runs, options, name, seed, budget, strongest) for seed in seeds]
                runs.append(per_seed[0].run)
                entry: dict[str, Any] = {"per_fold": {str(s): list(c.folds) for s, c in zip(seeds, per_seed, strict=True)}}
                if len(seeds) > 1:
                    seed_runs = [c.run for c in per_seed]
                    reference_cost = strongest.cost_mean if math.isfinite(strongest.cost_mean) else None
                    entry["seeds"] = seed_summary(seed_runs, reference_cost)
                    entry["paired"] = paired_bootstrap(seed_runs, strongest, seed=seeds[0])
                extra["cv"]["by_policy"][name] = entry
                legacy = {"learned": "per_fold", "constrained": "constrained_per_fold", "adaptive": "adaptive_per_fold"}
                extra["cv"][legacy[name]] = list(per_seed[0].folds)  # the first seed's folds, where they always were
        sweeps: dict[str, Any] = {}
        tiers = [r for r in tier_runs if math.isfinite(r.cost_mean)]
        if args.sweep:
            if not tiers:
                raise ConfigError("--sweep needs a priced tier")
            ceilings = [s * strongest.cost_mean for s in args.sweep]
            sweeps = {label: harness.sweep(label, policy, ceilings) for label, policy in policies}
        report = build_report(dataset, runs, sweeps=sweeps, extra=extra)
    print(format_table(runs))
    summary = report["summary"]
    for name, p in summary.get("policies", {}).items():
        print(
            f"{name}: APGR {p['apgr']:.3f}; cost to 95% of {summary['strong']['label']}'s quality: {p['cost_to_95pct_quality_usd']}"
        )
    for name, entry in extra.get("cv", {}).get("by_policy", {}).items():
        if "seeds" in entry:
            s, share = entry["seeds"], entry["seeds"].get("cost_share")
            cost = f" at {100 * share['mean']:.1f}% of {strongest.label}'s cost" if share else ""
            print(
                f"{name} ({args.cv}-fold CV, fold seeds {','.join(map(str, seeds))}): nDCG@10 mean {s['ndcg@10']['mean']:.4f} "
                f"(sd {s['ndcg@10']['sd']:.4f}, min {s['ndcg@10']['min']:.4f}, max {s['ndcg@10']['max']:.4f}){cost}; "
                + describe_paired(entry["paired"])
            )
    if args.out:
        print(f"report: {write_json(report, args.out)}", file=sys.stderr)
    if args.plot:
        print(f"plot: {plot_frontier(runs, sweeps, args.plot, title=dataset.name)}", file=sys.stderr)
    return 0


def _cv_one(
    args: argparse.Namespace,
    harness: Any,
    option_runs: Any,
    options: Any,
    name: str,
    seed: int,
    budget: Any,
    strongest: Any,
) -> Any:
    """One fold seed of one policy's cross-validation. The adaptive policy's mean-cost target:
    --target-cost-share x the strongest tier's cost if given, else the per-query ceiling (--max-cost[-share])."""
    from router.offline.evaluation import cross_validate, cross_validate_adaptive, cross_validate_constrained
    from router.offline.evaluation.paired import parse_seeds

    first_seed = parse_seeds(args.seeds)[0] if args.seeds else args.seed
    label = f"{name} ({args.cv}-fold CV)" + ("" if seed == first_seed else f" seed {seed}")
    if name == "learned":
        quality_share, cost_share = _targets(args)
        return cross_validate(
            harness,
            option_runs,
            options,
            folds=args.cv,
            seed=seed,
            target_quality_share=quality_share,
            target_cost_share=cost_share,
            label=label,
        )
    if name == "constrained":
        return cross_validate_constrained(harness, option_runs, options, folds=args.cv, seed=seed, budget=budget, label=label)
    target = args.max_cost
    if args.target_cost_share is not None and math.isfinite(strongest.cost_mean):
        target = args.target_cost_share * strongest.cost_mean
    return cross_validate_adaptive(
        harness, option_runs, options, folds=args.cv, seed=seed, budget=budget, target_cost=target, label=label
    )


# -- calibrate ----------------------------------------------------------------------------------------
def _cmd_calibrate(args: argparse.Namespace) -> int:
    from router.offline.calibration import write_profile

    backends: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, float] = {}
    learned: Mapping[str, Any] | None = None
    notes: list[str] = []
    did = False
    if args.latency:
        backends.update(_calibrate_latency(args, notes))
        did = True
    for path in args.quality_from:
        from router.offline.calibration import quality_from_report

        for name, quality in quality_from_report(json.loads(Path(path).read_text(encoding="utf-8"))).items():
            backends[name] = {**backends.get(name, {}), "quality": {**backends.get(name, {}).get("quality", {}), **quality}}
        notes.append(f"quality from {path}")
        did = True
    adaptive: Mapping[str, Any] | None = None
    scores: dict[str, dict[str, Any]] = {}
    if args.scores:
        if not args.dataset:
            raise ConfigError("--scores needs --dataset")
        scores = _calibrate_scores(args, notes)
        did = True
    if args.fit_learned or args.fit_constrained or args.fit_adaptive or args.escalation_share is not None:
        if not args.dataset:
            raise ConfigError("--fit-learned, --fit-constrained, --fit-adaptive and --escalation-share need --dataset")
        learned, found, measured, adaptive = _calibrate_on_dataset(args, notes)
        thresholds.update(found)
        for name, overrides in measured.items():
            backends[name] = {**backends.get(name, {}), "quality": {**backends.get(name, {}).get("quality", {}), **overrides}}
        did = True
    if not did:
        raise ConfigError(
            "nothing to calibrate: give --latency, --quality-from, --scores, --fit-learned, --fit-constrained, "
            "--fit-adaptive or --escalation-share"
        )
    write_profile(
        args.out, backends=backends, thresholds=thresholds, learned=learned, adaptive=adaptive, scores=scores, notes=notes
    )
    print(f"profile: {args.out}")
    for name, values in backends.items():
        print(f"  {name}: {values}")
    for name, value in thresholds.items():
        print(f"  threshold {name} = {value:.6g}")
    for name, by_domain in scores.items():
        for domain, fit in by_domain.items():
            print(f"  scores {name} ({domain}): {fit.method}, {fit.n} pairs over {fit.queries} queries; {fit.chosen_by}")
    if learned is not None:
        print(f"  learned: {len(learned['options'])} options, tradeoff {learned['tradeoff']:.4g} ({learned['target']})")
    if adaptive is not None:
        kept = sum(1 for w in adaptive["slopes"] if w != 0)
        print(
            f"  adaptive: first stage {adaptive['first_stage']}, {len(adaptive['options'])} strong options, {kept} feature "
            f"slope(s) kept, {adaptive['min_gain_per_usd']:.4g} nDCG@10 per $ ({adaptive['target']}; {adaptive['queries']} queries)"
            + ("" if kept else f"; no slope: it plans by the {adaptive['without_signal']} (--without-signal)")
        )
    return 0


def _calibrate_latency(args: argparse.Namespace, notes: list[str]) -> dict[str, dict[str, Any]]:
    import platform

    from router.backends.registry import build_backend
    from router.config import load_config
    from router.offline.calibration import fit_backend_latency, time_latency_grid

    config = load_config(args.config)
    wanted = args.backends.split(",") if args.backends else None
    out: dict[str, dict[str, Any]] = {}
    for name, cfg in config.backends.items():
        backend = build_backend(name, cfg)
        local = not backend.spec.data_leaves_premises and backend.spec.provider == "local"
        if (wanted is not None and name not in wanted) or (wanted is None and not local):
            continue
        availability = backend.availability()
        if not availability.ok:
            print(f"skipping {name}: {availability.reason}", file=sys.stderr)
            continue
        samples = asyncio.run(
            time_latency_grid(
                backend, args.grid_candidates, args.grid_tokens, repeats=args.repeats, progress=not args.no_progress
            )
        )
        grid = f"{len(args.grid_candidates)}x{len(args.grid_tokens)} grid, median of {args.repeats}"
        params = fit_backend_latency(samples, source=f"rerank-router calibrate: {grid}, {platform.node()}")
        out[name] = {"latency": params.model_dump()}
        for tokens, ms in samples:
            print(f"  {name}: {len(tokens):>4} x ~{sum(tokens) // max(1, len(tokens)):>4} tokens: {ms:8.1f} ms", file=sys.stderr)
        notes.append(f"latency of {name}: {grid}")
    if not out:
        raise ConfigError("no local backend to time (name them with --backends)")
    return out


def _calibrate_scores(args: argparse.Namespace, notes: list[str]) -> dict[str, dict[str, Any]]:
    """backend -> {domain: ScoreCalibration}: each backend run on every query's candidates of --dataset."""
    from router.offline.evaluation import OptionPolicy
    from router.offline.score_fit import ScorePair, fit_score_calibration
    from router.profile import after_key

    dataset = _load(args)
    grade = dataset.rel if args.relevant_grade is None else args.relevant_grade
    domain = args.scores_domain or dataset.domain
    out: dict[str, dict[str, Any]] = {}
    with _harness(args, dataset) as harness:
        harness.warm_up()
        available = harness.available()
        wanted = args.backends.split(",") if args.backends else available
        missing = sorted(set(wanted) - set(available))
        if missing:
            raise ConfigError(f"--scores: backend(s) not available: {', '.join(missing)} (available: {', '.join(available)})")
        candidates = {q.qid: q.candidates for q in dataset.queries}
        for name in wanted:
            pairs = [
                ScorePair(qid, score, dataset.qrels.get(qid, {}).get(c.docid, 0) >= grade)
                for qid, values in harness.first_stage_scores(name).items()
                for c, score in zip(candidates[qid], values, strict=True)
            ]
            source = f"rerank-router calibrate --scores on {dataset.name} ({len(dataset)} queries, relevant: grade >= {grade})"
            out[name] = {
                domain: fit_score_calibration(
                    pairs,
                    folds=args.score_folds,
                    metric=args.score_metric,
                    relevant_grade=grade,
                    source=source,
                )
            }
            notes.append(f"score calibration of {name} ({domain}) fitted on {dataset.name}")
        for first, second, k in args.score_cascades:
            missing = sorted({first, second} - set(available))
            if missing:
                raise ConfigError(f"--score-cascades: backend(s) not available: {', '.join(missing)}")
            results = harness.results(OptionPolicy(((first, None), (second, k))), scores={})
            pairs = [
                ScorePair(qid, item.raw_score, dataset.qrels.get(qid, {}).get(item.id, 0) >= grade)
                for qid, result in results.items()
                for item in result.items
                if item.scored_by == second and item.raw_score is not None
            ]
            key = after_key(second, first)
            source = f"rerank-router calibrate --scores on {dataset.name}: {second}'s scores on the top {k} of {first}"
            out[key] = {
                domain: fit_score_calibration(
                    pairs, folds=args.score_folds, metric=args.score_metric, relevant_grade=grade, source=source
                )
            }
            notes.append(f"score calibration of {key} ({domain}) fitted on {dataset.name} (top {k})")
    return out


def _calibrate_on_dataset(
    args: argparse.Namespace, notes: list[str]
) -> tuple[dict[str, Any] | None, dict[str, float], dict[str, dict[str, float]], dict[str, Any] | None]:
    """(learned model, thresholds, backend -> {domain: quality}, adaptive model) fitted on every query of --dataset."""
    from router.offline.calibration import fit_constrained
    from router.offline.evaluation import evaluate_options, examples_from_runs
    from router.offline.fitting import ALPHAS, calibrate_margin_threshold, fit_learned, option_grid

    dataset = _load(args)
    thresholds: dict[str, float] = {}
    learned: dict[str, Any] | None = None
    adaptive: dict[str, Any] | None = None
    quality: dict[str, dict[str, float]] = {}
    with _harness(args, dataset) as harness:
        harness.warm_up()
        specs = {name: harness.backends[name].spec for name in harness.available()}
        if args.escalation_share is not None:
            first = args.first_stage or next((n for n, s in specs.items() if s.pricing.scheme == "free"), None)
            if first is None:
                raise ConfigError("no free first-stage backend: name one with --first-stage")
            margins = list(harness.margins(first).values())
            thresholds["cascade.adaptive_margin"] = calibrate_margin_threshold(margins, args.escalation_share)
            thresholds["cascade.expected_escalation"] = args.escalation_share
            notes.append(
                f"cascade margin of {first} for {args.escalation_share:.0%} escalation on {dataset.name} ({len(margins)} queries)"
            )
        if args.fit_learned or args.fit_constrained or args.fit_adaptive:
            options = option_grid(specs, args.ks)
            option_runs = evaluate_options(harness, options)
            examples = examples_from_runs(option_runs)
            if args.fit_adaptive:
                adaptive = _fit_adaptive(args, harness, option_runs, options, notes)
            if args.fit_constrained or args.fit_adaptive:  # the adaptive policy's fallback is the curve
                fit = fit_constrained(
                    options, [e.quality for e in examples.values()], fitted_on=f"{dataset.name} ({len(examples)} queries)"
                )
                thresholds.update(fit.thresholds())
                quality = {name: entry["quality"] for name, entry in fit.profile_backends(dataset.domain).items()}
                notes.append(
                    f"constrained policy's inputs fitted on {dataset.name} ({fit.queries} queries): quality per backend "
                    f"({dataset.domain}), cascade.saturation_k "
                    + (str(fit.saturation_k) if fit.saturation_k is not None else "not fitted (no cascade beats its first stage)")
                )
            if args.fit_learned:
                quality_share, cost_share = _targets(args)
                model = fit_learned(
                    list(examples.values()),
                    options,
                    alpha=ALPHAS if args.alpha is None else args.alpha,
                    target_quality_share=quality_share,
                    target_cost_share=cost_share,
                    fitted_on=f"{dataset.name} ({len(examples)} queries)",
                )
                learned = model.model_dump()
                thresholds["learned.tradeoff"] = model.tradeoff
                notes.append(f"learned policy fitted on {dataset.name}: {model.target}")
    return learned, thresholds, quality, adaptive


def _fit_adaptive(args: argparse.Namespace, harness: Any, option_runs: Any, options: Any, notes: list[str]) -> dict[str, Any]:
    """The adaptive policy fitted on every query (first stage: the free one best alone), price for the mean-cost target."""
    from router.offline.evaluation import choose_without_signal, escalation_evidence, escalation_examples, first_stage_of
    from router.offline.evaluation.crossval import INNER_FOLDS
    from router.offline.fitting import MIN_ADAPTIVE_QUERIES, fit_adaptive

    dataset = harness.dataset
    share = args.target_cost_share if args.target_cost_share is not None else args.max_cost_share
    target: float | None = args.max_cost
    if share is not None:
        tiers = [r for key, r in option_runs.items() if key.count("->") == 0 and math.isfinite(r.cost_mean) and r.cost_mean > 0]
        named = [r for r in tiers if r.label == args.of] if args.of else tiers
        if not named:
            raise ConfigError(f"--fit-adaptive: no priced tier {args.of or ''} to take the cost share of")
        reference = max(named, key=lambda r: r.ndcg)
        target = share * reference.cost_mean
    first = first_stage_of(option_runs, options, list(dataset.qids))
    texts = {q.qid: q.text for q in dataset.queries}
    names, retriever = escalation_evidence(dataset, list(dataset.qids))
    examples = escalation_examples(option_runs, options, first, harness.first_stage_scores(first), texts, retriever, names)
    model = fit_adaptive(
        list(examples.values()),
        first,
        target_cost=target,
        fitted_on=f"{dataset.name} ({len(examples)} queries)",
        features=names,
    )
    if not model.has_signal and args.without_signal == "cv":  # which fallback does better on these queries, held out
        choice, found = choose_without_signal(harness, option_runs, options, list(dataset.qids), target_cost=target)
        model = model.model_copy(update={"without_signal": choice})
        notes.append(
            f"adaptive: no feature slope kept; without_signal {choice} by {INNER_FOLDS}-fold CV "
            f"(nDCG@10 curve {found['curve']:.4f}, means {found['means']:.4f})"
        )
    elif not model.has_signal:
        model = model.model_copy(update={"without_signal": args.without_signal})
    if model.queries < MIN_ADAPTIVE_QUERIES:
        print(
            f"adaptive: only {model.queries} labelled queries (< {MIN_ADAPTIVE_QUERIES}): the policy will plan with the "
            "constrained policy's curve (fitted beside it) until the profile holds a model fitted on more",
            file=sys.stderr,
        )
    notes.append(f"adaptive policy fitted on {dataset.name} ({model.queries} queries): {model.target}")
    return model.model_dump()
