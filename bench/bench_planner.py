"""Planner overhead and plan-cache latency, each against a baseline measured in the same run.

    .venv/bin/python bench/bench_planner.py [--n 200] [--hits 50]

1. In process: a FakeOpenAI server on loopback answers every chat completion at once with a fixed good plan.
   --n `Planner.plan` calls (cache=None, real openai client) are interleaved with --n raw
   `AsyncOpenAI.chat.completions.create` calls carrying the same messages and response_format. Reported:
   p50/p99 of the planner's total latency, of its model_latency_ms, and of its own overhead
   (latency_ms - model_latency_ms: schema, JSON decode, validation, definition, hash), plus the raw call as
   the baseline and the ratio planner total / raw call.   Goal: overhead < 50 ms.
2. End to end over HTTP: Postgres and nats-server from the wheels (temporary directory), migrated; the
   gateway, planner and relay processes with WEFT_LLM_BASE_URL pointing at the fake. One
   POST /api/v2/workflows/parse (a cache miss: one model call), then --hits identical POSTs (cache hits),
   interleaved with GET /api/v2/workflows/health as the HTTP baseline.   Goal: hit p99 < 20 ms.
Everything started here is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.security.auth import issue_token  # noqa: E402
from bench.common import pct, start_services, stop_all, verdict  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from libs.events.migrate import migrate  # noqa: E402
from libs.events.settings import load_settings  # noqa: E402
from services.planner.llm import LLMClient  # noqa: E402
from services.planner.planning import Planner, allowed_tools, system_prompt  # noqa: E402
from services.planner.validation import plan_schema  # noqa: E402
from tests.fakes import openai_server  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, Reply  # noqa: E402

TENANT = "tbench"
MODEL = "gpt-bench"
TOOLS = ["agent", "email.send"]
GOAL = "Every Monday at 9am summarise the sales figures and email them to team@example.com"
PLAN = {
    "name": "Weekly sales summary",
    "description": "Summarise the sales figures and email them to the team",
    "confidence": 0.9,
    "schedule": "0 9 * * 1",
    "steps": [
        {"id": "s1", "action": "agent", "description": "Summarise", "input_from": None, "depends_on": [],
         "config": {"prompt": "Summarise ${inputs.text}"}},
        {"id": "s2", "action": "agent", "description": "Shorten", "input_from": "s1", "depends_on": [],
         "config": {"prompt": "Shorten this to five bullets: ${input}"}},
        {"id": "s3", "action": "email.send", "description": "Email the team", "input_from": "s2", "depends_on": [],
         "config": {"to": "team@example.com", "subject": "Weekly sales", "body": "${input}"}},
    ],
}
WARMUP = 10


def fake_nodelay() -> None:
    """Set TCP_NODELAY on the fake's accepted sockets (this process only; the fake itself is unchanged).

    The fake writes a response's headers and body as two segments; without TCP_NODELAY one keep-alive
    connection can settle into a Nagle / delayed-ACK stall of ~40 ms per call on loopback, which would be
    measured as model time and swamp everything else (see --fake-nagle)."""
    setup = openai_server._Handler.setup

    def nodelay_setup(handler) -> None:
        setup(handler)
        handler.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    openai_server._Handler.setup = nodelay_setup


def row(label: str, values: list[float]) -> str:
    return f"  {label:<44} p50 {pct(values, 50):8.2f} ms   p99 {pct(values, 99):8.2f} ms   (n={len(values)})"


# -- 1. planner overhead -----------------------------------------------------------------------------------


async def bench_overhead(fake: FakeOpenAI, n: int) -> None:
    from openai import AsyncOpenAI

    fake.requests.clear()
    llm = LLMClient(base_url=fake.base_url, api_key="x", model=MODEL, timeout_s=10.0)
    planner = Planner(llm, cache=None)
    raw = AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10.0)
    allowed = allowed_tools(TOOLS)
    messages = [{"role": "system", "content": system_prompt(allowed)},
                {"role": "user", "content": f"<goal>\n{GOAL}\n</goal>"}]
    response_format = {"type": "json_schema", "json_schema": {"name": "workflow_plan", "strict": True,
                                                              "schema": plan_schema(sorted(allowed))}}

    async def raw_call() -> float:
        started = time.perf_counter()
        response = await raw.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                                     response_format=response_format)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.choices[0].message.content
        return elapsed

    totals, model_ms, overhead, raw_ms = [], [], [], []
    try:
        for _ in range(WARMUP):
            await raw_call()
            await planner.plan(TENANT, GOAL, TOOLS)
        for _ in range(n):  # interleaved, so drift affects both alike
            raw_ms.append(await raw_call())
            result = await planner.plan(TENANT, GOAL, TOOLS)
            assert result.attempts == 1 and result.source == "ai-generated", result
            totals.append(result.latency_ms)
            model_ms.append(result.model_latency_ms)
            overhead.append(result.latency_ms - result.model_latency_ms)
    finally:
        await raw.close()
        await llm.close()
    assert len(fake.requests) == 2 * (n + WARMUP), len(fake.requests)

    print(f"1. Planner.plan against FakeOpenAI (instant replies, cache=None), {n} calls interleaved with {n} raw calls")
    print(row("raw openai client call (baseline)", raw_ms))
    print(row("Planner.plan total (latency_ms)", totals))
    print(row("  of which model call (model_latency_ms)", model_ms))
    print(row("  planner overhead (latency - model)", overhead))
    print(f"  ratio planner total / raw call             p50 {pct(totals, 50) / pct(raw_ms, 50):8.2f} x    "
          f"p99 {pct(totals, 99) / pct(raw_ms, 99):8.2f} x")
    print(f"  goal: overhead < 50 ms -> p99 {pct(overhead, 99):.2f} ms: {verdict(pct(overhead, 99) < 50)}")
    print()


# -- 2. cache hit over HTTP ------------------------------------------------------------------------------


def bench_cache_http(fake: FakeOpenAI, hits: int, root: Path) -> None:
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    nats = EmbeddedNats(root / "nats", free_port())
    procs: dict = {}
    ok = False
    try:
        t0 = time.perf_counter()
        pg.start()
        pg.create_database("weft_bench")
        nats.start()
        database_url = pg.dsn("weft_bench")
        asyncio.run(migrate(database_url))
        procs, ports = start_services(root, ["gateway", "planner", "relay"], database_url, nats.url, {
            "WEFT_LLM_BASE_URL": fake.base_url, "WEFT_LLM_API_KEY": "x", "WEFT_LLM_MODEL": MODEL,
            "WEFT_LOG_LEVEL": "warning"})
        startup_s = time.perf_counter() - t0

        token = issue_token(load_settings({}), TENANT, "bench")
        body = {"instruction": GOAL, "context": {"availableTools": TOOLS}}
        base_url = f"http://127.0.0.1:{ports['gateway']}"
        fake.requests.clear()
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:

            def parse() -> tuple[float, dict]:
                started = time.perf_counter()
                resp = client.post("/api/v2/workflows/parse", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                assert resp.status_code == 200, (resp.status_code, resp.text)
                return elapsed, resp.json()

            def health() -> float:
                started = time.perf_counter()
                resp = client.get("/api/v2/workflows/health")
                elapsed = (time.perf_counter() - started) * 1000
                assert resp.status_code == 200, (resp.status_code, resp.text)
                return elapsed

            for _ in range(WARMUP):
                health()
            miss_ms, miss = parse()
            assert miss["workflow"]["planner"]["cached"] is False, miss
            assert miss["workflow"]["source"] == "ai-generated", miss
            model_calls_after_miss = len(fake.requests)
            hit_ms, health_ms, server_ms = [], [], []
            for _ in range(hits):
                elapsed, payload = parse()
                assert payload["workflow"]["planner"]["cached"] is True, payload
                assert payload["workflow"]["planHash"] == miss["workflow"]["planHash"]
                hit_ms.append(elapsed)
                server_ms.append(float(payload["parseTimeMs"]))
                health_ms.append(health())
            assert len(fake.requests) == model_calls_after_miss == 1, len(fake.requests)

        print(f"2. POST /api/v2/workflows/parse end to end over HTTP (gateway + planner + relay, Postgres, NATS; "
              f"stack up in {startup_s:.1f} s)")
        print(f"  cache miss (one model call to the fake)      {miss_ms:8.2f} ms   "
              f"model requests: {model_calls_after_miss}")
        print(row("GET /api/v2/workflows/health (baseline)", health_ms))
        print(row("parse, cache hit (client-side)", hit_ms))
        print(row("parse, cache hit (gateway parseTimeMs)", server_ms))
        print(f"  ratio hit / health                          p50 {pct(hit_ms, 50) / pct(health_ms, 50):8.2f} x")
        print(f"  model requests during the {hits} hits: {len(fake.requests) - model_calls_after_miss}")
        print(f"  goal: cache hit < 20 ms -> p50 {pct(hit_ms, 50):.2f} ms, p99 {pct(hit_ms, 99):.2f} ms: "
              f"p50 {verdict(pct(hit_ms, 50) < 20)}, p99 {verdict(pct(hit_ms, 99) < 20)}")
        ok = True
    finally:
        stop_all(root, procs, nats, pg, ok)

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="Planner.plan calls (and raw calls) to time")
    parser.add_argument("--hits", type=int, default=50, help="cache-hit parse requests to time")
    parser.add_argument("--skip-http", action="store_true", help="only the in-process overhead part")
    parser.add_argument("--fake-nagle", action="store_true",
                        help="leave the fake's sockets as they are (shows the ~40 ms delayed-ACK stall)")
    args = parser.parse_args()
    if not args.fake_nagle:
        fake_nodelay()

    fake = FakeOpenAI()
    fake.responder = lambda request: Reply(json.dumps(PLAN), prompt_tokens=400, completion_tokens=150)
    root = Path(tempfile.mkdtemp(prefix="weft-bench-planner-"))
    fake.start()
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, fake sockets TCP_NODELAY: "
              f"{not args.fake_nagle}\n")
        asyncio.run(bench_overhead(fake, args.n))
        if not args.skip_http:
            bench_cache_http(fake, args.hits, root)
    finally:
        fake.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
