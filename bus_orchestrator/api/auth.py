"""Access control of the HTTP API: bearer tokens, each with a role.

Tokens come from ``BUS_API_TOKENS`` (``token=role,...``) and from the file named by
``BUS_API_TOKENS_FILE`` (the same pairs, one a line or comma-separated; ``#`` starts a
comment line). A ``reader`` may use the GET routes, an ``operator`` every route. A token
is compared with each known token in constant time (``hmac.compare_digest``), and never
appears in a log line or an error.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from bus_orchestrator.config import Settings


class Role(StrEnum):
    READER = "reader"
    """The GET routes."""
    OPERATOR = "operator"
    """Every route (the repair and publishing routes to come)."""

    def allows(self, needed: Role) -> bool:
        return self is Role.OPERATOR or needed is Role.READER


class ApiConfigError(Exception):
    """The API's access control is misconfigured: a one-line reason naming the setting."""


class ApiTokens:
    """The tokens the API accepts, each with its role."""

    def __init__(self, pairs: Iterable[tuple[str, Role]]) -> None:
        self._pairs = tuple((token.encode(), role) for token, role in pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:  # never the tokens themselves
        return f"ApiTokens({len(self._pairs)} tokens)"

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, or ``None``. Every known token is compared, each in
        constant time, so the time taken says nothing of which one (nearly) matched."""
        candidate = presented.encode()
        found: Role | None = None
        for token, role in self._pairs:
            if hmac.compare_digest(token, candidate):
                found = role
        return found


def parse_tokens(text: str, setting: str) -> list[tuple[str, Role]]:
    """The ``token=role`` pairs of ``text``; ``ApiConfigError`` names the entry (by number,
    never by its token) when one is malformed."""
    pairs: list[tuple[str, Role]] = []
    entries = [
        entry.strip()
        for line in text.splitlines()
        if not line.strip().startswith("#")
        for entry in line.split(",")
    ]
    for number, entry in enumerate((e for e in entries if e), start=1):
        token, equals, role = entry.rpartition("=")
        if not equals or not token.strip():
            raise ApiConfigError(
                f"{setting}: entry {number} is not token=role (roles: reader, operator)"
            )
        try:
            pairs.append((token.strip(), Role(role.strip())))
        except ValueError:
            raise ApiConfigError(
                f"{setting}: entry {number} has an unknown role; roles: reader, operator"
            ) from None
    return pairs


def load_tokens(settings: Settings) -> ApiTokens:
    """The tokens of ``BUS_API_TOKENS`` and ``BUS_API_TOKENS_FILE`` (empty when neither
    is set); ``ApiConfigError`` when one is malformed or the file cannot be read."""
    pairs: list[tuple[str, Role]] = []
    if settings.api_tokens is not None:
        pairs += parse_tokens(settings.api_tokens.get_secret_value(), "BUS_API_TOKENS")
    if settings.api_tokens_file:
        path = Path(settings.api_tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ApiConfigError(
                f"BUS_API_TOKENS_FILE: cannot read {str(path)!r}: {reason}"
            ) from None
        pairs += parse_tokens(text, "BUS_API_TOKENS_FILE")
    return ApiTokens(pairs)


NO_TOKENS = (
    "the HTTP API has no tokens: set BUS_API_TOKENS (token=reader,token=operator,...) or "
    "BUS_API_TOKENS_FILE, or BUS_API_INSECURE=1 to serve it without access control"
)
