#!/usr/bin/env python3
"""Engine vs yardstick, in one run on one machine: R interleaved rounds of each, two settings.

For every round and setting it runs, as subprocesses with the same interpreter, one round of
the yardstick (``bench_saga.py --runs 1``, run as it is) and one round of the engine
(``bench_engine.py --rounds 1``), swapping which goes first every round so that drift on a
noisy machine hits both sides alike. It then prints, per setting, the medians of each side,
the ratio of the medians (engine / yardstick) and the median of the per-round ratios, and
writes every JSON line, tagged with setting, round and side, to a results file (``/tmp`` by
default).

Settings (the yardstick README's two standard ones):
  throughput   --concurrency 100 --sagas N --warmup W   (N=1000, W=200 by default)
  latency      --concurrency 1 --sagas 300 --warmup 50

  python bench/compare.py                    # 3 rounds of each setting, ~5-10 minutes
  python bench/compare.py --rounds 5 --settings throughput
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ENGINE = HERE / "bench_engine.py"
YARDSTICK = Path(__file__).resolve().parents[2] / "shared" / "bench" / "bench_saga.py"
"""The shared yardstick, beside the project root (``../shared/bench``)."""
SIDES = ("yardstick", "engine")


def _at(*path: str) -> Callable[[dict[str, Any]], float]:
    def get(record: dict[str, Any]) -> float:
        current: Any = record
        for key in path:
            current = current[key]
        return float(current)

    return get


def _cpu_ms_per_saga(record: dict[str, Any]) -> float:
    return 1000.0 * float(record["proc_cpu_util"]) / float(record["sagas_per_s"])


# Label and how to read it from a tagged record. The *_cpu_ms_per_saga of the services are
# sampled by this script around the whole subprocess (setup and warmup included, divided by
# all sagas run), so they also catch whatever else uses the shared Postgres and RabbitMQ.
METRICS: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
    ("sagas/s", _at("sagas_per_s")),
    ("saga p50 ms", _at("saga_latency", "p50_ms")),
    ("saga p99 ms", _at("saga_latency", "p99_ms")),
    ("step p50 ms", _at("step_latency", "p50_ms")),
    ("step p99 ms", _at("step_latency", "p99_ms")),
    ("cpu util", _at("proc_cpu_util")),
    ("cpu ms/saga", _cpu_ms_per_saga),
    ("pg ms/saga", _at("services", "postgres_cpu_ms_per_saga")),
    ("rabbit ms/saga", _at("services", "rabbitmq_cpu_ms_per_saga")),
    ("rss MiB", _at("rss_mib_end")),
]
SERVICES = {"postgres": "postgres", "beam.smp": "rabbitmq"}
STEP_SEGMENTS = ("relay_to_adapter", "adapter", "reply_to_load", "load", "decide", "commit")


def service_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the Postgres and RabbitMQ processes (reaped children too)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(SERVICES.values(), 0.0)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = SERVICES.get(stat[stat.index("(") + 1 : stat.rindex(")")])
        if name is not None:
            # utime, stime, cutime, cstime: a backend that exits is counted in its parent's
            # cutime/cstime once reaped, so the sum over live processes loses nothing.
            fields = stat[stat.rindex(")") + 2 :].split()
            used[name] += sum(int(v) for v in fields[11:15]) / ticks
    return used


def setting_args(name: str, sagas: int, warmup: int) -> list[str]:
    if name == "throughput":
        return ["--concurrency", "100", "--sagas", str(sagas), "--warmup", str(warmup)]
    if name == "latency":
        return ["--concurrency", "1", "--sagas", "300", "--warmup", "50"]
    raise ValueError(name)


def command(side: str, python: str, yardstick: Path, args: list[str]) -> list[str]:
    if side == "yardstick":
        return [python, str(yardstick), "--runs", "1", "--loop", "uvloop", *args]
    return [python, str(ENGINE), "--rounds", "1", "--loop", "uvloop", *args]


def run_one(cmd: list[str], attempts: int = 2) -> dict[str, Any]:
    """The last JSON line a benchmark printed; retried once if it failed (shared services)."""
    for attempt in range(1, attempts + 1):
        # Our own fixed argv (this interpreter and the two bench scripts), no shell.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode == 0 and lines:
            record: dict[str, Any] = json.loads(lines[-1])
            return record
        print(
            f"  attempt {attempt} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
            file=sys.stderr,
        )
    raise RuntimeError(f"benchmark failed: {' '.join(cmd)}")


def measure(cmd: list[str]) -> dict[str, Any]:
    """One benchmark round, with the services' CPU per saga (warmup sagas included) added."""
    before = service_cpu_seconds()
    record = run_one(cmd)
    after = service_cpu_seconds()
    sagas = int(record["sagas"]) + int(cmd[cmd.index("--warmup") + 1])
    record["services"] = {
        f"{name}_cpu_ms_per_saga": round(1000.0 * (after[name] - before[name]) / sagas, 3)
        for name in before
    }
    return record


