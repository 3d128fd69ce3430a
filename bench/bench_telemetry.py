"""What metrics and tracing cost the run path: CPU per run with telemetry off vs on, as a ratio in one run.

    .venv/bin/python bench/bench_telemetry.py [--runs 300] [--inflight 16] [--rounds 3]

One Postgres (fsync on) and one nats-server (JetStream) from the wheels, in a temporary directory. Then, in
alternating rounds (off, on, off, on, ...), the gateway, planner, executor and relay are started with:
  off  WEFT_METRICS_ENABLED=false and no WEFT_OTEL_ENDPOINT (no SDK: the API's no-op tracer)
  on   metrics on, and the OpenTelemetry SDK installed (WEFT_OTEL_ENDPOINT set) with
       WEFT_TRACE_SAMPLE_RATIO=0: every span is created, not sampled, and its trace context still travels
       in NATS headers and event metadata; nothing is exported
and --runs runs of a 3-step no-op workflow go through POST /api/v2/workflows/{id}/execute with --inflight
in flight, each waited for until its RunCompleted is seen on NATS. Measured per round: CPU seconds
(user + system, psutil) of the four service processes, and of all processes (plus Postgres and
nats-server), divided by the runs completed. Reported: the median per configuration and on/off ratios;
the goal is under 1.05 for the service processes. Rounds alternate (off-on, on-off, ...) so that drift
in the machine's load (other engineers' tests share its cores) hits both configurations alike. Then the
run path's telemetry calls are timed alone, in a process per configuration: less exposed to that noise.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import start_services, stop_all, verdict  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402
from libs.security.auth import issue_token  # noqa: E402

SERVICES = ["gateway", "planner", "executor", "relay"]
TENANT = "tbenchtel"
DEFINITION = {"nodes": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop", "input_from": "a"},
                        {"id": "c", "type": "noop", "input_from": "b"}], "concurrency": "unlimited"}
CONFIGS = {
    "off": {"WEFT_METRICS_ENABLED": "false"},
    # Port 9 (discard): with a sample ratio of 0 nothing is exported, so nothing is ever sent there.
    "on": {"WEFT_METRICS_ENABLED": "true", "WEFT_OTEL_ENDPOINT": "http://127.0.0.1:9", "WEFT_TRACE_SAMPLE_RATIO": "0"},
}
GOAL_RATIO = 1.05


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def postgres_and_nats(pg_pid: int, nats_pid: int) -> list[psutil.Process]:
    pg = psutil.Process(pg_pid)
    return [pg, *pg.children(recursive=True), psutil.Process(nats_pid)]


async def drive(port: int, nats_url: str, runs: int, inflight: int, workflow_id: str | None) -> tuple[str, int, float]:
    """Submit `runs` runs, `inflight` at a time, each waited for; (workflow id, runs completed, seconds)."""
    token = issue_token(load_settings({}), TENANT, "bench")
    nc = await nats.connect(nats_url)
    done: dict[str, asyncio.Future] = {}
    loop = asyncio.get_running_loop()

    async def on_completed(msg) -> None:
        future = done.setdefault(msg.subject.split(".")[4], loop.create_future())
        if not future.done():
            future.set_result(None)

    await nc.subscribe(f"weft.evt.{TENANT}.run.*.RunCompleted", cb=on_completed)
    completed = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"},
                                 limits=httpx.Limits(max_keepalive_connections=inflight)) as client:
        if workflow_id is None:
            r = await client.post("/api/v2/workflows", json={"name": "bench telemetry", "definition": DEFINITION})
            assert r.status_code == 201, r.text
            workflow_id = r.json()["workflow"]["id"]
        remaining = runs
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal remaining, completed
            while remaining > 0:
                remaining -= 1
                r = await client.post(f"/api/v2/workflows/{workflow_id}/execute", json={})
                if r.status_code != 201:
                    print(f"  HTTP {r.status_code}: {r.text[:200]}", flush=True)
                    continue
                future = done.setdefault(r.json()["run"]["id"], loop.create_future())
                try:
                    await asyncio.wait_for(future, 30)
                    completed += 1
                except TimeoutError:
                    print("  a run did not complete within 30 s", flush=True)

        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.perf_counter() - started
    await nc.close()
    return workflow_id, completed, elapsed


def telemetry_us_per_run(mode: str, n: int = 4000) -> float:
    """In this process: the telemetry work one run of the bench's workflow does on its path, in CPU
    microseconds (the real middleware and helpers, around no-op work): the gateway's request (middleware,
    metric, span, trace header on the command), the executor's command span and metrics, the traceparent
    put in the events' metadata, three step spans with their histogram, and the run counters over the run's
    events. mode "on": SDK installed, sampling off, metrics on; "off": as CONFIGS["off"]. The difference of
    the two is what telemetry adds."""
    from libs.events.aggregate import metadata_for
    from libs.events.schemas import CommandEnvelope
    from libs.runtime.http_telemetry import HttpTelemetry
    from libs.telemetry import metrics
    from libs.telemetry.tracing import SpanKind, configure_tracing, context_from, inject, traced
    from services.executor.run_metrics import count_run_events

    if mode == "on":
        configure_tracing("bench", CONFIGS["on"]["WEFT_OTEL_ENDPOINT"], 0.0)
    else:
        metrics.disable()
    envelope = CommandEnvelope(command_id=uuid.uuid4(), tenant_id=TENANT, actor="bench", correlation_id="c",
                               command=None, issued_at=datetime.now(UTC))
    types = ["RunCreated", "RunStarted", "StepStarted", "StepCompleted"] * 2 + ["RunCompleted"]
    sent: dict[str, str] = {}

    async def app(scope, receive, send) -> None:  # the handler: publishes the command
        sent.update(inject({"Nats-Msg-Id": "x"}))
        scope["path_template"] = "/api/v2/workflows/{workflow_id}/execute"
        await send({"type": "http.response.start", "status": 201, "headers": []})

    async def noop_send(_message) -> None:
        return None

    middleware = HttpTelemetry(app, log_requests=False)
    scope = {"type": "http", "method": "POST", "path": "/api/v2/workflows/x/execute",
             "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer x")]}

    async def one_run() -> None:
        await middleware(dict(scope), None, noop_send)
        with traced("command StartRun", context=context_from(sent), kind=SpanKind.CONSUMER):
            metadata_for(envelope)
            for _ in range(3):
                with traced("step noop"):
                    metrics.labelled(metrics.STEP_LATENCY, "noop", "ok").observe(0.0001)
            metrics.labelled(metrics.COMMANDS, "StartRun", "ok").inc()
            metrics.labelled(metrics.COMMAND_LATENCY, "StartRun").observe(0.002)
            count_run_events(types)

    async def timed() -> float:
        for _ in range(200):
            await one_run()
        started = time.process_time()
        for _ in range(n):
            await one_run()
        return (time.process_time() - started) / n * 1e6

    return asyncio.run(timed())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="runs per round (default 300)")
    parser.add_argument("--inflight", type=int, default=16, help="runs in flight (default 16)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per configuration, alternating (default 6)")
    parser.add_argument("--warmup", type=int, default=60, help="unmeasured runs after each start (default 60)")
    parser.add_argument("--micro", choices=list(CONFIGS), help=argparse.SUPPRESS)  # one in-process timing, printed
    args = parser.parse_args()
    if args.micro:
        print(min(telemetry_us_per_run(args.micro) for _ in range(5)))
        return 0

    root = Path(tempfile.mkdtemp(prefix="weft-bench-telemetry-"))
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    nats_srv = EmbeddedNats(root / "nats", free_port())
    procs: dict = {}
    ok = False
    cores = psutil.cpu_count() or 1
    print(f"python {sys.version.split()[0]}, {cores} CPUs; machine busy before starting: "
          f"{psutil.cpu_percent(interval=1.0):.0f}%")
    per_run: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONFIGS}
    try:
        pg.start()
        pg.create_database("weft_bench")
        nats_srv.start()
        dsn = pg.dsn("weft_bench")
        asyncio.run(migrate(dsn))
        workflow_id = None
        for round_no in range(args.rounds):
            # off-on, then on-off: whatever drifts within a round (the tables and streams grow, the machine's
            # other load comes and goes) favours neither configuration.
            for name in (list(CONFIGS) if round_no % 2 == 0 else list(reversed(CONFIGS))):
                env = CONFIGS[name]
                procs, ports = start_services(root, SERVICES, dsn, nats_srv.url, env | {
                    "WEFT_V2_RATE_LIMIT_PER_MINUTE": "10000000", "WEFT_MAIL_SINK_DIR": str(root / "mail")})
                workflow_id, _, _ = asyncio.run(drive(ports["gateway"], nats_srv.url, args.warmup, args.inflight,
                                                      workflow_id))
                services = [psutil.Process(p.proc.pid) for p in procs.values()]
                others = postgres_and_nats(pg.proc.pid, nats_srv.proc.pid)
                time.sleep(0.5)
                each0 = {n: cpu_seconds([proc]) for n, proc in zip(procs, services, strict=True)}
                svc0, all0 = cpu_seconds(services), cpu_seconds(services + others)
                _, completed, elapsed = asyncio.run(drive(ports["gateway"], nats_srv.url, args.runs, args.inflight,
                                                          workflow_id))
                svc1, all1 = cpu_seconds(services), cpu_seconds(services + postgres_and_nats(pg.proc.pid,
                                                                                            nats_srv.proc.pid))
                each = {n: (cpu_seconds([proc]) - each0[n]) / completed * 1000
                        for n, proc in zip(procs, services, strict=True)}
                for proc in reversed(list(procs.values())):
                    proc.stop()
                procs = {}
                svc_ms, all_ms = (svc1 - svc0) / completed * 1000, (all1 - all0) / completed * 1000
                per_run[name].append((svc_ms, all_ms, completed / elapsed))
                print(f"round {round_no + 1} {name:>3}: {completed} runs, {completed / elapsed:6.1f} runs/s, CPU per run "
                      f"{svc_ms:6.2f} ms in the services, {all_ms:6.2f} ms in all processes ("
                      + ", ".join(f"{n} {ms:.2f}" for n, ms in each.items()) + ")", flush=True)
        med = {name: [statistics.median(r[i] for r in rows) for i in range(3)] for name, rows in per_run.items()}
        # Each round's on/off ratio: the two ran back to back, so the machine's drift between rounds cancels.
        paired = [on[0] / off[0] for on, off in zip(per_run["on"], per_run["off"], strict=True)]
        svc_ratio, all_ratio = med["on"][0] / med["off"][0], med["on"][1] / med["off"][1]
        print(f"\nmedian CPU per run, off -> on: services {med['off'][0]:.2f} -> {med['on'][0]:.2f} ms "
              f"(ratio {svc_ratio:.3f}), all processes {med['off'][1]:.2f} -> {med['on'][1]:.2f} ms "
              f"(ratio {all_ratio:.3f}); runs/s {med['off'][2]:.1f} -> {med['on'][2]:.1f}")
        print("per-round on/off ratios (services): " + ", ".join(f"{r:.3f}" for r in paired)
              + f"; median {statistics.median(paired):.3f}")
        print(f"goal: metrics and tracing (sampling off) add under {GOAL_RATIO - 1:.0%} CPU per run in the "
              f"services: {verdict(statistics.median(paired) < GOAL_RATIO)} (median per-round ratio)")
        # The same calls timed in a process of their own, each configuration in turn (fresh interpreters:
        # the SDK cannot be uninstalled): less exposed to the machine's noise than whole runs.
        micro = {mode: float(subprocess.run([sys.executable, __file__, "--micro", mode], capture_output=True,
                                            text=True, check=True, timeout=300).stdout.split()[-1])
                 for mode in CONFIGS}
        added = micro["on"] - micro["off"]
        share = added / (med["off"][0] * 1000)
        print(f"\nthe run path's telemetry calls timed alone (best of 5 x 4000): {micro['off']:.0f} us per run "
              f"off, {micro['on']:.0f} us on: {added:.0f} us added, {share:.1%} of the services' CPU per run "
              f"(off) above: {verdict(share < GOAL_RATIO - 1)}")
        ok = True
    finally:
        stop_all(root, procs, nats_srv, pg, ok)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
