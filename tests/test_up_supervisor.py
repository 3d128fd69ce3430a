"""`weft up` as a process supervisor (docs/decisions/0020): it restarts what crashes, stops everything on any stop
signal however it was started, leaves nothing behind when it is killed itself, and says what holds a taken port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.weft_up import Up, children, named_child, up_env, wait_gone


def _create_workflow(up: Up, token: str, timeout: float) -> None:
    """Poll until a workflow can be created: the gateway, NATS, the planner and Postgres all answer."""
    deadline, last = time.monotonic() + timeout, None
    with httpx.Client(base_url=up.api, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        while time.monotonic() < deadline:
            try:
                last = c.post("/api/v2/workflows", json={"name": f"w-{uuid.uuid4().hex[:8]}", "definition": {
                    "nodes": [{"id": "a", "type": "transform", "config": {"template": {"v": 1}}}]}})
                if last.status_code == 201:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.3)
    raise AssertionError(f"no workflow created within {timeout}s: {last!r}")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to `make up &`


def test_killed_postgres_and_nats_come_back_and_sigint_stops_a_background_start(tmp_path: Path):
    up = Up(up_env(tmp_path / "data"), preexec_fn=_ignore_sigint)
    try:
        token = up.token()
        seen = len(up.lines)
        os.kill(named_child(up.proc.pid, "postgres"), signal.SIGKILL)
        os.kill(named_child(up.proc.pid, "nats-server"), signal.SIGKILL)
        assert "killed by SIGKILL" in up.wait_for("postgres   exited", 10, seen)
        up.wait_for("nats       is back", 20, seen)
        up.wait_for("postgres   is back", 30, seen)
        _create_workflow(up, token, timeout=30)
        started = children(up.proc.pid)
    finally:
        code = up.stop(signal.SIGINT, timeout=60)
    assert code == 0, up.output
    assert wait_gone(started, 5) == []


def test_background_make_up_stops_on_sigterm_to_its_group_twice(tmp_path: Path):
    # `make up &` from a script: SIGINT ignored, make between the shell and weft up. A SIGTERM to the group
    # reaches make, which forwards its own SIGTERM to weft up while weft up is already cleaning up.
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"up:\n\t{sys.executable} -m cli up\n")
    up = Up(up_env(tmp_path / "data"), argv=["bash", "-c", f"make -s -f {makefile} up & wait"])
    up.token()
    weft = next(p for p in _descendants(up.proc.pid) if "cli up" in _cmdline(p))
    started = children(weft)
    assert len(started) == 8, started  # postgres, nats-server, six services
    os.killpg(up.proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    os.killpg(up.proc.pid, signal.SIGTERM)
    assert wait_gone([weft, *started], 45) == [], up.output
    assert "stopped" in up.output


def test_a_killed_supervisor_leaves_no_child_and_a_second_up_names_the_first(tmp_path: Path):
    env = up_env(tmp_path / "data")
    up = Up(env)
    up.token()
    second = subprocess.run([sys.executable, "-m", "cli", "up"], env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr, second.stderr
    assert (f"already running with data in {tmp_path / 'data'} (pid {up.proc.pid}, API on port {env['WEFT_PORT']})"
            in second.stderr)
    started = children(up.proc.pid)
    assert len(started) == 8, started
    up.proc.kill()
    assert wait_gone(started, 25) == [], [_cmdline(p) for p in started]


def test_a_taken_port_is_named_with_what_holds_it(tmp_path: Path):
    env = up_env(tmp_path / "data")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env["WEFT_PG_PORT"])))
        holder.listen()
        out = subprocess.run([sys.executable, "-m", "cli", "up"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"port {env['WEFT_PG_PORT']} (WEFT_PG_PORT, Postgres) is taken by pid {os.getpid()}" in out.stderr


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        kids = children(queue.pop())
        found += kids
        queue += kids
    return found


CHILD_OF_A_TEST_RUN = """
import asyncio, os, sys, time
from pathlib import Path
from deploy.local.embedded import EmbeddedNats, free_port
from deploy.local.stack import ServiceProcess, service_env
root = Path(sys.argv[1])
nats = EmbeddedNats(root / "nats", free_port())
nats.start()
env = service_env(dict(os.environ), name="notifier", port=free_port(), database_url=sys.argv[2], nats_url=nats.url)
notifier = ServiceProcess("notifier", "services.notifier", env, root / "logs")
asyncio.run(asyncio.to_thread(notifier.start))  # from a worker thread that then ends, as tests/test_faults.py does
print(nats.proc.pid, notifier.proc.pid, flush=True)
time.sleep(120)
"""


# Intermittent under the full suite's load (one failure in several full runs, cause not yet found):
# a second attempt, never a third. A deterministic regression still fails both.
@pytest.mark.flaky(reruns=1)
def test_processes_started_by_a_killed_test_run_exit_too(tmp_path: Path, infra):
    run = subprocess.Popen([sys.executable, "-c", CHILD_OF_A_TEST_RUN, str(tmp_path), infra.database_url],
                           stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in run.stdout.readline().split()]
        assert len(pids) == 2 and wait_gone(pids, 1.0) == pids, "both run while the test run does"
    finally:
        run.kill()  # kill -9, as a CI timeout or a second Ctrl-C does
        run.wait()
    assert wait_gone(pids, 25) == [], [_cmdline(p) for p in pids]


def test_a_postgres_lock_is_cleared_only_when_its_process_is_gone(tmp_path: Path):
    from deploy.local.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "pg", 5999)
    pg.data_dir.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process
    zombie = subprocess.Popen(["true"])
    wait_gone([zombie.pid], 5)  # exited, not reaped: a zombie still holds its pid
    for pid, kept in ((os.getpid(), True), (gone.pid, False), (zombie.pid, False)):
        locks = [pg.data_dir / "postmaster.pid", pg.data_dir / ".s.PGSQL.5999.lock"]
        for lock in locks:
            lock.write_text(f"{pid}\n{pg.data_dir}\n")
        assert pg.clear_stale_locks() == ([] if kept else locks), pid
        assert all(lock.exists() == kept for lock in locks)
    zombie.wait()
