"""Granting entity locks after the commits that queue sagas for their keys or release them.

A saga with entity locks is queued for its keys by the commit that starts it and releases
them with the commit that ends it (the store does both in those very statements). After
such a commit the coordinator asks the store to grant the keys it touched, and tells each
saga granted (``LocksGranted``) through the same decide and commit; the lock sweep repairs
what a crash in between left undone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.errors import BusOrchestratorError
from bus_orchestrator.ports import LockGrant, SagaStore

log = logging.getLogger(__name__)

Tell = Callable[[LockGrant], Awaitable[int]]
"""Delivers ``LocksGranted`` to a granted saga: 1 when told, 0 when not this process's."""


class LockGrants:
    """The lock keys this process's commits touched, granted as soon as they are done."""

    def __init__(self, store: SagaStore, tell: Tell) -> None:
        self._store = store
        self._tell = tell
        self._keys: set[str] = set()

    def note(self, before: SagaInstance | None, after: SagaInstance | None) -> None:
        """Note the keys a committed change queued the saga for, or released."""
        if after is None or not after.locks:
            return
        queued = before is None and after.waiting_for_locks
        released = after.status.terminal and (before is None or not before.status.terminal)
        if queued or released:
            self._keys.update(after.locks)

    async def grant(self) -> int:
        """Grant the noted keys and tell each saga granted; how many were told. Never
        raises: what fails here, the lock sweep repairs (the commits are done, and the
        message that caused them is settled)."""
        told = 0
        try:
            while self._keys:
                keys, self._keys = sorted(self._keys), set()
                for grant in await self._store.grant_locks(keys):
                    told += await self._tell(grant)
        except Exception as exc:
            log.warning(
                "granting lock keys failed, the lock sweep will: %s",
                exc,
                exc_info=not isinstance(exc, BusOrchestratorError),
            )
        return told

    async def sweep(self, limit: int = 200) -> int:
        """Repair what a crash between a commit and its grant left: grant the keys waiting
        sagas could take now, and tell sagas granted but not told; how many were told."""
        self._keys.update(await self._store.grantable_keys(limit))
        told = await self.grant()
        for grant in await self._store.untold_grants(limit):
            told += await self._tell(grant)
        return told
