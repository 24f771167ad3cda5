"""The named SQL of the Postgres store, one statement per file in ``store/sql``.

Query texts are fixed (never assembled at run time) so asyncpg's per-connection prepared
statement cache serves every call after the first.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib.resources import files


@dataclass(frozen=True, slots=True)
class Queries:
    """Every statement the store runs; each field is named after its ``.sql`` file."""

    load_by_correlation: str
    load_by_pending_command: str
    load_by_saga_id: str
    commit_insert_saga: str
    commit_update_saga: str
    commit_record_only: str
    commit_insert_waiting: str
    commit_update_release: str
    park: str
    parked: str
    parked_ready: str
    unpark: str
    claim_timers: str
    back_off_timer: str
    find: str
    list_sagas: str
    history: str
    claim_unsent: str
    mark_sent: str
    purge_sent: str
    purge_inbox: str
    purge_finished: str
    purge_orphan_history: str
    outbox_backlog: str
    register_app: str
    running_versions: str
    lock_ready: str
    lock_keys: str
    grant_locks: str
    locks_untold: str
    saga_locks: str
    page_sagas: str
    saga_counts: str
    count_fold_lock: str
    fold_counts: str
    oldest_running: str

    @classmethod
    def load(cls) -> Queries:
        folder = files("bus_orchestrator.store").joinpath("sql")

        def read(name: str) -> str:
            return folder.joinpath(f"{name}.sql").read_text(encoding="utf-8")

        # Each commit statement is its own saga write plus the shared inbox/history/outbox
        # tail; joined once here, so the texts asyncpg prepares are still fixed.
        tail = read("commit_tail")
        texts = {
            field.name: read(field.name) + (tail if field.name.startswith("commit_") else "")
            for field in fields(cls)
        }
        return cls(**texts)
