"""The saga dashboard: a page at ``/ui`` served by the HTTP API, over its own JSON routes.

One HTML shell (``static/index.html``) for every path under ``/ui`` (so a saga's page can
be linked to and reloaded), a stylesheet and a script of plain JavaScript: no framework, no
build step, nothing fetched from elsewhere. The shell holds no data; the script asks the
API for it with the bearer token given in its login form (kept in the browser tab's
session storage), so the dashboard sees and does exactly what its token may. The pages
are served with a Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(str(files("bus_orchestrator.ui").joinpath("static")))

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Only this origin: the dashboard's own script, style and API; nothing inline."""


def add_ui(api: FastAPI) -> None:
    """Serve the dashboard at ``/ui`` (and its assets at ``/ui/static``)."""
    shell = (STATIC / "index.html").read_text(encoding="utf-8")
    # before the catch-all page route below: routes are tried in order
    api.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    headers = {
        "Content-Security-Policy": POLICY,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    @api.get("/ui", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(shell, headers=headers)

    @api.get("/ui/{page:path}", include_in_schema=False)
    async def page(page: str) -> HTMLResponse:
        return HTMLResponse(shell, headers=headers)

    @api.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui")
