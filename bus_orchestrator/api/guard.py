"""The bearer-token check of each route (see ``auth`` for the tokens themselves)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bus_orchestrator.api.auth import INSECURE_CALLER, ApiTokens, Caller, Role
from bus_orchestrator.api.errors import ApiError
from bus_orchestrator.api.models import ErrorBody

bearer = HTTPBearer(auto_error=False, description="A token of BUS_API_TOKENS")


def require(role: Role) -> Callable[..., Awaitable[None]]:
    """A dependency refusing a caller without a token of (at least) ``role``: 401 without
    a known token, 403 with a token of a lesser role. No check when the API is insecure."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        tokens: ApiTokens | None = request.app.state.tokens
        if tokens is None:
            request.state.caller = INSECURE_CALLER
            return
        granted = tokens.caller_of(credentials.credentials) if credentials else None
        if granted is None:
            raise ApiError(
                401,
                ErrorBody(error="unauthorized", detail="a valid bearer token is required"),
                {"WWW-Authenticate": "Bearer"},
            )
        if not granted.role.allows(role):
            raise ApiError(
                403, ErrorBody(error="forbidden", detail=f"this route needs the {role} role")
            )

        request.state.caller = granted

    return check


def caller(request: Request) -> Caller:
    """Who called a guarded route (set by its guard): the name an action is recorded by."""
    found: Caller = request.state.caller
    return found


READER = [Depends(require(Role.READER))]
OPERATOR = [Depends(require(Role.OPERATOR))]
"""For the routes that change things: an operator's token."""
