"""The engine's metrics, recorded through an OpenTelemetry ``Meter`` passed in.

Names are OpenTelemetry style (dotted, unit on the instrument); the Prometheus exporter
turns ``bus.sagas.started`` into ``bus_sagas_started_total`` and ``bus.saga.step.duration``
(unit ``s``) into ``bus_saga_step_duration_seconds``. Attributes are bounded sets only:
saga types, step names, outcomes, consumer names, dead-letter reasons; never ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation

STEP_OUTCOMES: Final[frozenset[str]] = frozenset(
    {"succeeded", "failed", "timed_out", "compensated", "compensation_failed"}
)

#: Seconds, from 1 ms (an in-process adapter) to 5 min (a slow SaaS call near its timeout).
STEP_DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

METER_NAME: Final = "bus_orchestrator"


class Metrics:
    """Every instrument the engine records, created once from a ``Meter``.

    Build it in the composition root and pass it down; ``Metrics.disabled()`` for tests and
    tools that do not export metrics. All methods are cheap and never raise on bad labels.
    """

    def __init__(self, meter: Meter) -> None:
        self._sagas_finished = {
            "completed": meter.create_counter(
                "bus.sagas.completed", unit="{saga}", description="Sagas that completed"
            ),
            "compensated": meter.create_counter(
                "bus.sagas.compensated",
                unit="{saga}",
                description="Sagas that were rolled back by compensation",
            ),
            "failed": meter.create_counter(
                "bus.sagas.failed",
                unit="{saga}",
                description="Sagas that ended failed: neither completed nor compensated",
            ),
        }
        self._sagas_started = meter.create_counter(
            "bus.sagas.started", unit="{saga}", description="Sagas started"
        )
        self._sagas_suspended = meter.create_counter(
            "bus.sagas.suspended",
            unit="{saga}",
            description="Sagas held for an operator by a step that failed (OnFailure.SUSPEND)",
        )
        self._repairs = meter.create_counter(
            "bus.sagas.repairs",
            unit="{repair}",
            description="Operators' repairs applied, by saga type and repair",
        )
        self._step_duration = meter.create_histogram(
            "bus.saga.step.duration",
            unit="s",
            description="Time from sending a step's command to its reply or timeout",
            explicit_bucket_boundaries_advisory=STEP_DURATION_BUCKETS,
        )
        self._dead_lettered = meter.create_counter(
            "bus.messages.dead_lettered",
            unit="{message}",
            description="Messages dead-lettered, by consumer and reason",
        )
        self._duplicates = meter.create_counter(
            "bus.inbox.duplicates",
            unit="{message}",
            description="Messages dropped because the inbox had already seen them",
        )
        # One tuple replaced as a whole: the exporter's callbacks run on another thread
        # (the HTTP server's), and a single attribute store is atomic.
        self._outbox: tuple[int, float] | None = None
        meter.create_observable_gauge(
            "bus.outbox.backlog",
            callbacks=[self._observe_backlog],
            unit="{message}",
            description="Outbox rows not yet confirmed by the broker",
        )
        meter.create_observable_gauge(
            "bus.outbox.oldest_age",
            callbacks=[self._observe_oldest_age],
            unit="s",
            description="Age of the oldest unconfirmed outbox row; 0 when the outbox is empty",
        )

    @classmethod
    def disabled(cls) -> Metrics:
        """Metrics that record nothing (the API's no-op meter)."""
        return cls(NoOpMeterProvider().get_meter(METER_NAME))

    def saga_started(self, saga_type: str) -> None:
        self._sagas_started.add(1, {"saga_type": saga_type})

    def saga_suspended(self, saga_type: str) -> None:
        self._sagas_suspended.add(1, {"saga_type": saga_type})

    def repaired(self, saga_type: str, repair: str) -> None:
        self._repairs.add(1, {"saga_type": saga_type, "repair": repair})

    def saga_finished(self, saga_type: str, status: str) -> None:
        """Count a saga that reached ``completed``, ``compensated`` or ``failed``.

        Any other status (a saga still running, say) is ignored.
        """
        counter = self._sagas_finished.get(str(status))
        if counter is not None:
            counter.add(1, {"saga_type": saga_type})

    def step_finished(self, saga_type: str, step: str, outcome: str, seconds: float) -> None:
        """Record how long a step took and how it ended.

        ``outcome`` is one of ``STEP_OUTCOMES`` (the terminal ``StepStatus`` values); any
        other value is ignored, so a stray string cannot grow the label set.
        """
        if outcome not in STEP_OUTCOMES:
            return
        # The SDK drops negative values with a warning; a wall-clock step back is not news.
        self._step_duration.record(
            max(seconds, 0.0),
            {"saga_type": saga_type, "step": step, "outcome": str(outcome)},
        )

    def dead_lettered(self, consumer: str, reason: str) -> None:
        """Count a dead-lettered message.

        ``consumer`` names the queue's reader (``coordinator``, ``adapter.payments``);
        ``reason`` is a ``DeadLetterReason`` value.
        """
        self._dead_lettered.add(1, {"consumer": consumer, "reason": str(reason)})

    def duplicate(self, consumer: str) -> None:
        """Count a redelivered message the inbox had already processed."""
        self._duplicates.add(1, {"consumer": consumer})

    def set_outbox_backlog(self, count: int, oldest_age_seconds: float | None) -> None:
        """Remember the outbox backlog for the gauges; the relay calls this periodically.

        Until the first call the gauges report nothing (unknown), not zero.
        """
        self._outbox = (count, oldest_age_seconds or 0.0)

    def _observe_backlog(self, _options: CallbackOptions) -> Iterable[Observation]:
        outbox = self._outbox
        return [] if outbox is None else [Observation(outbox[0])]

    def _observe_oldest_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        outbox = self._outbox
        return [] if outbox is None else [Observation(outbox[1])]
