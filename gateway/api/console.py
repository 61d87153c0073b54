"""The operator console's files, at `/console/`: a static page (HTML, CSS, JavaScript)
that is part of the package.

The files are served to anyone who can reach the gateway: they hold no data and no
secret. Everything the page shows comes from the public API, called with the admin key
the operator types in (kept in the tab's sessionStorage, sent as `Authorization: Bearer`);
with `auth: none` it needs none. So the console sees exactly what that key may see, and
a console left open without a key shows nothing. The Content-Security-Policy keeps the
page to its own files and this origin: no CDN, no inline script, nothing framed.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from gateway.errors import NotFound

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "core.js": "text/javascript; charset=utf-8",
    "panels.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def console_router() -> APIRouter:
    """Routes for the console's files (not in the OpenAPI schema: they are no API)."""
    folder = resources.files("gateway") / "console"
    files = {name: (folder / name).read_bytes() for name in FILES}
    router = APIRouter(include_in_schema=False)

    def file(name: str) -> Response:
        if name not in files:
            raise NotFound(f"no console file '{name}'")
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    @router.get("/console")
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=308)

    @router.get("/console/")
    async def console_index() -> Response:
        return file("index.html")

    @router.get("/console/{name}")
    async def console_file(name: str) -> Response:
        return file(name)

    return router
