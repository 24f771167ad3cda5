"""Metrics: every method records the data points it promises, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)

from bus_orchestrator.core.state import SagaStatus, StepStatus
from bus_orchestrator.errors import DeadLetterReason
from bus_orchestrator.telemetry.metrics import STEP_DURATION_BUCKETS, Metrics

Labels = frozenset[tuple[str, Any]]


class Recorded:
    """Metrics over an SDK provider whose data the test reads back."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.metrics = Metrics(self.provider.get_meter("test"))

    def collect(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    recorded = Recorded()
    yield recorded
    recorded.provider.shutdown()


def labels(**attributes: str) -> Labels:
    return frozenset(attributes.items())


def sums(metric: Metric) -> dict[Labels, float]:
    assert isinstance(metric.data, Sum)
    assert metric.data.is_monotonic
    found: dict[Labels, float] = {}
    for point in metric.data.data_points:
        assert isinstance(point, NumberDataPoint)
        found[frozenset((point.attributes or {}).items())] = point.value
    return found


def gauge_values(metric: Metric) -> list[float]:
    assert isinstance(metric.data, Gauge)
    return [p.value for p in metric.data.data_points]


def histograms(metric: Metric) -> dict[Labels, HistogramDataPoint]:
    assert isinstance(metric.data, Histogram)
    return {frozenset((p.attributes or {}).items()): p for p in metric.data.data_points}


def test_outbox_gauges_report_nothing_before_the_first_measurement(recorded: Recorded) -> None:
    recorded.metrics.saga_started("order_to_cash")
    collected = recorded.collect()
    assert "bus.sagas.started" in collected
    for name in ("bus.outbox.backlog", "bus.outbox.oldest_age"):
        assert name not in collected or not collected[name].data.data_points


def test_saga_counters_count_per_saga_type(recorded: Recorded) -> None:
    m = recorded.metrics
    m.saga_started("order_to_cash")
    m.saga_started("order_to_cash")
    m.saga_started("refund")
    m.saga_finished("order_to_cash", "completed")
    m.saga_finished("order_to_cash", SagaStatus.COMPENSATED)
    m.saga_finished("refund", "failed")
    m.saga_finished("refund", "running")  # not terminal: ignored
    m.saga_finished("refund", "bogus")

    collected = recorded.collect()
    assert sums(collected["bus.sagas.started"]) == {
        labels(saga_type="order_to_cash"): 2,
        labels(saga_type="refund"): 1,
    }
    assert sums(collected["bus.sagas.completed"]) == {labels(saga_type="order_to_cash"): 1}
    assert sums(collected["bus.sagas.compensated"]) == {labels(saga_type="order_to_cash"): 1}
    assert sums(collected["bus.sagas.failed"]) == {labels(saga_type="refund"): 1}
    assert {collected[n].unit for n in ("bus.sagas.started", "bus.sagas.failed")} == {"{saga}"}


def test_suspended_sagas_and_repairs(recorded: Recorded) -> None:
    m = recorded.metrics
    m.saga_suspended("payout")
    m.repaired("payout", "retry")
    m.repaired("payout", "retry")
    m.repaired("order_to_cash", "resume")
    collected = recorded.collect()
    assert sums(collected["bus.sagas.suspended"]) == {labels(saga_type="payout"): 1}
    assert sums(collected["bus.sagas.repairs"]) == {
        labels(saga_type="payout", repair="retry"): 2,
        labels(saga_type="order_to_cash", repair="resume"): 1,
    }


def test_step_duration_histogram(recorded: Recorded) -> None:
    m = recorded.metrics
    m.step_finished("order_to_cash", "charge_payment", "succeeded", 0.004)
    m.step_finished("order_to_cash", "charge_payment", StepStatus.SUCCEEDED, 0.2)
    m.step_finished("order_to_cash", "charge_payment", "timed_out", 30.0)
    m.step_finished("order_to_cash", "reserve_stock", "compensation_failed", 400.0)
    m.step_finished("order_to_cash", "reserve_stock", "compensated", -1.0)  # clamped to 0
    m.step_finished("order_to_cash", "reserve_stock", "running", 1.0)  # not an outcome

    metric = recorded.collect()["bus.saga.step.duration"]
    assert metric.unit == "s"
    found = histograms(metric)
    assert set(found) == {
        labels(saga_type="order_to_cash", step="charge_payment", outcome="succeeded"),
        labels(saga_type="order_to_cash", step="charge_payment", outcome="timed_out"),
        labels(saga_type="order_to_cash", step="reserve_stock", outcome="compensation_failed"),
        labels(saga_type="order_to_cash", step="reserve_stock", outcome="compensated"),
    }
    succeeded = found[labels(saga_type="order_to_cash", step="charge_payment", outcome="succeeded")]
    assert succeeded.count == 2
    assert succeeded.sum == pytest.approx(0.204)
    assert tuple(succeeded.explicit_bounds) == STEP_DURATION_BUCKETS
    # 0.004 falls in (0.0025, 0.005], 0.2 in (0.1, 0.25].
    assert succeeded.bucket_counts[STEP_DURATION_BUCKETS.index(0.005)] == 1
    assert succeeded.bucket_counts[STEP_DURATION_BUCKETS.index(0.25)] == 1
    assert sum(succeeded.bucket_counts) == 2

    slow = found[
        labels(saga_type="order_to_cash", step="reserve_stock", outcome="compensation_failed")
    ]
    assert slow.bucket_counts[-1] == 1  # beyond 5 min: the +Inf bucket
    clamped = found[labels(saga_type="order_to_cash", step="reserve_stock", outcome="compensated")]
    assert (clamped.count, clamped.sum) == (1, 0.0)


def test_buckets_cover_a_millisecond_to_five_minutes() -> None:
    assert STEP_DURATION_BUCKETS[0] == 0.001
    assert STEP_DURATION_BUCKETS[-1] == 300.0
    assert list(STEP_DURATION_BUCKETS) == sorted(set(STEP_DURATION_BUCKETS))


def test_dead_lettered_and_duplicates(recorded: Recorded) -> None:
    m = recorded.metrics
    m.dead_lettered("coordinator", DeadLetterReason.SCHEMA)
    m.dead_lettered("coordinator", "schema-violation")
    m.dead_lettered("adapter.payments", DeadLetterReason.HANDLER_ERROR)
    m.duplicate("coordinator")
    m.duplicate("coordinator")
    m.duplicate("adapter.payments")

    collected = recorded.collect()
    dead = sums(collected["bus.messages.dead_lettered"])
    assert dead == {
        labels(consumer="coordinator", reason="schema-violation"): 2,
        labels(consumer="adapter.payments", reason="handler-error"): 1,
    }
    # Plain strings on the wire, not enum members.
    assert all(type(value) is str for key in dead for _, value in key)
    assert sums(collected["bus.inbox.duplicates"]) == {
        labels(consumer="coordinator"): 2,
        labels(consumer="adapter.payments"): 1,
    }


def test_outbox_gauges_report_the_last_values_set(recorded: Recorded) -> None:
    m = recorded.metrics
    m.set_outbox_backlog(7, 12.5)
    m.set_outbox_backlog(3, 4.25)
    collected = recorded.collect()
    assert gauge_values(collected["bus.outbox.backlog"]) == [3]
    assert gauge_values(collected["bus.outbox.oldest_age"]) == [4.25]
    assert collected["bus.outbox.oldest_age"].unit == "s"

    m.set_outbox_backlog(0, None)
    collected = recorded.collect()
    assert gauge_values(collected["bus.outbox.backlog"]) == [0]
    assert gauge_values(collected["bus.outbox.oldest_age"]) == [0.0]


def test_disabled_metrics_accept_every_call() -> None:
    m = Metrics.disabled()
    m.saga_started("order_to_cash")
    m.saga_finished("order_to_cash", "completed")
    m.saga_finished("order_to_cash", "running")
    m.step_finished("order_to_cash", "charge_payment", "failed", 0.5)
    m.dead_lettered("coordinator", DeadLetterReason.MALFORMED)
    m.duplicate("coordinator")
    m.set_outbox_backlog(5, 1.0)
    m.set_outbox_backlog(0, None)
