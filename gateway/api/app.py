"""The ASGI app: built by `create_app(settings)`, nothing at import time.

The gateway starts in the background (loading models takes seconds): `/healthz` answers
at once, `/readyz` turns 200 when routing and every expert are up, and chat requests
before that get a 503 that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.access.gate import Access, build_access
from gateway.api.admin import ConfigSource, reload_config
from gateway.api.admin import router as admin_router
from gateway.api.console import console_router
from gateway.api.evaluate import router as eval_router
from gateway.api.memory import router as memory_router
from gateway.api.middleware import BodyLimit, CancelOnDisconnect, RequestIds
from gateway.api.openai import router
from gateway.api.passthrough import router as passthrough_router
from gateway.api.reloading import on_sighup, watch
from gateway.api.sse import error_body, error_for
from gateway.components import build_gateway, build_memory
from gateway.config import Config, NoAuth, load_config, with_redis_url
from gateway.errors import GatewayError
from gateway.eval_jobs import Evaluations
from gateway.service import Gateway
from gateway.settings import Settings
from gateway.tracing import setup_tracing

logger = logging.getLogger(__name__)


def build_app(
    gateway: Gateway,
    max_body_bytes: int,
    *,
    config_source: ConfigSource | None = None,
    watch_file: Path | None = None,
    access: Access | None = None,
) -> FastAPI:
    """The app around an already-constructed gateway; the lifespan starts and closes it.

    With a `config_source`, `POST /admin/reload` and SIGHUP reload the config; with a
    `watch_file`, so does a change of that file. `access` checks keys and rate limits
    (default: keys from the config, limits counted in this process).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def trigger() -> None:
            await _reload(gateway, config_source)

        tasks = [asyncio.create_task(_start(app, gateway), name="gateway-start")]
        if watch_file is not None:
            tasks.append(asyncio.create_task(watch(watch_file, trigger), name="config-watch"))
        uninstall = on_sighup(trigger)
        _warn_if_open(gateway.config)
        try:
            yield
        finally:
            uninstall()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await gateway.aclose()

    app = FastAPI(title="taskgate", lifespan=lifespan)
    app.state.gateway = gateway
    app.state.started_at = time.time()
    app.state.startup_error = None
    app.state.config_source = config_source
    app.state.access = access or build_access(gateway.config, None)
    app.state.evaluations = Evaluations(gateway.cache_dir)
    app.include_router(router)
    app.include_router(passthrough_router)
    app.include_router(memory_router)
    app.include_router(admin_router)
    app.include_router(eval_router)
    app.include_router(console_router())
    _install_error_handlers(app)

    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestIds)
    return app


def _warn_if_open(config: Config) -> None:
    if isinstance(config.auth, NoAuth):
        logger.warning(
            "authentication is off (auth: none): every request is tenant 'default' and may "
            "use the admin endpoints; give API keys before exposing this gateway"
        )


async def _reload(gateway: Gateway, source: ConfigSource | None) -> None:
    """A reload nobody waits for (signal, file change): its outcome goes to the log."""
    if not gateway.ready:
        logger.warning("reload ignored: the gateway is still starting")
        return
    try:
        experts = await reload_config(gateway, source)
    except GatewayError as exc:
        logger.error("reload failed; nothing changed", extra={"error": exc.message})
        return
    logger.info("reload done", extra={"experts": experts})


async def _start(app: FastAPI, gateway: Gateway) -> None:
    try:
        await gateway.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        app.state.startup_error = f"{type(exc).__name__}: {exc}"
        logger.exception("gateway failed to start")
        return
    freeze_heap()


def freeze_heap() -> None:
    """Take everything loaded at start-up (torch, transformers, the models, the router)
    out of the cyclic garbage collector's sight. Its full collections would otherwise walk
    those millions of long-lived objects: pauses of about 100 ms under load. Objects freed
    by reference counting are still freed; only cycles among them would stay."""
    gc.collect()
    gc.freeze()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        logger.log(level, "request failed", extra=_failure(request, exc.status, exc.code))
        body = error_for(exc)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        logger.info("invalid request", extra=_failure(request, 400, "invalid_request"))
        body = error_body(message, "invalid_request_error", "invalid_request", param)
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = error_body(str(exc.detail), "invalid_request_error", f"http_{exc.status_code}")
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra=_failure(request, 500, "internal"))
        body = error_body("internal error", "server_error", "internal")
        return JSONResponse(body, status_code=500)


def _failure(request: Request, status: int, code: str | None) -> dict[str, object]:
    return {
        "request_id": getattr(request.state, "request_id", None),
        "path": request.url.path,
        "status": status,
        "code": code,
    }


# pydantic names the union member that failed in the path (content.str, content.list[...]).
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[\w-]+\[.*\]|function-.*)$")


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    loc = [part for part in loc if not _UNION_TAG.match(part)]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        message = "field required"
    described = f"{param}: {message}" if param else message
    if len(errors) > 1:
        described += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return described, param


def create_app(settings: Settings, *, watch_config: bool = False) -> FastAPI:
    """Load the configured (or embedded default) config and build the whole app.

    A config file can be reloaded live (admin endpoint, SIGHUP, and with `watch_config`,
    when the file changes); the embedded default cannot.
    """

    def source() -> Config:
        return with_redis_url(load_config(settings.config_path, settings.env), settings.redis_url)

    config = source()
    setup_tracing(config.tracing)
    path = settings.config_path
    memory = build_memory(config)  # its Redis client also holds keys and rate limits
    return build_app(
        build_gateway(config, settings.home, memory),
        config.server.max_body_bytes,
        config_source=source if path is not None else None,
        watch_file=path if watch_config else None,
        access=build_access(config, memory.redis),
    )
