"""The API's refusals: the exception routes raise, and how each is declared in
``/openapi.json``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bus_orchestrator.api.models import AmbiguousBody, ErrorBody


class ApiError(Exception):
    """A refusal: its status, its body (an ``ErrorBody``), and any headers."""

    def __init__(self, status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.detail)
        self.status = status
        self.body = body
        self.headers = headers


Responses = dict[int | str, dict[str, Any]]


def _refusal(description: str, model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


UNAUTHORIZED: Responses = {401: _refusal("No token, or not a known one")}
FORBIDDEN: Responses = {403: _refusal("The token's role does not allow this route")}
UNAVAILABLE: Responses = {503: _refusal("Postgres is unavailable")}
NOT_FOUND: Responses = {404: _refusal("No saga of this app has that id")}
AMBIGUOUS: Responses = {409: _refusal("Several sagas have that correlation id", AmbiguousBody)}
GUARDED: Responses = {**UNAUTHORIZED, **FORBIDDEN, **UNAVAILABLE}
