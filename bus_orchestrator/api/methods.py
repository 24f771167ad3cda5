"""The ``Allow`` header of a 405: every method of the path, not only one route's.

FastAPI makes one route per method, and Starlette answers a method no route of a path
takes with the ``Allow`` of the first route that matched the path: a path served by GET
and DELETE (two routes) would say ``Allow: GET``, which the document contradicts.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match


def allow_every_method(api: FastAPI) -> None:
    """Answer a 405 with every method any route of the path takes."""

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            methods: set[str] = set()
            for route in request.app.router.routes:
                match, _ = route.matches(request.scope)
                if match is not Match.NONE:
                    methods |= getattr(route, "methods", None) or set()
            if methods:
                headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
                exc = HTTPException(405, exc.detail, headers)
        return await http_exception_handler(request, exc)
