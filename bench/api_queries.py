"""The HTTP API's queries over a million stored sagas: latency through the real API, and
the Postgres plan of each query's SQL.

On demand, not a test (``tests/integration/test_bench_api_queries.py`` runs the smoke mode
so it cannot rot; it asserts no timing). See bench/README.md, "API queries".

    .venv/bin/python bench/api_queries.py                  # 1,000,000 sagas (~5 min here)
    .venv/bin/python bench/api_queries.py --sagas 2000     # smoke mode
    .venv/bin/python bench/api_queries.py --reuse          # the schema loaded by the last run

1. Into schema ``bench_api`` (dropped and migrated afresh) of ``BENCH_PG_DSN`` (default
   ``postgresql://root@127.0.0.1:5432/test``) it loads N sagas with ``INSERT ... SELECT
   generate_series``: four saga types (three the bench app runs, one of another app),
   creation times over 180 days, statuses as a live system has them (the last hour mostly
   running; older ones mostly completed, some compensated or failed, a few stuck running),
   real saga state JSON (a decided saga of each type), and 8 history rows for one saga in
   ten. Then ``VACUUM ANALYZE``.
2. It starts ``bus-orchestrator api`` (a process of its own, uvicorn on loopback, a reader
   token) on that schema, and for each query sends ``--requests`` requests one after the
   other with httpx (after a warm-up), ``--rounds`` times; p50/p99 per round, and the
   median over rounds.
3. It prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL each route runs (the store's own
   ``.sql`` texts, with the parameters of a sample request), and which scans each plan does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus_orchestrator.app import App  # noqa: E402
from bus_orchestrator.core import Inbound, SagaStatus, decide  # noqa: E402
from bus_orchestrator.store.migrate import available, migrate, quote_ident  # noqa: E402
from bus_orchestrator.store.queries import Queries  # noqa: E402
from contracts import Address, LineItem, OrderPlaced  # noqa: E402
from contracts.onboarding import CustomerSignedUp, VerificationRequested  # noqa: E402
from sagas import onboarding, order_to_cash  # noqa: E402

DSN = os.environ.get("BENCH_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
SCHEMA = "bench_api"  # --schema
TOKEN = "bench-api-reader"  # noqa: S105 - the bench's own API process
APP_TYPES = ("identity_verification", "onboarding", "order_to_cash")
OTHER_TYPE = "legacy_import"  # another app's sagas, on the same database
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def bench_app() -> App:
    """The app the API serves: three saga types (the examples')."""
    return App(
        "bench-api",
        sagas=[order_to_cash.build(), onboarding.build(), onboarding.build_verification()],
    )


def templates() -> dict[str, str]:
    """A saga state (JSON) of each type, as the coordinator writes it: each type's start
    event decided by its real definition."""
    order = OrderPlaced(
        order_id="o-1",
        customer_id="c-1",
        items=(LineItem(sku="SKU-1", quantity=2, unit_price="19.90"),),
        total="39.80",
        currency="EUR",
        shipping_address=Address(country="DE", city="Berlin"),
        payment_token="tok-secret",  # noqa: S106 - masked by the API
    )
    signup = CustomerSignedUp(
        signup_id="s-1", customer_id="c-1", name="Ada", email="ada@example.com", country="DE"
    )
    starts: list[tuple[Any, Any]] = [(order_to_cash.build(), order), (onboarding.build(), signup)]
    verification = onboarding.build_verification()
    request = VerificationRequested(
        verification_id="v-1", customer_id="c-1", name="Ada", email="ada@example.com"
    )
    starts.append((verification, request))
    found = {}
    for definition, event in starts:
        decision = decide(definition, None, Inbound(str(uuid.uuid4()), event, "c-1"), T0)
        assert decision.instance is not None
        found[definition.name] = decision.instance.model_dump_json()
    found[OTHER_TYPE] = found["order_to_cash"].replace('"order_to_cash"', f'"{OTHER_TYPE}"')
    return found


# -- loading -------------------------------------------------------------------------------

SAGAS_SQL = """
INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,
                  pending_command_id, deadline, created_at, updated_at)
SELECT s.saga_id, s.saga_type, s.correlation_id, s.status, s.version,
       t.state || jsonb_build_object(
           'saga_id', s.saga_id, 'correlation_id', s.correlation_id, 'status', s.status,
           'version', s.version, 'pending_command_id', s.pending_command_id,
           'deadline', s.deadline, 'created_at', s.created_at, 'updated_at', s.updated_at),
       s.pending_command_id, s.deadline, s.created_at, s.updated_at
FROM (
    SELECT g, saga_id, saga_type, correlation_id, status, version, created_at,
           CASE WHEN status IN ('running', 'compensating') AND age < interval '1 hour'
                    THEN created_at + random() * age
                WHEN status IN ('running', 'compensating')
                    THEN created_at + random() * interval '10 minutes'
                ELSE created_at + random() * interval '2 minutes' END AS updated_at,
           CASE WHEN status IN ('running', 'compensating') AND age < interval '1 hour'
                    THEN md5('command-' || g) END AS pending_command_id,
           CASE WHEN status IN ('running', 'compensating') AND age < interval '1 hour'
                    THEN now() + random() * interval '30 seconds' END AS deadline
    FROM (
        SELECT g, saga_id, saga_type, created_at, now() - created_at AS age,
               version,
               CASE WHEN saga_type = 'order_to_cash' THEN 'order-'
                    WHEN saga_type = 'onboarding' THEN 'signup-'
                    WHEN saga_type = 'identity_verification' THEN 'verification-'
                    ELSE 'import-' END || substr(md5('correlation-' || g), 1, 16)
                   AS correlation_id,
               CASE WHEN now() - created_at < interval '1 hour' THEN
                        CASE WHEN r < 0.70 THEN 'running' WHEN r < 0.75 THEN 'compensating'
                             ELSE 'completed' END
                    WHEN r < 0.915 THEN 'completed' WHEN r < 0.975 THEN 'compensated'
                    WHEN r < 0.995 THEN 'failed' WHEN r < 0.998 THEN 'running'
                    ELSE 'compensating' END AS status
        FROM (
            SELECT g, md5('saga-' || g)::uuid AS saga_id, random() AS r,
                   1 + floor(random() * 8)::int AS version,
                   CASE WHEN t < 0.45 THEN 'order_to_cash' WHEN t < 0.75 THEN 'onboarding'
                        WHEN t < 0.90 THEN 'identity_verification' ELSE $4 END AS saga_type,
                   now() - interval '180 days' * (1 - g::float8 / $3)
                       - random() * interval '5 minutes' AS created_at
            FROM (SELECT g, random() AS t FROM generate_series($1::bigint, $2::bigint) g) n
        ) a
    ) b
) s
JOIN bench_template t ON t.saga_type = s.saga_type
"""

HISTORY_SQL = """
INSERT INTO saga_history (saga_id, at, direction, message_id, message_type, correlation_id,
                          causation_id, outcome, note, payload, app)
SELECT s.saga_id, s.created_at + k * interval '1 second',
       CASE WHEN k % 2 = 0 THEN 'in' ELSE 'out' END,
       md5(s.saga_id::text || k), s.saga_type || '.message_' || k || '.v1', s.correlation_id,
       CASE WHEN k > 0 THEN md5(s.saga_id::text || (k - 1)) END,
       CASE WHEN k % 2 = 0 THEN 'processed' ELSE 'sent' END, '',
       jsonb_build_object('order_id', s.correlation_id, 'step', k), 'bench-api'
FROM saga s CROSS JOIN generate_series(0, 7) k
WHERE get_byte(uuid_send(s.saga_id), 15) < 26  -- one saga in ten
"""


async def load(conn: asyncpg.Connection, n: int) -> dict[str, float]:
    """Drop and migrate the schema, load ``n`` sagas and their history; seconds taken."""
    timings = {}
    await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(SCHEMA)} CASCADE")
    await conn.execute(f"CREATE SCHEMA {quote_ident(SCHEMA)}")
    await migrate(conn, SCHEMA)
    await conn.execute(f"SET search_path TO {quote_ident(SCHEMA)}")
    await conn.execute("CREATE TEMP TABLE bench_template (saga_type text, state jsonb)")
    await conn.executemany(
        "INSERT INTO bench_template VALUES ($1, $2::jsonb)", list(templates().items())
    )
    started = time.perf_counter()
    chunk = 100_000
    for low in range(1, n + 1, chunk):
        high = min(n, low + chunk - 1)
        await conn.execute(SAGAS_SQL, low, high, n, OTHER_TYPE)
        print(f"  sagas {high:>9,} ({time.perf_counter() - started:5.1f} s)", file=sys.stderr)
    timings["sagas"] = time.perf_counter() - started
    started = time.perf_counter()
    await conn.execute(HISTORY_SQL)
    timings["history"] = time.perf_counter() - started
    started = time.perf_counter()
    await conn.execute("VACUUM ANALYZE saga")
    await conn.execute("VACUUM ANALYZE saga_history")
    timings["vacuum analyze"] = time.perf_counter() - started
    started = time.perf_counter()
    await conn.fetch(Queries.load().saga_counts, None)  # as the first GET /stats would
    # As autovacuum soon would: a million dead delta rows would be scanned by each fold.
    await conn.execute("VACUUM saga_count_delta")
    timings["fold the counts' deltas"] = time.perf_counter() - started
    return timings


