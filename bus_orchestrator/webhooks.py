"""Webhooks: another system's HTTP callback, mapped to one of the app's business events.

An app declares each webhook it accepts; ``bus-orchestrator api`` serves it at
``POST /webhooks/{name}``::

    def paid(payload: Any) -> dict[str, Any]:
        return {"order_id": payload["metadata"]["order_id"], "amount": payload["amount"]}

    app = App("shop", sagas=[...], webhooks=[Webhook("psp", event=PaymentReceived, map=paid)])

Its secret comes from the environment of the API process, ``BUS_WEBHOOK_SECRET_PSP`` (the
name upper-cased, ``-`` as ``_``), or from the file ``BUS_WEBHOOK_SECRET_PSP_FILE`` names;
``secret_env`` names another variable. It is read once when the API is built, and never
logged nor shown.

The sender signs each request (see ``sign``): header ``X-Bus-Timestamp`` is the time in
Unix seconds, and ``X-Bus-Signature`` is ``sha256=`` followed by the lower-case hex
HMAC-SHA256, keyed with the secret's UTF-8 bytes, of the ASCII timestamp, a ``.``, and the
raw request body, byte for byte. A request signed more than ``TOLERANCE`` (5 minutes)
before or after the receiver's clock is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus_orchestrator.core.messages import Event
from bus_orchestrator.errors import DefinitionError

WEBHOOK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
TIMESTAMP_HEADER = "X-Bus-Timestamp"
SIGNATURE_HEADER = "X-Bus-Signature"
TOLERANCE = 300
"""Seconds a signature's timestamp may be off the receiver's clock, either way."""
SCHEME = "sha256="

Mapping_ = Callable[[Any], Mapping[str, Any] | Event]
"""A webhook's mapping: the request's JSON payload -> the event's data, or the event."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One webhook the app accepts: its name (in the URL), the event it publishes, and the
    mapping from the sender's JSON payload to that event's data (or to the event itself).

    The mapping may raise to refuse a payload (the sender gets 422): ``PayloadRefusedError``
    with a reason for the sender, or any exception (shown by its kind only).
    """

    name: str
    event: type[Event]
    map: Mapping_
    secret_env: str | None = None
    """The variable holding the secret; default ``BUS_WEBHOOK_SECRET_<NAME>``."""
    delivery: Callable[[Any], str] | None = None
    """The sender's id of a delivery, read from the payload (so it is signed), the same on
    each retry of it: a delivery is then published once however often it is re-signed
    and sent. Without it, one signed request is published once however often it is
    replayed."""
    description: str = ""

    def __post_init__(self) -> None:
        if not WEBHOOK_NAME.match(self.name):
            raise DefinitionError(
                f"webhook name {self.name!r} must be lower-case letters, digits and '-', "
                "starting with a letter (at most 40)"
            )
        if not (isinstance(self.event, type) and issubclass(self.event, Event)):
            raise DefinitionError(f"webhook {self.name!r}: event must be an Event model")

    @property
    def secret_setting(self) -> str:
        """The environment variable of the secret (``..._FILE``: a file holding it)."""
        return self.secret_env or "BUS_WEBHOOK_SECRET_" + self.name.upper().replace("-", "_")


class PayloadRefusedError(Exception):
    """Raised by a webhook's mapping to refuse a payload with a reason the sender sees
    (422). Any other exception refuses it too, shown by its kind only."""


class WebhookSecretError(Exception):
    """A webhook's secret cannot be read: one line naming the setting, never the secret."""


def load_secret(webhook: Webhook, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The webhook's secret (its UTF-8 bytes) from the environment, or ``None`` when
    neither the variable nor its ``_FILE`` is set. A file's trailing newline is dropped."""
    env = os.environ if environ is None else environ
    setting = webhook.secret_setting
    value = env.get(setting)
    if value:
        return value.encode()
    path = env.get(f"{setting}_FILE")
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise WebhookSecretError(f"{setting}_FILE: cannot read {path!r}: {reason}") from None
    if not text:
        raise WebhookSecretError(f"{setting}_FILE: {path!r} is empty")
    return text.encode()


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: the value of ``X-Bus-Signature`` for this timestamp and body."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return SCHEME + digest.hexdigest()


def sign(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    """The headers that sign ``body`` at ``now`` (Unix seconds)."""
    timestamp = str(int(now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def verify(
    secret: bytes, timestamp: str | None, presented: str | None, body: bytes, now: float
) -> str | None:
    """Why the request is not signed with ``secret`` (a reason safe to show the sender),
    or ``None`` when it is. The signatures are compared in constant time."""
    if not timestamp or not presented:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    if not _TIMESTAMP.match(timestamp):
        return f"{TIMESTAMP_HEADER} must be the time in Unix seconds"
    if abs(now - int(timestamp)) > TOLERANCE:
        return f"{TIMESTAMP_HEADER} is more than {TOLERANCE} seconds off this server's clock"
    expected = signature(secret, timestamp, body).encode("ascii")
    try:
        candidate = presented.strip().lower().encode("ascii")
    except UnicodeEncodeError:
        candidate = b""
    if not hmac.compare_digest(expected, candidate):
        return "signature does not match"
    return None
