"""Access control of the HTTP API: bearer tokens, each with a role.

Tokens come from ``BUS_API_TOKENS`` (``token=role,...``) and from the file named by
``BUS_API_TOKENS_FILE`` (the same pairs, one a line or comma-separated; ``#`` starts a
comment line). A ``reader`` may use the GET routes, an ``operator`` every route. An entry
may name who holds the token, ``token=operator:alice``: the name is what the saga's history
records of an operator's action (else the entry's number, ``operator token 2``). A token
is compared with each known token in constant time (``hmac.compare_digest``), and never
appears in a log line or an error.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who presented a token: its role, and the name the history records."""

    role: Role
    name: str


INSECURE_CALLER = Caller(Role.OPERATOR, "anonymous (BUS_API_INSECURE)")

_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")


class ApiConfigError(Exception):
    """The API's access control is misconfigured: a one-line reason naming the setting."""


class ApiTokens:
    """The tokens the API accepts, each with its role."""

    def __init__(self, pairs: Iterable[tuple[str, Role] | tuple[str, Role, str]]) -> None:
        self._pairs = tuple(
            (
                entry[0].encode(),
                Caller(entry[1], entry[2] if len(entry) > 2 else f"{entry[1]} token {n}"),
            )
            for n, entry in enumerate(pairs, start=1)
        )

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:  # never the tokens themselves
        return f"ApiTokens({len(self._pairs)} tokens)"

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, or ``None``."""
        caller = self.caller_of(presented)
        return None if caller is None else caller.role

    def caller_of(self, presented: str) -> Caller | None:
        """Who holds ``presented``, or ``None``. Every known token is compared, each in
        constant time, so the time taken says nothing of which one (nearly) matched."""
        candidate = presented.encode()
        found: Caller | None = None
        for token, caller in self._pairs:
            if hmac.compare_digest(token, candidate):
                found = caller
        return found


def parse_tokens(text: str, setting: str) -> list[tuple[str, Role, str]]:
    """The ``token=role[:name]`` entries of ``text``; ``ApiConfigError`` names the entry (by
    number, never by its token) when one is malformed. An entry without a name is named
    after its role and number."""
    pairs: list[tuple[str, Role, str]] = []
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
        role, colon, name = role.partition(":")
        if colon and not _NAME.match(name.strip()):
            raise ApiConfigError(
                f"{setting}: entry {number} has a bad name after its role: use letters, "
                "digits and ._@+- (at most 64)"
            )
        try:
            pairs.append(
                (
                    token.strip(),
                    Role(role.strip()),
                    name.strip() or f"{role.strip()} token {number}",
                )
            )
        except ValueError:
            raise ApiConfigError(
                f"{setting}: entry {number} has an unknown role; roles: reader, operator"
            ) from None
    return pairs


def load_tokens(settings: Settings) -> ApiTokens:
    """The tokens of ``BUS_API_TOKENS`` and ``BUS_API_TOKENS_FILE`` (empty when neither
    is set); ``ApiConfigError`` when one is malformed or the file cannot be read."""
    pairs: list[tuple[str, Role, str]] = []
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