# -- what the hot path pays ------------------------------------------------------------------

INSERT_SQL = """
INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,
                  pending_command_id, deadline, created_at, updated_at)
VALUES ($1, 'order_to_cash', $2, 'running', 1, $3::jsonb, 'c', now(), now(), now())
"""
UPDATE_SQL = """
UPDATE saga SET status = $2, version = version + 1, state = $3::jsonb,
                pending_command_id = 'c', deadline = now(), updated_at = now()
WHERE saga_id = $1
"""


async def write_cost(
    conn: asyncpg.Connection, sagas: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """What migration 0012 costs the hot path: per saga life (insert, 5 updates while
    running, the update to completed; each statement its own transaction), the time taken
    (synchronous_commit off, so the disk's flush does not drown the difference) and the
    bytes of index and delta rows written, without and with 0012; the variants interleaved,
    their order turned each round, medians over rounds. The saga table only: a real commit
    also writes the inbox, history and outbox, so the relative cost is an upper bound."""
    state = templates()["order_to_cash"]
    scratch = quote_ident(SCHEMA + "_writes")
    await conn.execute("SET synchronous_commit = off")
    labels = ["without 0012", "0012 indexes", "0012 indexes + counts trigger"]
    took: dict[str, list[float]] = {label: [] for label in labels}
    written: dict[str, list[float]] = {label: [] for label in labels}
    for round_no in range(rounds):
        for label in labels if round_no % 2 == 0 else labels[::-1]:
            await conn.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
            await conn.execute(f"CREATE SCHEMA {scratch}")
            await conn.execute(f"SET search_path TO {scratch}")
            for version, sql in available():
                if version.startswith("0012"):
                    indexes, counts = sql.split("\n-- GET /stats", 1)
                    sql = {"without 0012": "", "0012 indexes": indexes}.get(
                        label, indexes + "\n-- GET /stats" + counts
                    )
                if sql:
                    await conn.execute(sql)
            insert, update = await conn.prepare(INSERT_SQL), await conn.prepare(UPDATE_SQL)
            started = time.perf_counter()
            for n in range(sagas):
                saga_id = uuid.uuid4()
                await insert.fetch(saga_id, f"w-{n}", state)
                for _ in range(5):
                    await update.fetch(saga_id, "running", state)
                await update.fetch(saga_id, "completed", state)
            took[label].append((time.perf_counter() - started) * 1000 / sagas)
            size = await conn.fetchval(
                "SELECT pg_indexes_size('saga') + coalesce(pg_table_size("
                "to_regclass('saga_count_delta')), 0)"
            )
            written[label].append(size / sagas)
    await conn.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
    return {
        label: (statistics.median(took[label]), statistics.median(written[label]))
        for label in labels
    }


# -- samples ---------------------------------------------------------------------------


@dataclass
class Samples:
    """What the requests ask for: saga ids and correlation ids of the app's sagas, sagas
    with history, and times to range over."""

    sagas: list[asyncpg.Record]
    with_history: list[asyncpg.Record]
    oldest: datetime
    newest: datetime


async def samples(conn: asyncpg.Connection, n: int) -> Samples:
    percent = min(100.0, 400_000 / n)  # about 4,000 rows
    sagas = await conn.fetch(
        "SELECT saga_id::text, saga_type, correlation_id, created_at FROM saga "
        "TABLESAMPLE BERNOULLI ($2) WHERE saga_type = ANY($1::text[])",
        list(APP_TYPES),
        percent,
    )
    with_history = await conn.fetch(
        "SELECT DISTINCT h.saga_id::text FROM saga_history h "
        "TABLESAMPLE BERNOULLI ($2) JOIN saga s USING (saga_id) "
        "WHERE s.saga_type = ANY($1::text[])",
        list(APP_TYPES),
        min(100.0, percent * 8),
    )
    oldest, newest = await conn.fetchrow("SELECT min(created_at), max(created_at) FROM saga")
    return Samples(list(sagas), list(with_history), oldest, newest)


def cursor_at(created_at: datetime, saga_id: str) -> str:
    """A cursor as the API gives them (``api.cursor``): a page ending at that saga."""
    import base64

    raw = json.dumps([created_at.isoformat(), saga_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# -- the queries ---------------------------------------------------------------------------


@dataclass
class Query:
    """A route and how to make a request of it (a path and its parameters) from the
    samples; ``sql`` names the store statement(s) it runs, ``args`` their parameters."""

    name: str
    request: Callable[[random.Random], tuple[str, dict[str, str]]]
    sql: list[tuple[str, Callable[[random.Random], tuple[Any, ...]]]]


def queries(s: Samples) -> list[Query]:
    scope = list(APP_TYPES)
    unfinished = [status.value for status in SagaStatus if not status.terminal]
    span = s.newest - s.oldest
    now = datetime.now(UTC)

    def saga(rng: random.Random) -> asyncpg.Record:
        return rng.choice(s.sagas)

    def deep(rng: random.Random) -> tuple[datetime, str]:
        """A point in the older half: a cursor deep in the pages."""
        row = saga(rng)
        return row["created_at"], row["saga_id"]

    def day(rng: random.Random) -> tuple[datetime, datetime]:
        start = s.oldest + span * rng.random() * 0.99
        return start, start + min(timedelta(days=1), span / 50)

    def page(**where: Any) -> tuple[Any, ...]:
        after = where.get("after")
        return (
            where.get("status"),
            where.get("saga_type"),
            scope,
            where.get("correlation_id"),
            where.get("created_after"),
            where.get("created_before"),
            where.get("updated_before"),
            None if after is None else after[0],
            None if after is None else uuid.UUID(after[1]),
            51,
        )

    stuck_before = now - timedelta(hours=1)
    iso = datetime.isoformat
    return [
        Query(
            "GET /sagas/{saga_id}",
            lambda r: (f"/sagas/{saga(r)['saga_id']}", {}),
            [("find", lambda r: (uuid.UUID(x := saga(r)["saga_id"]), x))],
        ),
        Query(
            "GET /sagas/{correlation_id}",
            lambda r: (f"/sagas/{saga(r)['correlation_id']}", {}),
            [("find", lambda r: (None, saga(r)["correlation_id"]))],
        ),
        Query(
            "GET /sagas/{type}/{correlation_id}",
            lambda r: (f"/sagas/{(x := saga(r))['saga_type']}/{x['correlation_id']}", {}),
            [
                (
                    "page_sagas",
                    lambda r: (
                        *page(
                            saga_type=(x := saga(r))["saga_type"],
                            correlation_id=x["correlation_id"],
                        )[:9],
                        1,
                    ),
                )
            ],
        ),
        Query(
            "GET /sagas (newest)",
            lambda r: ("/sagas", {}),
            [("page_sagas", lambda r: page())],
        ),
        Query(
            "GET /sagas status=completed&type",
            lambda r: ("/sagas", {"status": "completed", "type": r.choice(APP_TYPES)}),
            [("page_sagas", lambda r: page(status="completed", saga_type=r.choice(APP_TYPES)))],
        ),
        Query(
            "GET /sagas status=failed&type",
            lambda r: ("/sagas", {"status": "failed", "type": r.choice(APP_TYPES)}),
            [("page_sagas", lambda r: page(status="failed", saga_type=r.choice(APP_TYPES)))],
        ),
        Query(
            "GET /sagas status=failed&type +cursor",
            lambda r: (
                "/sagas",
                {
                    "status": "failed",
                    "type": r.choice(APP_TYPES),
                    "cursor": cursor_at(*deep(r)),
                },
            ),
            [
                (
                    "page_sagas",
                    lambda r: page(status="failed", saga_type=r.choice(APP_TYPES), after=deep(r)),
                )
            ],
        ),
        Query(
            "GET /sagas status=running&updated_before (stuck)",
            lambda r: ("/sagas", {"status": "running", "updated_before": iso(stuck_before)}),
            [("page_sagas", lambda r: page(status="running", updated_before=stuck_before))],
        ),
        Query(
            "GET /sagas status=running&updated_before +cursor",
            lambda r: (
                "/sagas",
                {
                    "status": "running",
                    "updated_before": iso(stuck_before),
                    "cursor": cursor_at(*deep(r)),
                },
            ),
            [
                (
                    "page_sagas",
                    lambda r: page(status="running", updated_before=stuck_before, after=deep(r)),
                )
            ],
        ),
        Query(
            "GET /sagas created range (a day)",
            lambda r: (
                "/sagas",
                {"created_after": iso((d := day(r))[0]), "created_before": iso(d[1])},
            ),
            [
                (
                    "page_sagas",
                    lambda r: page(created_after=(d := day(r))[0], created_before=d[1]),
                )
            ],
        ),
        Query(
            "GET /sagas type +cursor (deep page)",
            lambda r: ("/sagas", {"type": r.choice(APP_TYPES), "cursor": cursor_at(*deep(r))}),
            [("page_sagas", lambda r: page(saga_type=r.choice(APP_TYPES), after=deep(r)))],
        ),
        Query(
            "GET /sagas/{saga_id}/history",
            lambda r: (f"/sagas/{r.choice(s.with_history)['saga_id']}/history", {}),
            [
                (
                    "find",
                    lambda r: (uuid.UUID(x := r.choice(s.with_history)["saga_id"]), x),
                ),
                ("history", lambda r: (uuid.UUID(r.choice(s.with_history)["saga_id"]),)),
            ],
        ),
        Query(
            "GET /stats",
            lambda r: ("/stats", {}),
            [
                ("saga_counts", lambda r: (scope,)),
                ("oldest_running", lambda r: (scope, unfinished)),
            ],
        ),
    ]


# -- the API process -----------------------------------------------------------------------


def start_api(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "OTEL_"))}
    env.update(
        BUS_DATABASE_URL=DSN,
        BUS_DATABASE_SCHEMA=SCHEMA,
        BUS_API_PORT=str(port),
        BUS_API_TOKENS=f"{TOKEN}=reader",
        BUS_APP="bench.api_queries:bench_app",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bus_orchestrator", "api", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
    )


async def wait_serving(http: httpx.AsyncClient, api: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if api.poll() is not None:
            raise SystemExit(f"the API exited with {api.returncode}")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the API never answered")


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far, in ms: what a request costs
    the API process, whatever else the machine runs meanwhile."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    http: httpx.AsyncClient, query: Query, requests: int, rng: random.Random
) -> list[float]:
    """Milliseconds of each of ``requests`` requests, one after the other."""
    took = []
    for _ in range(requests):
        path, params = query.request(rng)
        started = time.perf_counter()
        response = await http.get(path, params=params)
        took.append((time.perf_counter() - started) * 1000)
        if response.status_code not in (200, 404, 409):
            raise SystemExit(f"{query.name}: {response.status_code} {response.text[:300]}")
    return took


# -- plans ---------------------------------------------------------------------------------


SCAN = re.compile(
    r"((?:Parallel )?(?:Seq|Index Only|Index|Bitmap Heap|Bitmap Index) Scan)"
    r"(?: using (\S+))? on (\S+)"
)


async def explain(
    conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]
) -> tuple[str, list[str], float]:
    """The plan text, its scans (``Index Scan using saga_pkey on saga``) and execution ms."""
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    text = "\n".join(r[0] for r in rows)
    scans = sorted({" ".join(p for p in m.groups() if p) for m in SCAN.finditer(text)})
    found = re.search(r"Execution Time: ([\d.]+) ms", text)
    return text, scans, float(found.group(1)) if found else float("nan")


