"""The `taskgate` command: serve, route, check-config, eval, fit, keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from gateway.config import (
    Config,
    ConfigError,
    EmbedderConfig,
    RouterConfig,
    TargetConfig,
    load_config,
    with_redis_url,
)
from gateway.keys_cli import add_keys_parser
from gateway.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env().with_config(getattr(args, "config", None))
    try:
        code: int = args.run(args, settings)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (OpenAI-compatible HTTP API)")
    serve.add_argument("--config", type=Path, help="YAML config (default: the embedded one)")
    serve.add_argument("--host", help="bind address (default: the config's server.host)")
    serve.add_argument("--port", type=int, help="port (default: the config's server.port)")
    serve.add_argument(
        "--watch", action="store_true", help="reload the config when its file changes"
    )
    serve.set_defaults(run=_serve)

    route = commands.add_parser("route", help="print the routing decision for a text")
    route.add_argument("text", help="the user message to route")
    route.add_argument("--config", type=Path, help="YAML config (default: the embedded one)")
    route.add_argument("--json", action="store_true", help="print the route object as JSON")
    route.set_defaults(run=_route)

    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file", type=Path)
    check.set_defaults(run=_check_config)
    _eval_parser(commands)
    _fit_parser(commands)
    add_keys_parser(commands)
    return parser


def _eval_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = commands.add_parser(
        "eval", help="measure routing on labelled JSONL files ({text, label}; label oos)"
    )
    evaluate.add_argument("--train", type=Path, required=True, help="exemplars: a label each")
    evaluate.add_argument("--test", type=Path, required=True, help="requests to route")
    evaluate.add_argument("--val", type=Path, help="calibrate on this (default: folds of train)")
    evaluate.add_argument("--embedder", help="builtin:all-MiniLM-L6-v2 or a model directory")
    evaluate.add_argument("--config", type=Path, help="take router and embedder settings here")
    evaluate.add_argument("--target", help="operating point: oos_recall=0.9 or precision=0.98")
    evaluate.add_argument(
        "--precision",
        choices=["auto", "float32", "int8"],
        help="embedder precision (default: the config's, else auto: int8 on ONNX Runtime)",
    )
    evaluate.add_argument(
        "--runtime",
        choices=["auto", "onnx", "torch"],
        help="what runs the embedder (default: the config's, else auto: ONNX Runtime)",
    )
    evaluate.add_argument("--json", action="store_true", help="end with the metrics as JSON")
    evaluate.add_argument("--plot", type=Path, help="write confusion and threshold plots (PNG)")
    evaluate.set_defaults(run=_eval)


def _fit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fit = commands.add_parser("fit", help="fine-tune the embedder on the exemplars (offline)")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="experts' examples and negative examples")
    source.add_argument("--train", type=Path, help="or a {text, label} JSONL file (oos: negative)")
    fit.add_argument("--out", type=Path, required=True, help="directory for the fitted model")
    fit.add_argument("--embedder", help="base model (default: the config's, or the builtin)")
    fit.add_argument("--epochs", type=float, default=4.0)
    fit.set_defaults(run=_fit)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gateway.api.app import create_app
    from gateway.logs import configure_logging

    config = load_config(settings.config_path, settings.env)
    configure_logging(settings.log_level)
    limit_threads(config)
    app = create_app(settings, watch_config=args.watch)
    uvicorn.run(
        app,
        host=args.host or config.server.host,
        port=args.port or config.server.port,
        log_config=None,
        timeout_graceful_shutdown=30,
    )
    return 0


def limit_threads(config: Config) -> None:
    """BLAS on one thread (numpy scoring is tiny; contention costs more); torch as set."""
    pin_threads(config.server.torch_threads)


def pin_threads(torch_threads: int | None) -> None:
    import numpy  # noqa: F401  (its BLAS must be loaded for the limit to reach it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    import torch

    torch.set_num_threads(torch_threads or usable_cpus())


def usable_cpus() -> int:
    """The CPUs this process may run on (`taskset`, cpusets), not all the machine has:
    more torch threads than cores only contend."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity API on this platform
        return os.cpu_count() or 1


