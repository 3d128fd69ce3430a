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
        log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=log, start_new_session=True
        )

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


class MailWatcher:
    """Prints each message the local mail sink receives (approval emails with their links), so a person
    running `make up` can follow them without an SMTP server."""

    def __init__(self, settings) -> None:
        self.folder = None if settings.smtp_host else Path(settings.mail_sink_dir)
        self.seen = set(self.folder.glob("*.eml")) if self.folder and self.folder.is_dir() else set()

    def report(self) -> None:
        from libs.adapters.mail import sink_summary

        if self.folder is None or not self.folder.is_dir():
            return
        for path in sorted(set(self.folder.glob("*.eml")) - self.seen, key=lambda p: p.stat().st_mtime):
            self.seen.add(path)
            try:
                print(sink_summary(path), flush=True)
            except (OSError, ValueError) as exc:  # a file being replaced right now: say so, never stop the stack
                print(f"mail       {path} ({exc})")


def up() -> int:
    from libs.security.auth import issue_token
    from libs.events.settings import load_settings

    data_dir = Path(os.environ.get("WEFT_DATA_DIR", ".weft")).resolve()
    gateway_port = int(os.environ.get("WEFT_PORT", "8000"))
    database_url = os.environ.get("WEFT_DATABASE_URL")
    nats_url = os.environ.get("WEFT_NATS_URL")
    pg = nats_server = None
    if not database_url:
        pg = EmbeddedPostgres(data_dir / "postgres", int(os.environ.get("WEFT_PG_PORT", "54320")), data_dir / "postgres.log")
        pg.start()
        pg.create_database("weft")
        database_url = pg.dsn("weft")
        print(f"postgres   {database_url} (data in {pg.data_dir})")
    if not nats_url:
        nats_server = EmbeddedNats(data_dir / "nats", int(os.environ.get("WEFT_NATS_PORT", "42220")))
        nats_server.start()
        nats_url = nats_server.url
        print(f"nats       {nats_url} (JetStream in {nats_server.data_dir})")
    applied = asyncio.run(migrate(database_url))
    print(f"migrations {', '.join(applied) if applied else 'up to date'}")

    # Approval links in emails point at this gateway unless the deployment says otherwise.
    base_env = {"WEFT_PUBLIC_BASE_URL": f"http://127.0.0.1:{gateway_port}"} | os.environ.copy()
    procs = [
        ServiceProcess(
            name, module,
            service_env(base_env, name=name, port=gateway_port + offset, database_url=database_url,
                        nats_url=nats_url),
            data_dir / "logs",
        )
        for name, (module, offset) in PROCESSES.items()
    ]
    # Ctrl-C or SIGTERM at any phase unwinds through `finally`, which stops what was started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    restarts: dict[str, float] = {}
    try:
        for proc in procs:
            proc.start()
        for proc, (_, offset) in zip(procs, PROCESSES.values(), strict=True):
            wait_http(gateway_port + offset)
        settings = load_settings()
        print()
        print(f"Weft is up:  http://127.0.0.1:{gateway_port}/api/v2/workflows/health")
        print(f"API          http://127.0.0.1:{gateway_port}")
        print(f"Dev token    {issue_token(settings, 'acme', 'dev')}")
        from libs.security.signin_tokens import signin_url  # one-time: a second use is refused

        print(f"Dashboard    {signin_url(settings, f'http://127.0.0.1:{gateway_port}', 'acme', 'dev')}")
        print(f"Logs         {data_dir / 'logs'}   (Ctrl-C stops everything)")
        mail = MailWatcher(settings)
        if not settings.smtp_host:
            print(f"Mail         {Path(settings.mail_sink_dir).resolve()}   (no SMTP host: messages are files there)")
        while True:
            mail.report()
            for proc in procs:
                if not proc.alive() and time.monotonic() - restarts.get(proc.name, 0.0) > 5.0:
                    print(f"{proc.name} exited (code {proc.proc.returncode}); restarting, see its log")
                    restarts[proc.name] = time.monotonic()
                    proc.start()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping ...")
        for proc in reversed(procs):
            proc.stop()
        if nats_server:
            nats_server.stop()
        if pg:
            pg.stop()
        print("stopped")
    return 0
