"""The peer: DBOS Transact running the same 3-step no-op workflow, on its own Postgres from the same wheel.

    .venv/bin/python -m bench.bench_dbos [--runs 400] [--idle-runs 200] [--levels 1,8,32,128] [--json]

`bench/bench_runs.py` runs this as a subprocess (DBOS is a process-wide singleton) and prints Weft/DBOS ratios.
DBOS is a library: the workflow runs in this process, each step's result checkpointed in Postgres (fsync on,
synchronous commit, as for Weft). Measured per level: runs/s (completed / wall time), p50/p99/max of one
workflow call (start -> result), and CPU per run of this process and of Postgres (postmaster and backends).
Needs the optional `bench` extra (`pip install -e .[bench]`, i.e. `dbos`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pct  # noqa: E402
from deploy.local.embedded import EmbeddedPostgres, free_port  # noqa: E402


def pg_cpu(postmaster: psutil.Process) -> float:
    t = postmaster.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in postmaster.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


async def measure(dsn: str, postmaster: psutil.Process, levels: list[int], runs: int, idle_runs: int) -> list[dict]:
    from dbos import DBOS

    DBOS(config={"name": "weft-bench-peer", "system_database_url": dsn, "log_level": "WARNING",
                 "sys_db_pool_size": 64})

    @DBOS.step()
    async def noop(value: int) -> int:
        return value

    @DBOS.workflow()
    async def three_noops(value: int) -> int:
        a = await noop(value)
        b = await noop(a)
        return await noop(b)

    DBOS.launch()
    try:
        for i in range(20):  # warm-up: connections, statement caches
            await three_noops(i)
        results = []
        for level in levels:
            count = idle_runs if level == 1 else runs
            latencies: list[float] = []
            todo = iter(range(count))

            async def worker() -> None:
                for i in todo:
                    began = time.perf_counter()
                    assert await three_noops(i) == i
                    latencies.append((time.perf_counter() - began) * 1000)

            cpu0, pg0, wall0 = own_cpu(), pg_cpu(postmaster), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(level)))
            wall = time.perf_counter() - wall0
            cpu, pg = own_cpu() - cpu0, pg_cpu(postmaster) - pg0
            done = len(latencies)
            results.append({
                "in_flight": level, "runs": done, "runs_per_s": done / wall,
                "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99), "max_ms": max(latencies),
                "cpu_ms_per_run": {"dbos (this process)": cpu / done * 1000, "postgres": pg / done * 1000},
            })
        return results
    finally:
        DBOS.destroy(destroy_registry=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=400, help="runs per concurrent level (default 400)")
    parser.add_argument("--idle-runs", type=int, default=200, help="runs at 1 in flight (default 200)")
    parser.add_argument("--levels", default="1,8,32,128", help="workflows in flight per level (default 1,8,32,128)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (for bench_runs.py)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="weft-bench-dbos-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", free_port(), Path(tmp) / "postgres.log")
        pg.start()
        try:
            pg.create_database("dbos_bench")
            results = asyncio.run(measure(pg.dsn("dbos_bench"), psutil.Process(pg.proc.pid), levels, args.runs,
                                          args.idle_runs))
        finally:
            pg.stop()
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_run"].items())
            print(f"DBOS {r['in_flight']:>4} in flight: {r['runs_per_s']:7.1f} runs/s  p50 {r['p50_ms']:6.2f} ms"
                  f"  p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:6.1f} ms  CPU/run ms: {cpu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
