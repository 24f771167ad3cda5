"""Saga definitions of the example domain, built from the core and ``contracts`` only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bus_orchestrator.core import SagaDefinition
from sagas import order_to_cash


def all_sagas(step_timeout: timedelta = timedelta(seconds=30)) -> list[SagaDefinition[Any, Any]]:
    """Every saga the coordinator runs by default."""
    return [order_to_cash.build(step_timeout)]
