"""The harness as a pytest fixture. Enable it in the root ``conftest.py``::

    pytest_plugins = ["bus_orchestrator.testing.pytest_plugin"]

    @pytest.fixture
    def bus_app() -> App:
        return create_app()

and take ``bus_harness`` in a test: a fresh ``SagaHarness`` of ``bus_app`` for each test.
Nothing runs in the background, so it needs no teardown and works in any asyncio mode.
"""

from __future__ import annotations

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.testing.harness import SagaHarness


@pytest.fixture
def bus_harness(bus_app: App) -> SagaHarness:
    """A ``SagaHarness`` running ``bus_app`` with its adapters, its clock at ``DEFAULT_START``."""
    return SagaHarness(bus_app)
