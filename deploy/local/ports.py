"""Before `weft up` starts anything: is another `weft up` using this data folder, is each port free, and if not,
which process holds it. Each answer is one line a person can act on."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO


class Taken(Exception):
    """A port or the data folder is in use; the message is the one line to print."""


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR: a port with only TIME_WAIT leftovers is free to listen on; a listener still makes bind fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def holder(port: int) -> int | None:
    """The pid of a process listening on `port` (Linux /proc; None when it cannot be seen)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name)
        except OSError:
            continue
    return None


def describe(pid: int) -> str:
    """'pid 12 (postgres -D ...)', plus the `weft up` it belongs to when one of its ancestors is one."""
    text = f"pid {pid} ({cmdline(pid)[:80] or 'command unknown'})"
    ancestor = parent_pid(pid)
    while ancestor and ancestor > 1:
        if " up" in cmdline(ancestor) and ("weft" in cmdline(ancestor) or "cli" in cmdline(ancestor)):
            return text + f", started by weft up pid {ancestor}"
        ancestor = parent_pid(ancestor)
    return text


def check_ports(wanted: dict[str, int]) -> None:
    """Raise Taken naming the first port in use (label -> port, e.g. 'WEFT_PG_PORT, Postgres' -> 54320)."""
    for label, port in wanted.items():
        if not port_free(port):
            pid = holder(port)
            who = describe(pid) if pid else "a process this user cannot see"
            setting = label.split(",")[0].split("+")[0]
            raise Taken(f"port {port} ({label}) is taken by {who}; stop it, or set {setting} to a free port")


def lock_data_dir(data_dir: Path, api_port: int) -> IO[str]:
    """Hold `<data dir>/up.lock` for this process's lifetime (the kernel drops it when the process dies, even on
    kill -9); raise Taken when another `weft up` holds it. Keep the returned file open."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / "up.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        other, _, port = (lock.read().strip() + "  ").partition(" ")
        other, port = other or "unknown", port.strip() or "unknown"
        lock.close()
        raise Taken(f"weft up is already running with data in {data_dir} (pid {other}, API on port {port}); "
                    f"stop it first (Ctrl-C in its terminal, or kill {other})") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()} {api_port}")
    lock.flush()
    return lock
