"""Saga storage: the Postgres adapter, its in-memory twin and the schema migrations."""

from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool

__all__ = ["InMemorySagaStore", "PostgresSagaStore", "create_pool", "migrate"]
