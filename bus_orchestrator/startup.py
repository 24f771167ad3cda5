"""Waiting for Postgres and RabbitMQ when a long-running process starts.

A coordinator or adapters process started while a service is down (or losing it during
start-up) waits for it, one log line per attempt saying what it waits for and why, with
exponential backoff, instead of exiting with a stack trace::

    waiting for Postgres at 127.0.0.1:5432: connection refused; retrying in 2.0s

Only errors that say so (``retryable``) are waited out; anything else ends the start-up.
Setting the ``stop`` event (SIGTERM) ends the wait at once. One-shot commands (``migrate``,
``publish``, ``sagas ...``) do not wait: they fail fast with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import unquote, urlsplit

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random,
)

from bus_orchestrator.config import Settings
from bus_orchestrator.errors import (
    BrokerRefusedError,
    BrokerUnavailableError,
    BusOrchestratorError,
    StoreRefusedError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

FIRST_WAIT = 0.5
MAX_WAIT = 30.0
NOISY_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection")
"""Loggers that report each failed connection attempt themselves: one line is enough."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, BusOrchestratorError) and exc.retryable


def waiting_for(exc: BaseException, settings: Settings) -> str:
    """``Postgres at 127.0.0.1:5432: connection refused``: what is awaited, where, and why."""
    if isinstance(exc, StoreUnavailableError):
        service, url, port = "Postgres", settings.database_url, 5432
    elif isinstance(exc, BrokerUnavailableError):
        service, url, port = "RabbitMQ", settings.amqp_url, 5672
    else:
        return f"{type(exc).__name__}: {exc}"
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname or '127.0.0.1'}:{parts.port or port}"
    except ValueError:
        where = "?"
    return f"{service} at {where}: {_why(exc)}"


def _why(exc: BaseException) -> str:
    """The most telling cause in ``exc``'s chain, in a few words."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc.__cause__
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__
    for link in chain:
        for kind, text in _KNOWN:
            if isinstance(link, kind):
                return text
        if isinstance(link, OSError) and errno.ECONNREFUSED in (link.errno, *link.args[:1]):
            return "connection refused"  # aiormq's AMQPConnectionError(111, ...)
    told = [link for link in chain if not isinstance(link, asyncio.CancelledError)]
    root = told[-1] if told else exc
    text = " ".join(str(root).split()) or type(root).__name__
    return text if len(text) <= 200 else text[:197] + "..."


_KNOWN: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (ConnectionAbortedError, "connection aborted"),
    (TimeoutError, "timed out"),
)


@contextlib.contextmanager
def quiet(names: tuple[str, ...] = NOISY_LOGGERS) -> Iterator[None]:
    """Silence these loggers (they report each failed connection attempt) meanwhile."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def until_started(
    start: Callable[[], Awaitable[None]],
    undo: Callable[[], Awaitable[None]],
    *,
    settings: Settings,
    stop: asyncio.Event,
    first_wait: float = FIRST_WAIT,
    max_wait: float = MAX_WAIT,
) -> bool:
    """Run ``start`` until it succeeds (``True``) or ``stop`` is set (``False``).

    When ``start`` raises, ``undo`` releases whatever it had opened. A retryable error
    (Postgres or RabbitMQ unavailable) is logged as one line and ``start`` runs again after
    a backoff (``first_wait`` doubling up to ``max_wait``, plus a little jitter); any other
    error is raised.
    """

    async def nap(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def say(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if exc is not None:
            log.warning("waiting for %s; retrying in %.1fs", waiting_for(exc, settings), delay)

    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        wait=wait_exponential(multiplier=first_wait, min=first_wait, max=max_wait)
        + wait_random(0, first_wait / 5),
        sleep=nap,
        before_sleep=say,
        reraise=True,
    )
    with quiet():
        async for attempt in retrying:
            with attempt:
                if stop.is_set() or not await _attempt(start, undo, stop):
                    return False
    return True


async def _attempt(
    start: Callable[[], Awaitable[None]], undo: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> bool:
    """One run of ``start``: ``False`` if ``stop`` came first (then it is cancelled and undone).

    A connection attempt can hang for a TCP timeout (a firewalled port); SIGTERM must not
    wait for it.
    """
    task = asyncio.ensure_future(start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await undo()
        return False
    try:
        task.result()
    except BaseException:
        await undo()
        raise
    return True


# -- one line for an operator: what is wrong, which setting, what to do ------------------

START_HINTS = {
    "RabbitMQ": "rabbitmq-server -detached",
    "Postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
}


def _where(url: str, port: int) -> tuple[str, str, str]:
    """``host:port``, the user and the path (database or vhost) of a service URL."""
    try:
        parts = urlsplit(url)
        return (
            f"{parts.hostname or '127.0.0.1'}:{parts.port or port}",
            parts.username or "",
            unquote(parts.path[1:]) if parts.path.startswith("/") else parts.path,
        )
    except ValueError:
        return "?", "", ""


def _database_setting(settings: Settings) -> str:
    if settings.adapters_database_url is not None:
        return "BUS_DATABASE_URL (or BUS_ADAPTERS_DATABASE_URL)"
    return "BUS_DATABASE_URL"


def service_error_line(exc: BaseException, settings: Settings) -> str | None:
    """One line naming what is wrong, the setting and the fix, for a service that cannot be
    used as configured; ``None`` when ``exc`` is not about connecting to one."""
    database = _database_setting(settings)
    if isinstance(exc, StoreRefusedError):
        where, user, name = _where(settings.database_url, 5432)
        if exc.problem == "database":
            return (
                f"Postgres at {where} has no database {name!r}: create it (createdb {name}) "
                f"or name an existing one in {database}"
            )
        return (
            f"Postgres at {where} refused user {user!r} ({exc.detail}): "
            f"wrong user or password in {database}"
        )
    if isinstance(exc, BrokerRefusedError):
        where, user, vhost = _where(settings.amqp_url, 5672)
        if exc.problem == "vhost":
            return (
                f"RabbitMQ at {where} refused vhost {vhost or '/'!r} to user {user!r}: it does "
                f"not exist or the user may not use it; create it (rabbitmqctl add_vhost "
                f"{vhost}) and grant access, or name another one in BUS_AMQP_URL"
            )
        return f"RabbitMQ at {where} refused the login: wrong user or password in BUS_AMQP_URL"
    if isinstance(exc, StoreUnavailableError):
        where, _, _ = _where(settings.database_url, 5432)
        return (
            f"Postgres is not reachable at {where} ({_why(exc)}): start it "
            f"({START_HINTS['Postgres']}) or point {database} at one"
        )
    if isinstance(exc, BrokerUnavailableError):
        where, _, _ = _where(settings.amqp_url, 5672)
        return (
            f"RabbitMQ is not reachable at {where} ({_why(exc)}): start it "
            f"({START_HINTS['RabbitMQ']}) or point BUS_AMQP_URL at one"
        )
    return None
