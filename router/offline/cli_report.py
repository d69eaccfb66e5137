"""``rerank-router report``: compare the arms of an A/B experiment from its decision log.

    rerank-router report decisions.jsonl --baseline control --json report.json --plot report.png
    rerank-router report replica-*.sqlite --experiment rerank-ab --metric mrr@10 --no-include-shadow

Builds no Router: it reads logs only. numpy, ir-measures and matplotlib load inside the handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from router.errors import RerankRouterError, UnknownNameError

__all__ = ["REPORT_COMMANDS", "add_report_commands", "run_report_command"]

REPORT_COMMANDS = frozenset({"report"})
_FLAGS = {"arm": "--baseline", "experiment": "--experiment"}


def add_report_commands(commands: Any) -> None:
    """Add the ``report`` subparser to rerank-router's command parser."""
    sub = commands.add_parser("report", help="compare experiment arms from decision logs: quality, cost, latency, verdict")
    sub.add_argument("logs", nargs="+", metavar="LOG", help="decision log(s): JSON Lines, or SQLite (.sqlite/.db)")
    sub.add_argument("--experiment", help="the experiment to report (needed when a log holds several)")
    sub.add_argument("--baseline", metavar="ARM", help="arm the others are compared with (default: most primary traffic)")
    sub.add_argument(
        "--metric",
        choices=["auto", "ndcg@10", "mrr@10"],
        default="auto",
        help="quality: nDCG@10 from graded feedback, click MRR@10, or auto (graded where there is any)",
    )
    sub.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    sub.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's random generator")
    sub.add_argument("--json", dest="json_path", metavar="PATH", help="write the JSON report here")
    sub.add_argument("--plot", metavar="PATH", help="write the PNG plot here (quality with CIs, p50/p95 latency)")
    sub.add_argument(
        "--include-shadow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count shadow runs as their arm's observations (paired with the primary run of the same request)",
    )


def run_report_command(args: argparse.Namespace) -> int:
    try:
        return _cmd_report(args)
    except UnknownNameError as exc:
        flag = _FLAGS.get(exc.kind)
        print(f"error: {flag}: {exc}" if flag else f"error: {exc}", file=sys.stderr)
        return 2
    except (RerankRouterError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_report(args: argparse.Namespace) -> int:
    from router.decisions.reader import read_log
    from router.offline.report.plot import plot_report
    from router.offline.report.report import build_report, write_json

    if args.resamples < 1:
        raise ValueError(f"--resamples must be at least 1, got {args.resamples}")
    if not 0 < args.level < 1:
        raise ValueError(f"--level must be between 0 and 1 (e.g. 0.95), got {args.level}")
    log = read_log(args.logs)
    report = build_report(
        log,
        experiment=args.experiment,
        baseline=args.baseline,
        metric=args.metric,
        include_shadow=args.include_shadow,
        resamples=args.resamples,
        level=args.level,
        seed=args.seed,
    )
    print(report.format())
    if args.json_path:
        print(f"report: {write_json(report, args.json_path)}", file=sys.stderr)
    if args.plot:
        print(f"plot: {plot_report(report, args.plot)}", file=sys.stderr)
    return 0
