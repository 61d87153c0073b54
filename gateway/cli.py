"""The `taskgate` command: serve, route, check-config."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import Config, ConfigError, load_config, with_redis_url
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
    serve.set_defaults(run=_serve)

    route = commands.add_parser("route", help="print the routing decision for a text")
    route.add_argument("text", help="the user message to route")
    route.add_argument("--config", type=Path, help="YAML config (default: the embedded one)")
    route.add_argument("--json", action="store_true", help="print the route object as JSON")
    route.set_defaults(run=_route)

    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file", type=Path)
    check.set_defaults(run=_check_config)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gateway.api.app import create_app
    from gateway.logs import configure_logging

    config = load_config(settings.config_path, settings.env)
    configure_logging(settings.log_level)
    limit_threads(config)
    app = create_app(settings)
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
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    import torch

    torch.set_num_threads(config.server.torch_threads or os.cpu_count() or 1)


def _route(args: argparse.Namespace, settings: Settings) -> int:
    from experts.base import Message
    from gateway.components import build_gateway
    from gateway.outcomes import ChatCall

    config = with_redis_url(load_config(settings.config_path, settings.env), settings.redis_url)
    limit_threads(config)

    async def decide() -> dict[str, object]:
        gateway = build_gateway(config, settings.home)
        try:
            await gateway.start_routing()
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


if __name__ == "__main__":
    raise SystemExit(main())
