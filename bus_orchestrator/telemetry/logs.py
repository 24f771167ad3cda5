"""Log lines that carry the trace and the saga they belong to, as text or JSON.

``configure_logging`` is called once, by the composition root. Code that works on a saga
wraps the work in ``bind_saga(saga_id)``; every line logged inside then names the saga, and
lines logged inside an OpenTelemetry span name its trace and span.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO
from urllib.parse import urlsplit

from opentelemetry import trace

LogFormat = Literal["text", "json"]

saga_id_var: ContextVar[str | None] = ContextVar("bus_saga_id", default=None)

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_REDACTED: Final = "***"
_CONTEXT_FIELDS: Final = ("trace_id", "span_id", "saga_id")
# Everything a LogRecord carries by itself; whatever else is on a record came from extra=.
_RECORD_FIELDS: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", *_CONTEXT_FIELDS}
_QUERY_PASSWORD: Final = re.compile(r"(?i)(^|&)(password=)[^&]*")


@contextmanager
def bind_saga(saga_id: str) -> Iterator[None]:
    """Name ``saga_id`` on every log line written inside the block (this task/thread only)."""
    token = saga_id_var.set(saga_id)
    try:
        yield
    finally:
        saga_id_var.reset(token)


def redact_url(url: str) -> str:
    """``url`` with its password hidden, fit for a log line.

    ``amqp://guest:guest@host/vh`` becomes ``amqp://guest:***@host/vh``; a ``password=``
    query parameter (libpq accepts one) is hidden too. A URL without a password comes back
    unchanged; one that cannot be parsed comes back as ``***``, never as itself.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _REDACTED
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:{_REDACTED}@{hosts}"
    query = _QUERY_PASSWORD.sub(rf"\g<1>\g<2>{_REDACTED}", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


WIRE_LOGGERS = ("aiormq", "aio_pika", "pamqp")
"""Libraries whose DEBUG lines carry message bodies."""


def configure_logging(level: str, fmt: str, *, stream: TextIO | None = None) -> None:
    """Send the root logger's lines to ``stream`` (stderr) at ``level`` (like ``"info"``).

    ``fmt`` is ``"text"`` or ``"json"`` (one object per line). Calling it again replaces
    the handler this function installed; handlers installed by others are left alone.
    Raises ``ValueError`` for an unknown level or format.
    """
    levelno = logging.getLevelNamesMapping().get(level.upper())
    if levelno is None:
        raise ValueError(f"unknown log level: {level!r}")
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter()
    else:
        raise ValueError(f"unknown log format: {fmt!r} (expected 'text' or 'json')")

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BusHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _BusHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(levelno)
    # The AMQP client logs whole frames at DEBUG, message bodies included: message content
    # (secrets too) must not reach the logs, so its loggers never go below INFO.
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(max(levelno, logging.INFO))


class _BusHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``configure_logging`` owns, so a second call replaces it."""


class ContextFilter(logging.Filter):
    """Stamp ``trace_id``, ``span_id`` and ``saga_id`` on each record, where it is emitted.

    A filter rather than the formatter, so the values are read in the emitting task even
    if formatting later happens elsewhere (a ``QueueHandler``). Values passed with
    ``extra=`` win.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            if not hasattr(record, "trace_id"):
                record.trace_id = trace.format_trace_id(ctx.trace_id)
            if not hasattr(record, "span_id"):
                record.span_id = trace.format_span_id(ctx.span_id)
        if not hasattr(record, "saga_id"):
            saga_id = saga_id_var.get()
            if saga_id is not None:
                record.saga_id = saga_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _gmtime(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


class TextFormatter(logging.Formatter):
    """The usual line in UTC, plus `` trace_id=... saga_id=...`` when they are known."""

    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self.converter = _gmtime

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (the base's name)
        line = super().formatMessage(record)
        for field in ("trace_id", "saga_id"):
            value = getattr(record, field, None)
            if value is not None:
                line += f" {field}={value}"
        return line
