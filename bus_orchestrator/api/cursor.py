"""The opaque keyset cursors of the API's pages (``GET /sagas``, ``GET /dead``): where the
next page starts, as a time and an id."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from fastapi.exceptions import RequestValidationError

from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.ports import PageAfter


def encode_keyset(at: datetime, key: str) -> str:
    """An opaque cursor over ``(at, key)``."""
    raw = json.dumps([at.isoformat(), key], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_keyset(cursor: str) -> tuple[datetime, str]:
    """The ``(at, key)`` a cursor names (``key`` a UUID); a 422 (in FastAPI's shape) when
    it is not one this API gave."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key = json.loads(raw)
        when, key = datetime.fromisoformat(at), str(uuid.UUID(key))
        if when.tzinfo is None:
            raise ValueError("naive time")
    except (binascii.Error, ValueError, TypeError, AttributeError, RecursionError):
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "cursor"),
                    "msg": "Value error, not a cursor this API gave",
                    "input": cursor,
                }
            ]
        ) from None
    return when, key


def encode_cursor(saga: SagaInstance) -> str:
    """Where the page after ``saga`` starts (by ``created_at``, then saga id)."""
    return encode_keyset(saga.created_at, saga.saga_id)


def decode_cursor(cursor: str) -> PageAfter:
    return PageAfter(*decode_keyset(cursor))
