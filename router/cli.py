"""Command line: ``rerank-router rerank|plan|backends|serve|batch``.

    rerank-router rerank --query "how do vaccines work" --docs docs.jsonl --top-n 3 --explain

``--docs`` is JSON Lines in UTF-8 (a byte-order mark is fine): each line a JSON string, or an object
with ``text`` (and optional ``id``, ``metadata``); ``-`` reads standard input.

A mistake in what was given (a file that is missing or not UTF-8, a line that is not JSON, a bad
config, a bad argument) prints one ``error:`` line that says what to fix and exits with 2.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from router.engine import Router
from router.errors import RerankRouterError
from router.offline.cli_eval import EVAL_COMMANDS, add_eval_commands, run_eval_command
from router.offline.cli_report import REPORT_COMMANDS, add_report_commands, run_report_command

__all__ = ["UsageError", "main"]


_JSON_KINDS = {list: "array", int: "number", float: "number", bool: "boolean", type(None): "null"}


class UsageError(Exception):
    """A mistake on the command line or in a file it names; main() prints it on one line, exit 2."""


def _open_docs(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer if hasattr(sys.stdin, "buffer") else io.BytesIO(sys.stdin.read().encode())
    try:
        return Path(path).open("rb")
    except FileNotFoundError:
        raise UsageError(f"--docs {path}: no such file; give a JSON Lines file, or - to read standard input") from None
    except IsADirectoryError:
        raise UsageError(f"--docs {path}: is a directory; give a JSON Lines file") from None
    except OSError as exc:
        raise UsageError(f"--docs {path}: cannot read it ({exc.strerror or exc})") from None


def _lines(stream: IO[bytes], path: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(stream, 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"--docs {path}:{number}: not UTF-8 text (byte {exc.start + 1} of the line); save the file as UTF-8"
            ) from None


def _read_docs(path: str, max_documents: int | None = None) -> list[Any]:
    """The documents of a JSON Lines file; stops reading one past ``max_documents`` (the router
    then says the list is too long, without this reading the rest of a huge file)."""
    stream = _open_docs(path)
    docs: list[Any] = []
    try:
        for number, line in _lines(stream, path):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"--docs {path}:{number}: not JSON ({exc.msg}); each line must be a JSON string or object"
                ) from None
            except RecursionError:
                raise UsageError(
                    f"--docs {path}:{number}: nested too deeply; give each document as a string or a flat object"
                ) from None
            if not isinstance(doc, str | dict):
                kind = _JSON_KINDS.get(type(doc), type(doc).__name__)
                raise UsageError(
                    f"--docs {path}:{number}: a JSON {kind}; each line must be a JSON string or "
                    'an object like {"text": "...", "id": "..."}'
                )
            docs.append(doc)
            if max_documents is not None and len(docs) > max_documents:
                break
    finally:
        if stream is not getattr(sys.stdin, "buffer", None):
            stream.close()
    return docs


def _request_args(args: argparse.Namespace) -> dict[str, Any]:
    constraints: dict[str, Any] = {}
    if args.on_premise:
        constraints["on_premise"] = True
    context = {"domain": args.domain} if args.domain else None
    return {
        "top_n": args.top_n,
        "latency_budget_ms": args.budget_ms,
        "max_cost_usd": args.max_cost,
        "constraints": constraints or None,
        "context": context,
    }


def _cmd_rerank(router: Router, args: argparse.Namespace) -> int:
    docs = _read_docs(args.docs, router.config.limits.max_documents)
    if not args.cold:
        router.warm_up()
    result = router.rerank(args.query, docs, **_request_args(args))
    if args.json:
        print(json.dumps(result.to_dict(top_only=True), indent=2, ensure_ascii=False, allow_nan=False))
        return 0
    served = " -> ".join(result.backends) or "retriever order"
    cost = "unknown" if result.actual_cost_usd is None else f"${result.actual_cost_usd:.6f}"
    print(f"served by {served} in {result.latency_ms:.0f} ms, cost {cost}" + (" (DEGRADED)" if result.degraded else ""))
    if result.degraded_reason:
        print(f"  why degraded: {result.degraded_reason}")
    if result.arm is not None:
        print(f"  experiment {result.experiment}: arm {result.arm} (request {result.request_id})")
    for rank, item in enumerate(result.top(), 1):
        score = "   -  " if item.score is None else f"{item.score:.4f}"
        text = item.text if len(item.text) <= 100 else item.text[:97] + "..."
        print(f"{rank:>3}. [{item.id}] {score}  {text}")
    if args.explain:
        print()
        print(result.explanation)
    return 0


def _cmd_plan(router: Router, args: argparse.Namespace) -> int:
    from router.result import Explanation

    plan = router.plan(args.query, _read_docs(args.docs, router.config.limits.max_documents), **_request_args(args))
    print(Explanation.from_plan(plan, ()))
    return 0


def _cmd_backends(router: Router, args: argparse.Namespace) -> int:
    print(f"{'backend':<24} {'model':<42} {'license':<14} {'leaves premises':<16} status")
    for name, backend in router.backends.items():
        spec = backend.spec
        availability = backend.availability()
        status = "available" if availability.ok else f"unavailable: {availability.reason}"
        print(f"{name:<24} {spec.model:<42} {spec.license:<14} {'yes' if spec.data_leaves_premises else 'no':<16} {status}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.hash_key:
        from router.service.config import key_digest

        print(f"{{sha256: {key_digest(sys.stdin.readline().strip())}}}")
        return 0
    try:
        from router.service.server import ServeOptions, serve
    except ImportError as exc:
        print(
            f"error: the gateway needs the serve extra: pip install 'rerank-router[serve]' ({exc.name} missing)", file=sys.stderr
        )
        return 2
    options = ServeOptions(args.config, args.host, args.port, args.workers, args.insecure_no_auth, args.log_level)
    return serve(options)


class _Removed(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "--non-commercial was removed: a request can only tighten the config's constraints, so it never "
            "allowed anything; to allow non-commercial licenses set constraints: {commercial_use: false} in the config"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-router", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="config YAML (default: $RERANK_ROUTER_CONFIG, else the packaged default)")
    commands = parser.add_subparsers(dest="command", required=True)

    def request_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--query", required=True)
        sub.add_argument("--docs", required=True, help="JSON Lines file of documents, or - for stdin")
        sub.add_argument("--top-n", type=int)
        sub.add_argument("--budget-ms", type=float, help="latency budget in milliseconds")
        sub.add_argument("--max-cost", type=float, help="cost ceiling for this request, US dollars")
        sub.add_argument("--on-premise", action="store_true", help="no document may leave this machine")
        # Removed: a request can only tighten the config's constraints, so this could never allow anything.
        sub.add_argument("--non-commercial", action=_Removed, nargs=0, help=argparse.SUPPRESS)
        sub.add_argument("--domain", help="domain for quality figures (e.g. web, scientific)")
        return sub

    rerank = request_parser("rerank", "rerank documents through the router")
    rerank.add_argument("--explain", action="store_true", help="print every option considered and why")
    rerank.add_argument("--json", action="store_true", help="print the full result as JSON")
    rerank.add_argument("--cold", action="store_true", help="do not load models before timing the request")
    request_parser("plan", "show what would run and why, without running it")
    commands.add_parser("backends", help="list configured backends and whether each is available")
    serve = commands.add_parser("serve", help="run the HTTP gateway (Cohere / Jina / TEI / native endpoints; extra: serve)")
    serve.add_argument("--config", default=argparse.SUPPRESS, help="config YAML (as the top-level --config)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="worker processes, one Router each")
    serve.add_argument("--insecure-no-auth", action="store_true", help="allow a non-loopback bind with no tenants configured")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--hash-key", action="store_true", help="print the sha256 entry for the API key read from stdin, and exit")
    _add_batch_command(commands)
    add_eval_commands(commands)  # eval, calibrate (router.offline.cli_eval)
    add_report_commands(commands)  # report (router.offline.cli_report)
    return parser


def _add_batch_command(commands: Any) -> None:
    batch = commands.add_parser(
        "batch", help="rerank a JSONL file of requests into a JSONL file of results (resumable; router.batch)"
    )
    batch.add_argument("--input", required=True, help="JSON Lines: one request per line (router.batch)")
    batch.add_argument("--output", required=True, help="results, one line per request; a re-run skips ids already there")
    batch.add_argument("--concurrency", type=int, default=8, help="requests in flight (per actor with --ray)")
    batch.add_argument("--top-n", type=int, help="default for requests that give none")
    batch.add_argument("--budget-ms", type=float, help="default latency budget for requests that give none")
    batch.add_argument("--max-cost", type=float, help="default cost ceiling for requests that give none")
    batch.add_argument("--on-premise", action="store_true", help="every request: no document may leave this machine")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    batch.add_argument("--cold", action="store_true", help="do not load local models before the first request")
    batch.add_argument("--ray", action="store_true", help="run on Ray Data actors (the `ray` extra)")
    batch.add_argument("--address", help="Ray cluster address (default: start a local one)")
    batch.add_argument("--actors", type=int, default=2, help="Ray actors, one Router each (API rate limits are divided)")
    batch.add_argument("--batch-size", type=int, default=64, help="requests per Ray batch")


def _cmd_batch(args: argparse.Namespace) -> int:
    from router.batch import BatchStats

    defaults: dict[str, Any] = {
        "top_n": args.top_n,
        "latency_budget_ms": args.budget_ms,
        "max_cost_usd": args.max_cost,
        "constraints": {"on_premise": True} if args.on_premise else None,
    }
    stats: BatchStats
    if args.ray:
        from router.integrations.ray import run_batch_ray

        stats = run_batch_ray(
            args.input,
            args.output,
            config=args.config,
            actors=args.actors,
            address=args.address,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            warm=not args.cold,
            **defaults,
        )
    else:
        from router.batch import run_batch_file

        router = Router(args.config)
        try:
            if not args.cold:
                router.warm_up(freeze_gc=False)
            stats = run_batch_file(
                router, args.input, args.output, concurrency=args.concurrency, progress=not args.no_progress, **defaults
            )
        finally:
            router.close()
    print(
        f"{stats.total} requests: {stats.skipped} already answered, {stats.ok} ok, {stats.failed} failed; "
        f"{stats.written} results in {args.output}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in EVAL_COMMANDS:
        return run_eval_command(args)
    if args.command in REPORT_COMMANDS:
        return run_report_command(args)
    if args.command == "serve":
        return _cmd_serve(args)
    try:
        if args.command == "batch":
            return _cmd_batch(args)
        router = Router(args.config)
        handler = {"rerank": _cmd_rerank, "plan": _cmd_plan, "backends": _cmd_backends}[args.command]
        return handler(router, args)
    except (RerankRouterError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
