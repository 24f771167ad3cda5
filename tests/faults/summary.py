"""The fault suite's summary: one row per test, printed as one table at the end of the run."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest


@dataclass(slots=True)
class Row:
    """What one fault test counted, from the database and the broker."""

    test: str
    sagas: int = 0
    """Sagas the test started (orders placed)."""
    as_expected: int = 0
    """Sagas whose final status is the one their scenario expects."""
    lost: int = 0
    """Commands the coordinator sent that no adapter processed, plus sagas not final."""
    duplicated: int = 0
    """Side effects repeated in the fakes' ledger (two per order and action kind, or a
    forward effect after its compensation)."""
    dead_with_reason: int = 0
    dead_without_reason: int = 0
    p50: float | None = None
    """Good traffic: seconds from publishing an order to its saga's final status."""
    p95: float | None = None
    notes: list[str] = field(default_factory=list)


STASH = pytest.StashKey[list[Row]]()

COLUMNS = (
    "test",
    "sagas",
    "final as expected",
    "lost",
    "duplicated side effects",
    "dead (reason)",
    "dead (no reason)",
    "p50 s",
    "p95 s",
    "notes",
)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (readable in a terminal, quotable in a note)."""
    cells = [
        [
            row.test,
            str(row.sagas),
            str(row.as_expected),
            str(row.lost),
            str(row.duplicated),
            str(row.dead_with_reason),
            str(row.dead_without_reason),
            _seconds(row.p50),
            _seconds(row.p95),
            "; ".join(row.notes),
        ]
        for row in rows
    ]
    widths = [max(len(c) for c in column) for column in zip(COLUMNS, *cells, strict=False)]

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join(
        [line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line(c) for c in cells]
    )


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]
