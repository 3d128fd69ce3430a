"""Start-up: a service stopped while it starts ends at once; a service that starts while JetStream does not
answer waits for it instead of exiting (libs/runtime/service.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from deploy.local.embedded import EmbeddedNats, free_port, nats_server_binary
from deploy.local.lifetime import popen_tied
from deploy.local.stack import ServiceProcess, service_env, wait_http
from tests.conftest import migrated_database


def test_a_stop_signal_during_startup_ends_the_process_at_once(tmp_path):
    # Startup can wait on a dependency for a long time (here Postgres answers nothing: asyncpg waits up to its
    # 60 s connect timeout). uvicorn acts on SIGTERM only after startup; libs/runtime/service.serve exits at
    # once instead. The silent listener accepting the service's connection shows startup is under way (and
    # uvicorn's signal handlers installed) before the signal is sent.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    silent.settimeout(60)
    env = service_env(dict(os.environ), name="relay", port=free_port(),
                      database_url=f"postgresql://weft@127.0.0.1:{silent.getsockname()[1]}/weft",
                      nats_url=f"nats://127.0.0.1:{free_port()}")
    service = ServiceProcess("relay", "services.relay", env, tmp_path)
    service.start()
    try:
        held, _ = silent.accept()  # the service is in its startup, waiting on "Postgres"
        began = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        try:
            code = service.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM during startup did not end the service within 10 s")
        assert code == 128 + signal.SIGTERM and time.monotonic() - began < 10
        held.close()
    finally:
        service.kill()
        silent.close()



async def test_a_service_started_before_jetstream_answers_waits_for_it(infra, tmp_path):
    # nats-server without JetStream first: every JetStream API request (streams, the broker's consumers) gets
    # "no responders", as a cluster still electing its meta leader answers. The executor must keep trying and
    # become ready once JetStream is there (same port, now with JetStream), not exit.
    port = free_port()
    plain = popen_tied([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    service_port = free_port()
    env = service_env(dict(os.environ), name="executor", port=service_port,
                      database_url=await migrated_database(infra, "weft_startup"),
                      nats_url=f"nats://127.0.0.1:{port}")
    service = ServiceProcess("executor", "services.executor", env, tmp_path / "logs")
    jetstream = EmbeddedNats(tmp_path / "nats", port)
    service.start()
    log = tmp_path / "logs" / "executor.log"
    try:
        deadline = time.monotonic() + 60
        while "startup_jetstream_retry" not in (log.read_text() if log.exists() else ""):
            assert service.alive(), f"the service exited while JetStream did not answer:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the service never met the JetStream-less server"
            time.sleep(0.1)
        plain.kill()
        plain.wait()
        jetstream.start()
        wait_http(service_port, timeout=60)
        assert service.alive()
    finally:
        service.kill()
        plain.kill()
        if jetstream.proc is not None:
            jetstream.proc.kill()