# -- main ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    global SCHEMA  # one run, one schema
    SCHEMA = args.schema
    conn = await asyncpg.connect(DSN)
    try:
        if args.write_cost:
            cost = await write_cost(conn, args.write_cost, args.rounds)
            base, base_bytes = cost["without 0012"]
            print(
                f"per saga life, saga table only ({args.write_cost} sagas, {args.rounds} rounds): "
                "time, and bytes of index and count delta rows"
            )
            for label, (ms, size) in cost.items():
                print(
                    f"  {label:<30} {ms:6.3f} ms ({ms / base:.2f}x)  "
                    f"{size:7.0f} B ({size / base_bytes:.2f}x)"
                )
        if args.reuse:
            # the last run's data, brought up to the migrations this checkout has
            applied = await migrate(conn, SCHEMA)
            if applied:
                print(f"migrated {SCHEMA}: {', '.join(applied)}", file=sys.stderr)
            await conn.execute(f"SET search_path TO {quote_ident(SCHEMA)}")
        else:
            print(f"loading {args.sagas:,} sagas into schema {SCHEMA} ...", file=sys.stderr)
            for step, seconds in (await load(conn, args.sagas)).items():
                print(f"  {step}: {seconds:.1f} s", file=sys.stderr)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM saga) AS sagas, "
            "(SELECT count(*) FROM saga_history) AS history, "
            "pg_size_pretty(pg_total_relation_size('saga')) AS size"
        )
        print(
            f"schema {SCHEMA}: {counts['sagas']:,} sagas, {counts['history']:,} history rows, "
            f"saga table with indexes {counts['size']}"
        )
        found = await samples(conn, counts["sagas"])
    finally:
        await conn.close()

    the_queries = queries(found)
    if args.only:
        the_queries = [q for q in the_queries if args.only in q.name]
    port = args.port
    api = start_api(port)
    rounds: dict[str, list[tuple[float, float, float]]] = {q.name: [] for q in the_queries}
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
        ) as http:
            await wait_serving(http, api)
            rng = random.Random(args.seed)
            for query in the_queries:  # warm-up: connections, prepared statements, caches
                await measure(http, query, args.warmup, rng)
            for round_no in range(args.rounds):
                for query in the_queries:
                    cpu = cpu_ms(api.pid)
                    took = await measure(http, query, args.requests, rng)
                    cpu = (cpu_ms(api.pid) - cpu) / args.requests
                    rounds[query.name].append((percentile(took, 0.5), percentile(took, 0.99), cpu))
                print(f"  round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        api.terminate()
        api.wait(30)

    plans = await plans_of(the_queries, random.Random(args.seed))
    width = max(len(q.name) for q in the_queries)
    print()
    print(
        f"{args.rounds} rounds x {args.requests} requests per query, one at a time (ms, "
        "median over rounds of each round's p50 / p99 / API process CPU per request; SQL: "
        "EXPLAIN ANALYZE's execution time of the route's statements)"
    )
    print(f"{'query'.ljust(width)}  {'p50':>7}  {'p99':>7}  {'CPU':>5}  {'SQL':>6}  scans")
    for query in the_queries:
        p50 = statistics.median(r[0] for r in rounds[query.name])
        p99 = statistics.median(r[1] for r in rounds[query.name])
        cpu = statistics.median(r[2] for r in rounds[query.name])
        sql_ms = sum(ms for _, _, ms in plans[query.name])
        scans = "; ".join(s for _, found_scans, _ in plans[query.name] for s in found_scans)
        print(
            f"{query.name.ljust(width)}  {p50:7.2f}  {p99:7.2f}  {cpu:5.2f}  {sql_ms:6.2f}  {scans}"
        )
    seq = [
        q.name for q in the_queries for text, _, _ in plans[q.name] if "Seq Scan on saga " in text
    ]
    print(f"\nSeq Scan on saga in: {', '.join(seq) if seq else 'none'}")
    if args.plans:
        for query in the_queries:
            for (name, _), (text, _, _) in zip(query.sql, plans[query.name], strict=True):
                print(f"\n== {query.name}: {name}.sql\n{text}")
    return 0


async def plans_of(
    the_queries: list[Query], rng: random.Random
) -> dict[str, list[tuple[str, list[str], float]]]:
    sql = Queries.load()
    conn = await asyncpg.connect(DSN, server_settings={"search_path": SCHEMA})
    try:
        result = {}
        for query in the_queries:
            result[query.name] = [
                await explain(conn, getattr(sql, name), make(rng)) for name, make in query.sql
            ]
        return result
    finally:
        await conn.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="skip loading: the last run's data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="per query and round")
    parser.add_argument("--warmup", type=int, default=20, help="per query, before the rounds")
    parser.add_argument("--port", type=int, default=8399, help="of the API process")
    parser.add_argument("--schema", default=SCHEMA, help="dropped and loaded afresh")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="only the queries whose name holds this")
    parser.add_argument(
        "--write-cost",
        type=int,
        default=0,
        metavar="SAGAS",
        help="also measure what migration 0012 costs the hot path's writes, over SAGAS sagas",
    )
    parser.add_argument(
        "--no-plans", dest="plans", action="store_false", help="omit the plans' text"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
