"""The opaque cursor of ``GET /sagas``: where the next page of sagas starts."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from fastapi.exceptions import RequestValidationError

from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.ports import PageAfter


def encode_cursor(saga: SagaInstance) -> str:
    """An opaque cursor over (created_at, saga_id): where the next page starts."""
    raw = json.dumps([saga.created_at.isoformat(), saga.saga_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageAfter:
    """The page end a cursor names; a 422 (in FastAPI's shape) when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, saga_id = json.loads(raw)
        after = PageAfter(datetime.fromisoformat(created_at), str(uuid.UUID(saga_id)))
        if after.created_at.tzinfo is None:
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
    return after
