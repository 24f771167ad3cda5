"""The cursor of ``GET /sagas``: opaque, it names where the last page ended, and anything
else is a 422."""

from __future__ import annotations

import base64

import pytest
from fastapi.exceptions import RequestValidationError

from bus_orchestrator.api.cursor import decode_cursor, encode_cursor
from bus_orchestrator.ports import PageAfter
from tests.integration.test_store_contract import T0, make_saga


def test_a_cursor_names_the_last_saga_of_its_page() -> None:
    saga = make_saga("o-1")
    cursor = encode_cursor(saga)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == PageAfter(T0, saga.saga_id)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b"[1, 2]",
        b'["2024-05-01T12:00:00", "6f1d4c8e-3b0a-5e7f-9a26-1c5b7d2e8f40"]',  # naive
        b'["2024-05-01T12:00:00+00:00", "not-a-uuid"]',
        b'["2024-05-01T12:00:00+00:00", "6f1d4c8e-3b0a-5e7f-9a26-1c5b7d2e8f40", 3]',
        b"[" * 100_000,
    ],
)
def test_anything_else_is_a_validation_error(raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(RequestValidationError):
        decode_cursor(cursor)
    with pytest.raises(RequestValidationError):
        decode_cursor(cursor + "!")
