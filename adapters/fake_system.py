"""What the fake external systems share: derived ids, call counting, injected outages."""

from __future__ import annotations

import uuid

from bus_orchestrator.errors import TransientAdapterError

# Ids the fake systems hand out are derived from the caller's idempotency key, so a
# repeated call returns the very same id. Fixed forever, like the engine's own namespace.
FAKE_ID_NAMESPACE = uuid.UUID("0c4f3e2a-7d1b-5a96-8e3f-2b6d9c1a4e75")


def derived_id(prefix: str, idempotency_key: str) -> str:
    """``<prefix>-<uuid5>``: the same key always gives the same id."""
    return f"{prefix}-{uuid.uuid5(FAKE_ID_NAMESPACE, f'{prefix}:{idempotency_key}')}"


class FakeSystem:
    """Base of the fake systems: counts calls and fails the first ``fail_first`` of them.

    A failure is a ``TransientAdapterError`` raised before the call has any effect, like a
    timeout on the way in: the kit retries it.
    """

    def __init__(self, *, fail_first: int = 0) -> None:
        if fail_first < 0:
            raise ValueError("fail_first must not be negative")
        self.calls = 0
        self._failures_left = fail_first

    def fail_next(self, count: int) -> None:
        """Make the next ``count`` calls fail transiently."""
        self._failures_left = count

    def _enter(self, operation: str) -> None:
        self.calls += 1
        if self._failures_left > 0:
            self._failures_left -= 1
            raise TransientAdapterError(f"{type(self).__name__}.{operation}: simulated outage")
