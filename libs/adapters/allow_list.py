"""Which non-public outbound destinations a deployment allows: WEFT_OUTBOUND_ALLOW_HOSTS, parsed, and the
platform ports no entry ever opens (docs/decisions/0054). The guarded client (outbound.py) asks it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from libs.events.settings import Settings

DEFAULT_PORTS = frozenset({80, 443})


@dataclass(frozen=True)
class AllowList:
    """settings.outbound_allow_hosts, parsed (docs/decisions/0054): which non-public destinations are allowed.

    `host` allows its default ports (80, 443) only, `host:port` that port, `host:*` any port; IPv6 as
    `[addr]:port`. No entry ever opens a platform port: this service's own, the database's, NATS's, and
    settings.platform_ports (what `weft up` and a deployment list: every Weft service and data store)."""

    ports: dict[str, frozenset[int] | None]  # host or IP -> allowed ports; None = any port
    platform_ports: frozenset[int]

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowList:
        ports: dict[str, frozenset[int] | None] = {}
        for raw in settings.outbound_allow_hosts.split(","):
            host, port = _split_entry(raw.strip().lower())
            if not host:
                continue
            known = ports.get(host, frozenset())
            ports[host] = None if port is None or known is None else known | port
        return cls(ports=ports, platform_ports=platform_ports(settings))

    def allows(self, host: str, port: int) -> bool:
        if host not in self.ports or port in self.platform_ports:
            return False
        allowed = self.ports[host]
        return allowed is None or port in allowed

    def why_not(self, host: str, port: int) -> str:
        if port in self.platform_ports:
            return f"port {port} is a platform port, never reachable through the allow-list"
        allowed = self.ports.get(host)
        if host in self.ports and allowed is not None:
            return f"{host} is allow-listed for port(s) {', '.join(map(str, sorted(allowed)))} only"
        return "only public addresses are allowed unless the host is in outbound_allow_hosts"


def _split_entry(entry: str) -> tuple[str, frozenset[int] | None]:
    """'host' -> default ports; 'host:443' -> {443}; 'host:*' -> any (None); '[::1]:8080'; a bare IPv6."""
    if not entry:
        return "", frozenset()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:  # a host name, an IPv4 address or a bare IPv6 address
        host, port = entry, ""
    host = host.rstrip(".")
    if not port:
        return host, DEFAULT_PORTS
    if port == "*":
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"outbound_allow_hosts: {entry!r} has no valid port")
    return host, frozenset({int(port)})


def platform_ports(settings: Settings) -> frozenset[int]:
    found = {settings.port}
    for url, default in ((settings.database_url, 5432), *((u, 4222) for u in settings.nats_url.split(","))):
        try:
            found.add(urlsplit(url.strip()).port or default)
        except ValueError:
            pass
    found.update(int(p) for p in settings.platform_ports.replace(" ", "").split(",") if p.isdigit())
    return frozenset(found)