def _route(args: argparse.Namespace, settings: Settings) -> int:
    from experts.base import Message
    from gateway.components import build_gateway
    from gateway.logs import quiet_model_loading
    from gateway.outcomes import ChatCall

    config = with_redis_url(load_config(settings.config_path, settings.env), settings.redis_url)
    limit_threads(config)
    quiet_model_loading()

    async def decide() -> dict[str, object]:
        gateway = build_gateway(config, settings.home)
        try:
            await gateway.start(experts=False)
            call = ChatCall("auto", (Message("user", args.text),))
            return dict((await gateway.route(call)).to_json())
        finally:
            await gateway.aclose()

    route = asyncio.run(decide())
    if args.json:
        print(json.dumps(route, indent=2))
        return 0
    head = f"{route['action']}"
    if route.get("expert"):
        head += f" -> {route['expert']}"
    print(f"{head}  (score {route['score']:.3f}, margin {route['margin']:.3f}, {route['reason']})")
    if route.get("question"):
        print(f"question: {route['question']}")
    candidates = route["candidates"]
    assert isinstance(candidates, list)
    for candidate in candidates:
        print(f"  {candidate['expert']:<24} {candidate['score']:.4f}")
    return 0


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    config = load_config(args.file, settings.env)
    names = ", ".join(f"{spec.name} ({spec.kind})" for spec in config.experts)
    print(f"{args.file}: ok, {len(config.experts)} experts: {names}")
    return 0


def _eval(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import eval_report
    from gateway.evaluation import DatasetError, evaluate, read_jsonl

    config = load_config(args.config, settings.env) if args.config else None
    router = config.router if config is not None else RouterConfig()
    embedder = config.embedder if config is not None else EmbedderConfig()
    if args.target:
        router = router.model_copy(update={"target": _target(args.target)})
    if args.precision:
        embedder = embedder.model_copy(update={"precision": args.precision})
    if args.runtime:
        embedder = embedder.model_copy(update={"runtime": args.runtime})
    pin_threads(config.server.torch_threads if config is not None else None)
    try:
        train, test = read_jsonl(args.train), read_jsonl(args.test)
        val = read_jsonl(args.val) if args.val else None
        result = asyncio.run(
            evaluate(
                train,
                test,
                val,
                embedder_ref=args.embedder or embedder.model,
                router_config=router,
                embedder_config=embedder,
                cache_dir=settings.home / "router",
                progress=lambda line: print(f"[eval] {line}", file=sys.stderr),
            )
        )
    except DatasetError as exc:
        print(f"taskgate eval: {exc}", file=sys.stderr)
        return 2
    title = f"taskgate eval: {args.test.name} ({result.metrics['embedder']})"
    print(eval_report.table(result, title))
    if args.plot:
        eval_report.plot(result, args.plot, title)
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(result.metrics))
    return 0


def _target(text: str) -> TargetConfig:
    kind, _, value = text.partition("=")
    try:
        return TargetConfig.model_validate({kind.strip(): float(value)})
    except (ValueError, ValidationError) as exc:
        message = f"taskgate eval: --target wants oos_recall=R or precision=P: {exc}"
        raise SystemExit(message) from exc


def _fit(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.routing.embedder import resolve_embedder_path
    from gateway.routing.finetune import FinetuneOptions, finetune

    texts, labels, negatives, base = _fit_data(args, settings)
    pin_threads(None)
    started = time.monotonic()

    def progress(step: int, steps: int, loss: float) -> None:
        if step % 50 == 0 or step == steps:
            elapsed = time.monotonic() - started
            print(f"[fit] step {step}/{steps} loss {loss:.3f} ({elapsed:.0f}s)", file=sys.stderr)

    report = finetune(
        resolve_embedder_path(args.embedder or base),
        texts,
        labels,
        negatives,
        args.out,
        FinetuneOptions(epochs=args.epochs),
        progress,
    )
    print(
        f"{report.out}: fine-tuned on {report.examples} examples of {report.experts} experts "
        f"and {report.negatives} negatives, {report.steps} steps in {report.seconds:.0f}s; "
        f"point embedder.model at it"
    )
    return 0


def _fit_data(
    args: argparse.Namespace, settings: Settings
) -> tuple[list[str], list[str], list[str], str]:
    if args.train is not None:
        from gateway.evaluation import OOS, read_jsonl

        rows = read_jsonl(args.train)
        inside = [row for row in rows if row.label != OOS]
        negatives = [row.text for row in rows if row.label == OOS]
        base = EmbedderConfig().model
        return [r.text for r in inside], [r.label for r in inside], negatives, base
    config = load_config(args.config, settings.env)
    pairs = [(text, spec.name) for spec in config.experts for text in spec.examples]
    texts, labels = [text for text, _ in pairs], [name for _, name in pairs]
    return texts, labels, list(config.router.negative_examples), config.embedder.model


if __name__ == "__main__":
    raise SystemExit(main())
