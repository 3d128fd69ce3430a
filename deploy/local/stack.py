"""The embedded default: Postgres and nats-server from wheels, then every Weft process, supervised."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, stop_process
from deploy.local.lifetime import popen_tied
from deploy.local.locations import Locations, locations, write_record
from deploy.local.mailbox import MailWatcher
from deploy.local.ports import Taken, check_ports, lock_data_dir
from deploy.local.supervisor import Child, StopRequested, StopSignals, say, tick_forever
from libs.events.migrate import migrate

# name -> (python module, port offset from the gateway's port)
PROCESSES: dict[str, tuple[str, int]] = {
    "gateway": ("services.gateway", 0),
    "planner": ("services.planner", 1),
    "executor": ("services.executor", 2),
    "scheduler": ("services.scheduler", 3),
    "notifier": ("services.notifier", 4),
    "relay": ("services.relay", 5),
}


class ServiceProcess:
    """One Weft process (python -m module) with WEFT_* env; logs to a file."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path):
        self.name, self.module, self.env, self.log_dir = name, module, env, log_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Its own session: a terminal's Ctrl-C reaches only `weft up`, which stops the services before the servers
        # they use. Tied to its starter's lifetime: if that dies (even by kill -9), the service gets SIGTERM.
        with open(self.log_dir / f"{self.name}.log", "ab") as log:
            self.proc = popen_tied([sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=log,
                                   start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: a crash, for fault tests."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 25.0) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout)


def service_env(base: dict[str, str], *, name: str, port: int, database_url: str, nats_url: str) -> dict[str, str]:
    env = dict(base)
    env.update(
        WEFT_SERVICE=name, WEFT_PORT=str(port), WEFT_DATABASE_URL=database_url, WEFT_NATS_URL=nats_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_http(port: int, path: str = "/health/ready", timeout: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing ready on port {port}{path} within {timeout}s")


def _stop_all(procs: list[ServiceProcess], timeout: float = 25.0) -> None:
    """SIGTERM every service at once, then wait for all under one deadline; SIGKILL what is left."""
    for proc in procs:
        if proc.alive():
            proc.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        if proc.proc is None:
            continue
        try:
            proc.proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            say(f"{proc.name:<10} did not stop within {timeout:.0f}s: killed")
            proc.proc.kill()
            proc.proc.wait()


def _check_free(where: Locations, embedded_pg: bool, embedded_nats: bool) -> None:
    wanted = {f"WEFT_PORT+{offset}, {name}" if offset else "WEFT_PORT, gateway": where.api_port + offset
              for name, (_, offset) in PROCESSES.items()}
    if embedded_pg:
        wanted["WEFT_PG_PORT, Postgres"] = where.pg_port
    if embedded_nats:
        wanted["WEFT_NATS_PORT, nats-server"] = where.nats_port
    check_ports(wanted)


def up() -> int:
    """`weft up`: start everything, supervise it, stop it all on SIGINT, SIGTERM or SIGHUP (docs/decisions/0020)."""
    from libs.events.settings import load_settings
    from libs.security.auth import issue_token

    try:
        where = locations()
        database_url = os.environ.get("WEFT_DATABASE_URL")
        nats_url = os.environ.get("WEFT_NATS_URL")
        lock = lock_data_dir(where.data_dir, where.api_port)
        _check_free(where, not database_url, not nats_url)
    except (Taken, ValueError) as exc:
        print(f"weft up: {exc}", file=sys.stderr, flush=True)
        return 1

    signals = StopSignals()
    signals.install()
    code = 0
    pg = nats_server = None
    procs: list[ServiceProcess] = []
    try:
        children: list[Child] = []
        if not database_url:
            pg = EmbeddedPostgres(where.data_dir / "postgres", where.pg_port, where.data_dir / "postgres.log")
            pg.start()
            pg.create_database("weft")
            database_url = pg.dsn("weft")
            say(f"postgres   {database_url} (data in {pg.data_dir})")
            children.append(_child("postgres", pg, pg.start, str(pg.log_path)))
        if not nats_url:
            nats_server = EmbeddedNats(where.data_dir / "nats", where.nats_port)
            nats_server.start()
            nats_url = nats_server.url
            say(f"nats       {nats_url} (JetStream in {nats_server.data_dir})")
            children.append(_child("nats", nats_server, nats_server.start, str(nats_server.data_dir / "nats.log")))
        write_record(where, database_url=database_url, nats_url=nats_url)
        applied = asyncio.run(migrate(database_url))
        say(f"migrations {', '.join(applied) if applied else 'up to date'}")

        # Approval links in emails point at this gateway, and mail lands in the data folder, unless set.
        base_env = {"WEFT_PUBLIC_BASE_URL": f"http://127.0.0.1:{where.api_port}",
                    "WEFT_MAIL_SINK_DIR": str(where.mail_dir)} | os.environ.copy()
        # No outbound allow-list entry may open a port of this stack (docs/decisions/0054).
        platform = [where.api_port + offset for _, offset in PROCESSES.values()]
        platform += [nats_server.monitor_port] if nats_server is not None else []
        base_env.setdefault("WEFT_PLATFORM_PORTS", ",".join(map(str, platform)))
        for name, (module, offset) in PROCESSES.items():
            env = service_env(base_env, name=name, port=where.api_port + offset, database_url=database_url,
                              nats_url=nats_url)
            proc = ServiceProcess(name, module, env, where.data_dir / "logs")
            proc.start()
            procs.append(proc)
            children.append(_child(name, proc, proc.start, str(proc.log_dir / f"{name}.log")))
        for offset in sorted(offset for _, offset in PROCESSES.values()):
            wait_http(where.api_port + offset)
        settings = load_settings(base_env)
        email = "dev@localhost"
        say("")
        say(f"Weft is up:  http://127.0.0.1:{where.api_port}/api/v2/workflows/health")
        say(f"API          http://127.0.0.1:{where.api_port}")
        say(f"Dev token    {issue_token(settings, 'acme', 'dev', email=email)}")
        say(f"             (tenant acme, user dev, email {email}; `weft token --help` makes others)")
        from libs.security.signin_tokens import signin_url  # one-time: a second use is refused

        say(f"Dashboard    {signin_url(settings, f'http://127.0.0.1:{where.api_port}', 'acme', 'dev')}")
        say(f"Logs         {where.data_dir / 'logs'}")
        if settings.smtp_host:
            say(f"Mail         sent through {settings.smtp_host}:{settings.smtp_port}")
            mail = MailWatcher(None)
        else:
            folder = Path(settings.mail_sink_dir).resolve()
            say(f"Mail         {folder}   (no SMTP host: every email is a file there, summarised below;")
            say(f"             plan approvals for this token go to {email})")
            mail = MailWatcher(folder)
        say(f"Stop         Ctrl-C, or kill {os.getpid()}: stops everything this started")
        tick_forever(children, 0.25, mail.report)
    except StopRequested:
        pass
    except Exception as exc:  # noqa: BLE001 - one line, then the same cleanup as a stop signal
        detail = str(exc).strip().splitlines()[-1:] or [""]
        print(f"weft up: {type(exc).__name__}: {detail[0]}; see the logs in {where.data_dir}", file=sys.stderr,
              flush=True)
        code = 1
    finally:
        signals.received.append(0)  # from here on, every further signal is only noted (see StopSignals)
        say("\nstopping ...")
        _stop_all(procs)
        if nats_server:
            nats_server.stop(timeout=10.0)
        if pg:
            pg.stop(timeout=30.0)
        lock.close()
        say("stopped")
    return code


def _child(name: str, what, start, log: str) -> Child:
    return Child(name=name, start=start, alive=what.alive, log=log,
                 returncode=lambda: what.proc.returncode if what.proc else None,
                 pid=lambda: what.proc.pid if what.proc else None)