def report(setting: str, results: dict[str, list[dict[str, Any]]]) -> str:
    ys, es = results["yardstick"], results["engine"]
    lines = [
        f"\n## {setting}: {len(ys)} rounds each",
        f"{'metric':<14} {'yardstick':>10} {'engine':>10} {'eng/yard':>9} {'paired':>8}"
        "   rounds (yardstick | engine)",
    ]
    for label, get in METRICS:
        y = [get(r) for r in ys]
        e = [get(r) for r in es]
        my, me = statistics.median(y), statistics.median(e)
        ratio = me / my if my else float("nan")
        paired = statistics.median(b / a for a, b in zip(y, e, strict=True) if a)
        lines.append(
            f"{label:<14} {my:>10.2f} {me:>10.2f} {ratio:>8.2f}x {paired:>7.2f}x"
            f"   {[round(v, 1) for v in y]} | {[round(v, 1) for v in e]}"
        )
    breakdown = [r["step_breakdown"] for r in es if "step_breakdown" in r]
    if breakdown:
        parts = [
            f"{name} {statistics.median(b[name]['p50_ms'] for b in breakdown):.2f}"
            for name in STEP_SEGMENTS
            if name in breakdown[0]
        ]
        lines.append("engine step breakdown, median of p50s, ms: " + " | ".join(parts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sagas", type=int, default=1000, help="measured sagas, throughput")
    parser.add_argument("--warmup", type=int, default=200, help="warmup sagas, throughput")
    parser.add_argument("--settings", default="throughput,latency")
    parser.add_argument("--python", default=sys.executable, help="interpreter for both sides")
    parser.add_argument("--yardstick", type=Path, default=YARDSTICK)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / time.strftime("bench_compare_%Y%m%d_%H%M%S.jsonl"),
    )
    args = parser.parse_args()

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {side: [] for side in SIDES} for s in settings
    }
    started = time.monotonic()
    with args.out.open("w") as out:
        for number in range(args.rounds):
            for setting in settings:
                order = SIDES if number % 2 == 0 else SIDES[::-1]
                for side in order:
                    cmd = command(
                        side,
                        args.python,
                        args.yardstick,
                        setting_args(setting, args.sagas, args.warmup),
                    )
                    t0 = time.monotonic()
                    record = measure(cmd)
                    record.update({"setting": setting, "round": number, "side": side})
                    out.write(json.dumps(record, sort_keys=True) + "\n")
                    out.flush()
                    results[setting][side].append(record)
                    print(
                        f"round {number} {setting:<10} {side:<9} {record['sagas_per_s']:>7.1f}"
                        f" sagas/s  saga p50 {record['saga_latency']['p50_ms']:>8.1f} ms"
                        f"  ({time.monotonic() - t0:.0f}s)",
                        file=sys.stderr,
                        flush=True,
                    )

    print(
        f"# engine vs yardstick, medians of interleaved rounds; {args.python};"
        f" total {time.monotonic() - started:.0f}s"
    )
    print("# eng/yard = median(engine) / median(yardstick); paired = median of per-round ratios")
    for setting in settings:
        print(report(setting, results[setting]))
    print(f"\nJSON lines: {args.out}")
    print(args.out.read_text(), end="")


if __name__ == "__main__":
    main()
