"""Which asyncpg failures mean "Postgres is unavailable", in one place.

Connection-level failures become ``StoreUnavailableError`` (retryable); a login Postgres
refuses (an unknown role, a wrong password, no such database) ``StoreRefusedError``, which
waiting will not fix. Everything else
(constraint violations, bad SQL) passes through untouched: those are the caller's business
or bugs, and retrying would not help.
"""

from __future__ import annotations

from types import TracebackType

import asyncpg

from bus_orchestrator.errors import StoreRefusedError, StoreUnavailableError

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (command_timeout) is an OSError too
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08, incl. connection gone
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.QueryCanceledError,  # statement_timeout, or cancelled by an operator
)


class _DriverErrors:
    """Turns connection-level driver failures into ``StoreUnavailableError``.

    Everything else (constraint violations, bad SQL) passes through untouched: those are
    the store's own business or bugs, and retrying would not help.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
            raise StoreRefusedError("database", str(exc)) from exc
        if isinstance(
            exc,
            asyncpg.exceptions.InvalidAuthorizationSpecificationError
            | asyncpg.exceptions.InvalidPasswordError,
        ):
            raise StoreRefusedError("credentials", str(exc)) from exc
        # asyncpg reports a closed pool or connection as a bare InterfaceError.
        closed = isinstance(exc, asyncpg.exceptions.InterfaceError) and (
            "closed" in str(exc) or "closing" in str(exc)
        )
        # A pooled connection that got the server's FATAL "unexpected postmaster exit"
        # while idle is left consuming that error until its socket's end is read; used in
        # between, it fails with "cannot switch to state N; another operation (2) is in
        # progress". Its server is gone: the next try gets a fresh connection.
        broken = isinstance(exc, asyncpg.exceptions.InternalClientError) and (
            "another operation" in str(exc)
        )
        if closed or broken or isinstance(exc, _UNAVAILABLE):
            raise StoreUnavailableError(f"Postgres unavailable: {exc!r}") from exc


postgres_errors = _DriverErrors()
"""``with postgres_errors:`` translates connection-level driver failures."""
