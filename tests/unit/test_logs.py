"""Log lines: JSON and text formats, trace and saga context, and URL redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from bus_orchestrator.telemetry.logs import (
    bind_saga,
    configure_logging,
    redact_url,
    saga_id_var,
)

log = logging.getLogger("tests.telemetry")


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield Captured()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def tracer_provider() -> Iterator[TracerProvider]:
    provider = TracerProvider(shutdown_on_exit=False)
    yield provider
    provider.shutdown()


def test_json_lines_carry_the_basics(captured: Captured) -> None:
    configure_logging("info", "json", stream=captured.stream)
    log.info("charged %s for %d", "order-1", 42)
    log.debug("below the level")

    [record] = captured.records()
    assert record["level"] == "INFO"
    assert record["logger"] == "tests.telemetry"
    assert record["message"] == "charged order-1 for 42"
    assert record["time"].endswith("Z")
    assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0)
    for absent in ("trace_id", "span_id", "saga_id", "exc_info"):
        assert absent not in record


def test_json_lines_carry_the_active_span(
    captured: Captured, tracer_provider: TracerProvider
) -> None:
    configure_logging("INFO", "json", stream=captured.stream)
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        log.info("inside")
        ctx = span.get_span_context()
    log.info("outside")

    inside, outside = captured.records()
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in outside
    assert "span_id" not in outside


def test_json_lines_carry_the_bound_saga(captured: Captured) -> None:
    configure_logging("INFO", "json", stream=captured.stream)
    with bind_saga("saga-1"):
        log.info("outer")
        with bind_saga("saga-2"):
            log.info("inner")
        log.info("outer again")
    log.info("unbound")

    assert [r.get("saga_id") for r in captured.records()] == [
        "saga-1",
        "saga-2",
        "saga-1",
        None,
    ]
    assert "saga_id" not in captured.records()[-1]
    assert saga_id_var.get() is None


async def test_bound_saga_stays_in_its_task(captured: Captured) -> None:
    configure_logging("INFO", "json", stream=captured.stream)
    first_bound = asyncio.Event()
    second_logged = asyncio.Event()

    async def first() -> None:
        with bind_saga("saga-a"):
            first_bound.set()
            await second_logged.wait()
            log.info("first")

    async def second() -> None:
        await first_bound.wait()
        log.info("second")
        second_logged.set()

    await asyncio.gather(first(), second())
    by_message = {r["message"]: r.get("saga_id") for r in captured.records()}
    assert by_message == {"first": "saga-a", "second": None}


def test_json_lines_serialize_exceptions_and_extras(captured: Captured) -> None:
    configure_logging("INFO", "json", stream=captured.stream)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"attempt": 3, "when": datetime(2024, 1, 2), "tags": ["a"]})

    [record] = captured.records()
    assert record["level"] == "ERROR"
    assert "Traceback" in record["exc_info"]
    assert "ValueError: boom" in record["exc_info"]
    assert record["attempt"] == 3
    assert record["when"] == "2024-01-02 00:00:00"  # default=str
    assert record["tags"] == ["a"]


def test_extra_cannot_replace_the_core_fields(captured: Captured) -> None:
    configure_logging("INFO", "json", stream=captured.stream)
    log.info("hello", extra={"level": "FAKE", "saga_id": "from-extra"})
    with bind_saga("from-context"):
        log.info("again", extra={"saga_id": "explicit"})

    first, second = captured.records()
    assert first["level"] == "INFO"
    assert first["saga_id"] == "from-extra"
    assert second["saga_id"] == "explicit"


def test_text_lines_append_trace_and_saga(
    captured: Captured, tracer_provider: TracerProvider
) -> None:
    configure_logging("INFO", "text", stream=captured.stream)
    log.info("plain")
    with tracer_provider.get_tracer("test").start_as_current_span("work") as span:
        with bind_saga("saga-1"):
            log.warning("in context")
        trace_id = f"{span.get_span_context().trace_id:032x}"

    plain, in_context = captured.lines()
    assert plain.endswith(" INFO tests.telemetry: plain")
    assert "trace_id=" not in plain
    assert "saga_id=" not in plain
    assert in_context.endswith(
        f" WARNING tests.telemetry: in context trace_id={trace_id} saga_id=saga-1"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", in_context.split(" ", 1)[0])


def test_text_lines_include_the_traceback(captured: Captured) -> None:
    configure_logging("INFO", "text", stream=captured.stream)
    with bind_saga("saga-1"):
        try:
            raise RuntimeError("kaput")
        except RuntimeError:
            log.exception("failed")

    lines = captured.lines()
    assert lines[0].endswith("failed saga_id=saga-1")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: kaput"


def test_configure_twice_keeps_one_handler(captured: Captured) -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    configure_logging("INFO", "json", stream=captured.stream)
    configure_logging("DEBUG", "json", stream=captured.stream)
    assert len(root.handlers) == before + 1
    assert root.level == logging.DEBUG
    log.debug("once")
    assert [r["message"] for r in captured.records()] == ["once"]


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "yaml")])
def test_configure_rejects_unknown_values(level: str, fmt: str, captured: Captured) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(level, fmt)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqp://guest@127.0.0.1:5672/", "amqp://guest@127.0.0.1:5672/"),
        ("amqp://127.0.0.1/", "amqp://127.0.0.1/"),
        (
            "amqps://svc:s3cr%40t@mq.example.com:5671/%2Fprod?heartbeat=30&connection_timeout=5",
            "amqps://svc:***@mq.example.com:5671/%2Fprod?heartbeat=30&connection_timeout=5",
        ),
        ("postgresql://root@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"),
        (
            "postgresql://app:p@ss:word@db:5432/app?sslmode=require",
            "postgresql://app:***@db:5432/app?sslmode=require",
        ),
        (
            "postgresql://app@db/app?sslmode=require&password=hunter2",
            "postgresql://app@db/app?sslmode=require&password=***",
        ),
        ("postgresql://app:@db/app", "postgresql://app:***@db/app"),
        ("postgresql://u:pw@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("http://[::1", "***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_debug_never_reaches_the_amqp_client_whose_debug_lines_carry_message_bodies(
    captured: Captured,
) -> None:
    configure_logging("debug", "json", stream=captured.stream)
    logging.getLogger("aiormq.connection").debug("frame body: secret")
    logging.getLogger("bus_orchestrator.runtime").debug("engine detail")
    assert [r["message"] for r in captured.records()] == ["engine detail"]
