"""The adapter kit's delivery handling, on the in-memory command log and a fake publisher."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from bus_orchestrator.adapters import (
    Adapter,
    CommandContext,
    CommandProcessor,
    CommandRecord,
    InMemoryCommandLog,
    Recorded,
    RetryPolicy,
    reply_id_for,
)
from bus_orchestrator.adapters.command_log import reply_document, reply_from_document
from bus_orchestrator.core.messages import Command, ContractRegistry, Event, Reply
from bus_orchestrator.errors import (
    BrokerUnavailableError,
    DeadLetterReason,
    DefinitionError,
    PermanentAdapterError,
    StoreUnavailableError,
    TransientAdapterError,
)
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.transport.codec import RawMessage, encode
from bus_orchestrator.transport.consumer import DeadLetter, Verdict

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REPLIES = "p.bus.replies"


class Ping(Command):
    message_type = "test.ping.v1"

    text: str


class Pong(Reply):
    message_type = "test.pong.v1"

    text: str


class Shout(Command):
    message_type = "test.shout.v1"

    text: str


class Noticed(Event):
    message_type = "test.noticed.v1"


REGISTRY = ContractRegistry([Ping, Pong, Shout, Noticed])


@dataclass
class FakePublisher:
    """``ports.Publisher`` that records what it is given; fails while ``down``."""

    published: list[OutboxMessage] = field(default_factory=list)
    down: bool = False

    async def publish(self, message: OutboxMessage) -> None:
        if self.down:
            raise BrokerUnavailableError("broker down")
        self.published.append(message)


@dataclass
class SleepRecorder:
    waits: list[float] = field(default_factory=list)
    then: Callable[[], None] | None = None
    """Called after the first wait: the outage ends, or the adapter is stopped."""

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.then is not None:
            self.then()
            self.then = None


@dataclass
class ScriptedHandler:
    """Raises the queued errors in turn, then answers ``Pong``; counts its calls."""

    errors: list[Exception] = field(default_factory=list)
    calls: list[tuple[Ping, CommandContext]] = field(default_factory=list)

    async def __call__(self, command: Ping, ctx: CommandContext) -> Pong:
        self.calls.append((command, ctx))
        if self.errors:
            raise self.errors.pop(0)
        return Pong(text=command.text.upper())


FAST = RetryPolicy(attempts=3, initial_backoff=0.5, max_backoff=2.0, jitter=0.1, max_total=60)


@dataclass
class Kit:
    handler: ScriptedHandler
    log: InMemoryCommandLog
    publisher: FakePublisher
    sleep: SleepRecorder
    processor: CommandProcessor


def make_kit(handler: ScriptedHandler | None = None, log: InMemoryCommandLog | None = None) -> Kit:
    handler = handler or ScriptedHandler()
    adapter = Adapter("echo", REGISTRY, retry=FAST)
    adapter.handles(Ping)(handler)
    log = log or InMemoryCommandLog()
    publisher, sleep = FakePublisher(), SleepRecorder()
    processor = CommandProcessor(
        adapter,
        log,
        publisher,
        replies_exchange=REPLIES,
        max_message_bytes=65536,
        clock=lambda: NOW,
        store_backoff=0.25,
        sleep=sleep,
    )
    return Kit(handler, log, publisher, sleep, processor)


def delivery(
    payload: Command | Reply | Event | None = None,
    *,
    command_id: str | None = None,
    correlation_id: str | None = "order-1",
) -> RawMessage:
    message = encode(
        message_id=command_id or str(uuid.uuid4()),
        payload=payload or Ping(text="hello"),
        exchange="p.bus.commands",
        source="urn:test",
        time=NOW,
        correlation_id=correlation_id,
        causation_id="cause-0",
    )
    return RawMessage(
        body=message.body,
        headers=message.headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.message_type,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )


async def test_a_command_is_answered_with_a_confirmed_reply_tied_to_it() -> None:
    kit = make_kit()

    verdict = await kit.processor.handle(delivery(command_id="cmd-1"))

    assert verdict is Verdict.ACK
    [reply] = kit.publisher.published
    assert reply.message_id == reply_id_for("cmd-1")
    assert reply.message_type == "test.pong.v1"
    assert (reply.exchange, reply.routing_key) == (REPLIES, "test.pong.v1")
    assert reply.correlation_id == "order-1"
    assert reply.headers["ce-correlationid"] == "order-1"
    assert reply.headers["ce-causationid"] == "cmd-1"
    assert reply.headers["ce-source"] == "urn:bus-orchestrator:adapter:echo"
    assert reply.body == b'{"text":"HELLO"}'
    assert kit.log.records[("echo", "cmd-1")] == CommandRecord(
        "echo", "cmd-1", "test.ping.v1", "order-1", reply
    )


async def test_the_handler_gets_the_command_and_its_context() -> None:
    kit = make_kit()

    await kit.processor.handle(delivery(Ping(text="x"), command_id="cmd-7"))

    [(command, ctx)] = kit.handler.calls
    assert command == Ping(text="x")
    assert ctx == CommandContext(
        adapter="echo",
        command_id="cmd-7",
        command_type="test.ping.v1",
        correlation_id="order-1",
        causation_id="cause-0",
        received_at=NOW,
    )
    assert ctx.idempotency_key == "cmd-7"


async def test_a_command_without_correlation_gets_a_reply_without_one() -> None:
    kit = make_kit()

    await kit.processor.handle(delivery(command_id="cmd-1", correlation_id=None))

    [reply] = kit.publisher.published
    assert reply.correlation_id is None
    assert "ce-correlationid" not in reply.headers


async def test_a_duplicate_command_calls_the_handler_once_and_repeats_the_same_reply() -> None:
    kit = make_kit()
    command = delivery(command_id="cmd-1")

    verdicts = [await kit.processor.handle(command) for _ in range(2)]

    assert verdicts == [Verdict.ACK, Verdict.ACK]
    assert len(kit.handler.calls) == 1
    first, second = kit.publisher.published
    assert first.message_id == second.message_id == reply_id_for("cmd-1")
    assert first == second
    assert len(kit.log.records) == 1


async def test_reply_ids_differ_between_commands() -> None:
    kit = make_kit()

    await kit.processor.handle(delivery(command_id="cmd-1"))
    await kit.processor.handle(delivery(command_id="cmd-2"))

    assert len({reply.message_id for reply in kit.publisher.published}) == 2


async def test_a_transient_error_is_retried_with_backoff_until_the_call_succeeds() -> None:
    handler = ScriptedHandler(errors=[TransientAdapterError("busy"), TransientAdapterError("busy")])
    kit = make_kit(handler)

    verdict = await kit.processor.handle(delivery(command_id="cmd-1"))

    assert verdict is Verdict.ACK
    assert len(handler.calls) == 3
    assert len(kit.sleep.waits) == 2
    assert 0.5 <= kit.sleep.waits[0] <= 0.6  # initial backoff plus jitter
    assert 1.0 <= kit.sleep.waits[1] <= 1.1  # doubled
    assert len(kit.publisher.published) == 1


async def test_a_transient_error_that_outlasts_the_retries_requeues_the_command() -> None:
    handler = ScriptedHandler(errors=[TransientAdapterError("down")] * 10)
    kit = make_kit(handler)

    verdict = await kit.processor.handle(delivery(command_id="cmd-1"))

    assert verdict is Verdict.REQUEUE
    assert len(handler.calls) == FAST.attempts
    assert kit.publisher.published == []
    assert kit.log.records == {}


async def test_retrying_stops_before_the_total_time_is_exceeded() -> None:
    handler = ScriptedHandler(errors=[TransientAdapterError("down")] * 10)
    adapter = Adapter(
        "echo",
        REGISTRY,
        retry=RetryPolicy(attempts=10, initial_backoff=1, max_backoff=1, jitter=0, max_total=0.5),
    )
    adapter.handles(Ping)(handler)
    sleep = SleepRecorder()
    processor = CommandProcessor(
        adapter,
        InMemoryCommandLog(),
        FakePublisher(),
        replies_exchange=REPLIES,
        max_message_bytes=65536,
        sleep=sleep,
    )

    assert await processor.handle(delivery()) is Verdict.REQUEUE
    assert len(handler.calls) == 1  # a 1 s wait would pass the 0.5 s budget
    assert sleep.waits == []


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (PermanentAdapterError("card stolen"), "PermanentAdapterError: card stolen"),
        (ValueError("bug"), "ValueError: bug"),
    ],
)
async def test_a_handler_error_dead_letters_the_command(error: Exception, detail: str) -> None:
    handler = ScriptedHandler(errors=[error])
    kit = make_kit(handler)

    verdict = await kit.processor.handle(delivery(command_id="cmd-1"))

    assert verdict == DeadLetter(DeadLetterReason.HANDLER_ERROR, detail)
    assert len(handler.calls) == 1  # not retried
    assert kit.publisher.published == []
    assert kit.log.records == {}


async def test_a_handler_that_returns_no_reply_dead_letters_the_command() -> None:
    adapter = Adapter("echo", REGISTRY)

    async def sloppy(command: Ping, ctx: CommandContext) -> Pong:
        return "done"  # type: ignore[return-value]

    adapter.handles(Ping)(sloppy)
    publisher = FakePublisher()
    processor = CommandProcessor(
        adapter,
        InMemoryCommandLog(),
        publisher,
        replies_exchange=REPLIES,
        max_message_bytes=65536,
    )

    verdict = await processor.handle(delivery())

    assert isinstance(verdict, DeadLetter)
    assert verdict.reason is DeadLetterReason.HANDLER_ERROR
    assert "returned str, not a Reply" in verdict.detail
    assert publisher.published == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (RawMessage(body=b"not json", headers={}), DeadLetterReason.NOT_CLOUDEVENT),
        (
            RawMessage(
                body=b"{oops",
                headers={
                    "ce-id": "1",
                    "ce-source": "s",
                    "ce-specversion": "1.0",
                    "ce-type": "test.ping.v1",
                },
            ),
            DeadLetterReason.MALFORMED,
        ),
        (
            RawMessage(body=b"{}", headers={"ce-id": "1", "ce-type": "test.ping.v1"}),
            DeadLetterReason.MISSING_ATTRIBUTES,
        ),
        (
            RawMessage(
                body=b'{"text": 5}',
                headers={
                    "ce-id": "1",
                    "ce-source": "s",
                    "ce-specversion": "1.0",
                    "ce-type": "test.ping.v1",
                },
            ),
            DeadLetterReason.SCHEMA,
        ),
    ],
)
async def test_bad_input_is_dead_lettered_with_the_codec_reason(
    raw: RawMessage, reason: DeadLetterReason
) -> None:
    kit = make_kit()

    verdict = await kit.processor.handle(raw)

    assert isinstance(verdict, DeadLetter)
    assert verdict.reason is reason
    assert kit.handler.calls == []
    assert kit.publisher.published == []


@pytest.mark.parametrize(
    "payload",
    [
        Shout(text="registered, but not handled here"),
        Pong(text="a reply"),
        Noticed(),
    ],
)
async def test_a_type_the_adapter_does_not_handle_is_dead_lettered(
    payload: Command | Reply | Event,
) -> None:
    kit = make_kit()

    verdict = await kit.processor.handle(delivery(payload))

    assert isinstance(verdict, DeadLetter)
    assert verdict.reason is DeadLetterReason.UNKNOWN_TYPE
    assert payload.message_type in verdict.detail
    assert kit.handler.calls == []


async def test_a_type_outside_the_registry_is_dead_lettered() -> None:
    kit = make_kit()
    raw = delivery()
    headers = {**raw.headers, "ce-type": "test.unheard_of.v1"}

    verdict = await kit.processor.handle(RawMessage(body=raw.body, headers=headers))

    assert isinstance(verdict, DeadLetter)
    assert verdict.reason is DeadLetterReason.UNKNOWN_TYPE


class DownLog(InMemoryCommandLog):
    """A command log whose database is unreachable (for lookups or for writes) while down."""

    def __init__(self, *, find_fails: bool) -> None:
        super().__init__()
        self.find_fails = find_fails
        self.down = True

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        if self.down and self.find_fails:
            raise StoreUnavailableError("connection refused")
        return await super().find(adapter, command_id)

    async def record(self, record: CommandRecord) -> Recorded:
        if self.down:
            raise StoreUnavailableError("connection refused")
        return await super().record(record)


@pytest.mark.parametrize(("find_fails", "handler_calls"), [(True, 1), (False, 2)])
async def test_an_unreachable_log_holds_the_command_until_it_is_back(
    find_fails: bool, handler_calls: int
) -> None:
    log = DownLog(find_fails=find_fails)
    kit = make_kit(log=log)
    kit.sleep.then = lambda: setattr(log, "down", False)

    assert await kit.processor.handle(delivery()) is Verdict.ACK
    assert kit.sleep.waits == [0.25]
    # a handler cut off before its result was recorded runs again, with the same key
    assert len(kit.handler.calls) == handler_calls
    assert len({ctx.idempotency_key for _, ctx in kit.handler.calls}) == 1
    assert len(kit.publisher.published) == 1


async def test_stopping_during_an_outage_requeues_the_command_in_hand() -> None:
    kit = make_kit(log=DownLog(find_fails=True))
    kit.sleep.then = kit.processor.stop

    assert await kit.processor.handle(delivery()) is Verdict.REQUEUE
    assert kit.sleep.waits == [0.25]
    assert kit.handler.calls == [] and kit.publisher.published == []


async def test_an_unconfirmed_reply_is_held_and_the_stored_reply_published_once_back() -> None:
    kit = make_kit()
    command = delivery(command_id="cmd-1")
    kit.publisher.down = True
    kit.sleep.then = lambda: setattr(kit.publisher, "down", False)

    assert await kit.processor.handle(command) is Verdict.ACK
    assert kit.sleep.waits == [0.25]
    assert len(kit.handler.calls) == 1
    [reply] = kit.publisher.published
    assert reply.message_id == reply_id_for("cmd-1")


class LateLog(InMemoryCommandLog):
    """A log where a concurrent delivery records the command between find and record."""

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        return None


async def test_when_a_concurrent_delivery_recorded_first_its_reply_is_published() -> None:
    log = LateLog()
    kit = make_kit(log=log)
    command = delivery(command_id="cmd-1")
    await kit.processor.handle(command)
    [first] = kit.publisher.published
    # The second delivery's reply differs in its encoded time only.
    kit.processor = CommandProcessor(
        kit.processor.adapter,
        log,
        kit.publisher,
        replies_exchange=REPLIES,
        max_message_bytes=65536,
        clock=lambda: datetime(2030, 1, 1, tzinfo=UTC),
        sleep=kit.sleep,
    )

    assert await kit.processor.handle(command) is Verdict.ACK

    assert len(kit.handler.calls) == 2  # both deliveries got past the lookup
    assert kit.publisher.published == [first, first]


def test_handlers_are_declared_once_per_registered_command_type() -> None:
    adapter = Adapter("echo", REGISTRY)
    handler = ScriptedHandler()
    adapter.handles(Ping)(handler)

    with pytest.raises(DefinitionError, match="twice"):
        adapter.handles(Ping)(handler)
    with pytest.raises(DefinitionError, match="not a command"):
        adapter.register(Pong, handler)  # type: ignore[type-var]

    class Unregistered(Command):
        message_type = "test.unregistered.v1"

    with pytest.raises(DefinitionError, match="registry"):
        adapter.handles(Unregistered)(handler)  # type: ignore[arg-type]
    assert adapter.command_types == ("test.ping.v1",)


@pytest.mark.parametrize("name", ["", "has space", "dots.not.allowed"])
def test_adapter_names_are_plain(name: str) -> None:
    with pytest.raises(DefinitionError):
        Adapter(name, REGISTRY)


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"initial_backoff": -1}, {"max_total": -0.1}])
def test_retry_policies_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [b'{"a": "\\u00e9"}', b"\xff\x00binary", b'{"a": "\x00"}'])
def test_a_stored_reply_is_restored_byte_for_byte(body: bytes) -> None:
    message = OutboxMessage(
        message_id="r1",
        message_type="test.pong.v1",
        exchange=REPLIES,
        routing_key="test.pong.v1",
        body=body,
        content_type="application/json",
        headers={"ce-id": "r1"},
        correlation_id=None,
    )

    document = reply_document(message)

    assert reply_from_document(document) == message
    if document["body_encoding"] == "base64":
        assert base64.b64decode(document["body"]) == body
