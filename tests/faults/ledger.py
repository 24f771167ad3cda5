"""Fake external systems whose records survive kill -9: a ledger in the test's schema.

The example adapters' fakes keep their records in memory, lost when their process is
killed. These keep them in Postgres, and honour the idempotency key as a real provider
does: under a per-order lock, look the key up; if it is there, answer as the first time;
else act and record the effect, in the same transaction. A repeated command with the same
key therefore has no new effect, and what the ledger holds is the ground truth of the side
effects: two effects of one action kind for one order (two charges), or a forward effect
recorded after its compensation (a charge after its refund), are engine defects.

The business rules are the example fakes': a ``OOS-`` SKU is out of stock, a total above
10000 is declined, country ``ZZ`` is not served; so ``SCENARIOS`` outcomes hold.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from adapters.fake_system import derived_id
from adapters.inventory import OUT_OF_STOCK_PREFIX
from adapters.payments import DECLINE_ABOVE
from adapters.shipping import REJECTED_COUNTRIES
from bus_orchestrator.errors import TransientAdapterError

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS fake_ledger (
    seq             bigserial   PRIMARY KEY,
    system          text        NOT NULL,
    idempotency_key text        NOT NULL,
    order_id        text        NOT NULL,
    action          text        NOT NULL,
    effect          boolean     NOT NULL,
    ref             text,
    detail          text        NOT NULL DEFAULT '',
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (system, idempotency_key)
)
"""
"""One row per idempotency key that reached a fake system. ``effect`` is false for a
refusal (out of stock, declined, rejected) and for an undo that found nothing to undo;
``ref`` is the reservation, payment or shipment id made or undone."""

FORWARD = {"reserve": "release", "charge": "refund", "ship": None}
"""Forward action -> its compensation."""


@dataclass(frozen=True, slots=True)
class Entry:
    effect: bool
    ref: str | None
    detail: str


class Ledger:
    """The fake systems' shared ledger, on a pool whose ``search_path`` is the test schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _act(
        self,
        system: str,
        key: str,
        order_id: str,
        action: str,
        decide: Callable[[asyncpg.Connection], Awaitable[Entry]],
    ) -> Entry:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"{system}:{order_id}"
                )
                row = await conn.fetchrow(
                    "SELECT effect, ref, detail FROM fake_ledger"
                    " WHERE system = $1 AND idempotency_key = $2",
                    system,
                    key,
                )
                if row is not None:  # the same key again: the first answer, no new effect
                    return Entry(row["effect"], row["ref"], row["detail"])
                entry = await decide(conn)
                await conn.execute(
                    "INSERT INTO fake_ledger"
                    " (system, idempotency_key, order_id, action, effect, ref, detail)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    system,
                    key,
                    order_id,
                    action,
                    entry.effect,
                    entry.ref,
                    entry.detail,
                )
                return entry
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,  # a pooled connection of a dead server
        ) as exc:
            # the system is unreachable: nothing happened, the kit retries the call
            raise TransientAdapterError(f"{system} ledger unavailable: {exc!r}") from exc

    async def _undo(
        self, conn: asyncpg.Connection, order_id: str, done: str, undone: str, ref: str | None
    ) -> Entry:
        """Undo the order's ``done`` effect not yet undone (the one ``ref`` names, if given)."""
        held = await conn.fetchval(
            "SELECT ref FROM fake_ledger d WHERE d.order_id = $1 AND d.action = $2 AND d.effect"
            " AND ($3::text IS NULL OR d.ref = $3::text)"
            " AND NOT EXISTS (SELECT 1 FROM fake_ledger u WHERE u.order_id = d.order_id"
            "   AND u.action = $4 AND u.effect AND u.ref = d.ref)"
            " ORDER BY seq LIMIT 1",
            order_id,
            done,
            ref,
            undone,
        )
        if held is None:
            return Entry(False, ref, f"nothing to {undone}")
        return Entry(True, held, "")

    # -- inventory ---------------------------------------------------------------------

    async def reserve(self, key: str, order_id: str, skus: Sequence[str]) -> Entry:
        async def decide(conn: asyncpg.Connection) -> Entry:
            unavailable = [sku for sku in skus if sku.startswith(OUT_OF_STOCK_PREFIX)]
            if unavailable:
                return Entry(False, None, ", ".join(unavailable))
            return Entry(True, derived_id("rsv", key), "")

        return await self._act("inventory", key, order_id, "reserve", decide)

    async def release(self, key: str, order_id: str, reservation_id: str | None) -> Entry:
        async def decide(conn: asyncpg.Connection) -> Entry:
            return await self._undo(conn, order_id, "reserve", "release", reservation_id)

        return await self._act("inventory", key, order_id, "release", decide)

    # -- payments ----------------------------------------------------------------------

    async def charge(self, key: str, order_id: str, amount: Decimal, currency: str) -> Entry:
        async def decide(conn: asyncpg.Connection) -> Entry:
            if amount > DECLINE_ABOVE:
                return Entry(False, None, f"amount {amount} {currency} over the limit")
            return Entry(True, derived_id("pay", key), "")

        return await self._act("payments", key, order_id, "charge", decide)

    async def refund(self, key: str, order_id: str, payment_id: str | None) -> Entry:
        async def decide(conn: asyncpg.Connection) -> Entry:
            return await self._undo(conn, order_id, "charge", "refund", payment_id)

        return await self._act("payments", key, order_id, "refund", decide)

    # -- shipping ----------------------------------------------------------------------

    async def ship(self, key: str, order_id: str, country: str) -> Entry:
        async def decide(conn: asyncpg.Connection) -> Entry:
            if country in REJECTED_COUNTRIES:
                return Entry(False, None, f"no delivery to country {country}")
            return Entry(True, derived_id("shp", key), "")

        return await self._act("shipping", key, order_id, "ship", decide)


DUPLICATED_SQL = """
SELECT
  (SELECT coalesce(sum(n - 1), 0) FROM (
     SELECT count(*) AS n FROM fake_ledger WHERE effect GROUP BY order_id, action
   ) AS per_kind) AS repeated,
  (SELECT count(*) FROM fake_ledger f WHERE f.effect AND f.action IN ('reserve', 'charge')
     AND EXISTS (SELECT 1 FROM fake_ledger c WHERE c.order_id = f.order_id AND c.seq < f.seq
                 AND c.action = CASE f.action WHEN 'reserve' THEN 'release' ELSE 'refund' END)
  ) AS after_compensation
"""
"""Duplicated side effects: more than one effect per (order, action kind), and forward
effects recorded after a compensation of the same step (a charge after its refund)."""


async def duplicated_side_effects(conn: asyncpg.Connection) -> tuple[int, int]:
    """``(repeated, after compensation)`` from the ledger."""
    row = await conn.fetchrow(DUPLICATED_SQL)
    return int(row["repeated"]), int(row["after_compensation"])


async def net_effects(conn: asyncpg.Connection) -> dict[str, set[str]]:
    """Per order, the forward effects still standing: ``charge`` not refunded, ``ship``..."""
    rows = await conn.fetch(
        "SELECT d.order_id, d.action FROM fake_ledger d WHERE d.effect"
        " AND d.action IN ('reserve', 'charge', 'ship')"
        " AND NOT EXISTS (SELECT 1 FROM fake_ledger u WHERE u.order_id = d.order_id AND u.effect"
        "   AND u.ref = d.ref AND u.action IN ('release', 'refund'))"
    )
    standing: dict[str, set[str]] = {}
    for row in rows:
        standing.setdefault(row["order_id"], set()).add(row["action"])
    return standing
