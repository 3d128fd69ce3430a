"""The one guarded outbound HTTP client: public addresses only, pinned connections, no redirects, bounded."""

from __future__ import annotations

import asyncio
import ipaddress
import json as jsonlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from libs.adapters.allow_list import AllowList
from libs.events.settings import Settings
from libs.telemetry.tracing import SpanKind, traced

__all__ = ["AllowList", "GuardedHttpClient", "OutboundError", "OutboundResponse", "Resolver", "blocked_reason",
           "check_destination", "system_resolver"]

# (host, port) -> the addresses the host resolves to, as IP strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(Exception):
    """The request did not produce a response we accept. Connect errors and timeouts are retryable; a
    blocked address, a bad URL or an oversize response are not."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    elapsed_ms: float

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def is_json(self) -> bool:
        ctype = self.content_type
        return ctype == "application/json" or ctype.endswith("+json")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (both families)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# Names of cloud metadata services (their addresses are link-local and refused anyway, but a webhook checked
# at creation where the name does not resolve would otherwise pass).
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.internal", "metadata.tencentyun.com"})
# Ranges the ipaddress flags let through that are never a public destination: IPv6 site-local (deprecated,
# still routed inside some networks) and the 6to4 relay anycast prefix (RFC 7526).
_ALSO_BLOCKED = ((ipaddress.ip_network("fec0::/10"), "site-local"),
                 (ipaddress.ip_network("192.88.99.0/24"), "6to4-relay-anycast"))


def blocked_reason(ip: IPAddress) -> str | None:
    """Why a connection to ip is refused (None: a public address)."""
    for network, name in _ALSO_BLOCKED:
        if ip.version == network.version and ip in network:
            return name
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address can carry an IPv4 one (mapped, 6to4, Teredo); judge what it really reaches.
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        for inner in embedded:
            if inner is not None and (reason := blocked_reason(inner)):
                return f"embeds {inner}: {reason}"
    for flag in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved", "is_private"):
        if getattr(ip, flag):
            return flag.removeprefix("is_").replace("_", "-")
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT): neither private nor public
        return "not-global"
    return None


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None


class GuardedHttpClient:
    """Outbound HTTP for executor steps and webhooks (DESIGN 6).

    Each request: http(s) only; the host is resolved once and every address must be public unless the host
    or the address is in settings.outbound_allow_hosts; the connection goes to the checked address (so a
    second, rebinding DNS answer is never used); redirects are returned, not followed; the whole request is
    bounded by settings.outbound_timeout_s and the body by settings.outbound_max_bytes.
    """

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.resolver = resolver or system_resolver
        self.allow = AllowList.from_settings(settings)
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # an HTTP(S)_PROXY from the environment would connect to a host we did not check
            timeout=httpx.Timeout(settings.outbound_timeout_s),
            # No keep-alive: the pool keys connections by IP, so a TLS connection made for one host name could
            # otherwise carry a request for another name on the same address.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> GuardedHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, json: Any = None,
                      content: bytes | str | None = None, timeout: float | None = None) -> OutboundResponse:
        """Send one request through the guard; raise OutboundError instead of any transport error."""
        limit = self.settings.outbound_timeout_s if timeout is None else min(timeout, self.settings.outbound_timeout_s)
        started = time.monotonic()
        # A client span per call (scheme, host and port only: paths and queries may carry secrets); no trace header is sent
        # to the receiver, which is outside Weft.
        with traced(f"{method} outbound", kind=SpanKind.CLIENT) as span:
            if span.is_recording():
                span.set_attributes({"http.request.method": method, "url.full": _safe_url(url)})
            try:
                async with asyncio.timeout(limit):
                    response = await self._request(method, url, headers, json, content, started)
            except TimeoutError:
                raise OutboundError(f"{method} {_safe_url(url)} timed out after {limit:g}s", retryable=True) from None
            if span.is_recording():
                span.set_attribute("http.response.status_code", response.status)
            return response

    async def _request(self, method: str, url: str, headers: dict[str, str] | None, json: Any,
                       content: bytes | str | None, started: float) -> OutboundResponse:
        target, host_header, sni = await self._pinned(url)
        send_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
        send_headers["Host"] = host_header
        extensions = {"sni_hostname": sni} if sni else {}
        try:
            request = self._client.build_request(method, target, headers=send_headers, json=json, content=content,
                                                 extensions=extensions)
        except (TypeError, ValueError) as exc:  # unserialisable body, non-ASCII header value, ...
            raise OutboundError(f"{method} {_safe_url(url)}: cannot build the request: {exc}") from None
        try:
            response = await self._client.send(request, stream=True)
        except httpx.LocalProtocolError as exc:  # what we would send is malformed: retrying cannot help
            raise OutboundError(f"{method} {_safe_url(url)}: invalid request: {exc}") from exc
        except httpx.TransportError as exc:  # connect, read, write, protocol errors: the other side or the path
            raise OutboundError(f"{method} {_safe_url(url)} failed: {type(exc).__name__}: {exc}", retryable=True) from exc
        try:
            body = await self._read_capped(response, method, url)
        finally:
            await response.aclose()
        return OutboundResponse(status=response.status_code, headers=dict(response.headers), body=body,
                                elapsed_ms=round((time.monotonic() - started) * 1000, 3))

    async def _pinned(self, url: str) -> tuple[httpx.URL, str, str | None]:
        """(the URL with its host replaced by a checked IP, the Host header, the TLS server name)."""
        parsed, host, addresses, literal = await _checked(url, self.allow, self.resolver)
        pinned = parsed.copy_with(host=str(addresses[0]))
        host_header = parsed.netloc.decode("ascii").rsplit("@", 1)[-1]  # host[:port] as the URL gave it
        sni = host if parsed.scheme == "https" and literal is None else None
        return pinned, host_header, sni

    async def _read_capped(self, response: httpx.Response, method: str, url: str) -> bytes:
        cap = self.settings.outbound_max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise OutboundError(f"{method} {_safe_url(url)}: response too large ({declared} bytes > {cap})")
        chunks, size = [], 0
        try:
            async for chunk in response.aiter_bytes():  # decoded bytes, so a compressed bomb is cut too
                size += len(chunk)
                if size > cap:
                    raise OutboundError(f"{method} {_safe_url(url)}: response too large (over {cap} bytes)")
                chunks.append(chunk)
        except httpx.TransportError as exc:
            raise OutboundError(f"{method} {_safe_url(url)} failed reading the response: {exc}", retryable=True) from exc
        return b"".join(chunks)


async def _checked(url: str, allow: AllowList, resolver: Resolver
                   ) -> tuple[httpx.URL, str, list[IPAddress], IPAddress | None]:
    """(the parsed URL, its host, every address it resolves to, the literal IP if it is one), or OutboundError
    when any address is not allowed."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise OutboundError(f"invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise OutboundError(f"URL scheme {parsed.scheme!r} is not allowed: only http and https")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")  # IDNA names in their ASCII form
    if not host:
        raise OutboundError(f"URL {url!r} has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if host in METADATA_HOSTS and not allow.allows(host, port):  # refused even where the name does not resolve
        raise OutboundError(f"blocked: {host} is a cloud metadata service; {allow.why_not(host, port)}")
    literal = _parse_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ip for a in await resolver(host, port) if (ip := _parse_ip(a)) is not None]
        except OSError as exc:
            raise OutboundError(f"cannot resolve {host!r}: {exc}", retryable=True) from None
        if not addresses:
            raise OutboundError(f"cannot resolve {host!r}: no addresses", retryable=True)
    # Every address must pass, not just the one we pick: a name that also points inward is refused.
    host_allowed = allow.allows(host, port)
    for ip in addresses:
        if host_allowed or allow.allows(str(ip), port):
            continue
        if reason := blocked_reason(ip):
            named = host if host in allow.ports else str(ip)
            raise OutboundError(f"blocked: {host}:{port} resolves to {ip} ({reason}); {allow.why_not(named, port)}")
    return parsed, host, addresses, literal


async def check_destination(settings: Settings, url: str, resolver: Resolver | None = None) -> None:
    """The guard's address check alone, for a URL stored now and called later (a webhook endpoint at
    creation): OutboundError when it points at a non-public address that is not allow-listed. A host that
    does not resolve now passes (DNS answers change); every attempt checks again."""
    try:
        await _checked(url, AllowList.from_settings(settings), resolver or system_resolver)
    except OutboundError as exc:
        if not exc.retryable:
            raise


def _safe_url(url: str) -> str:
    """Scheme, host and port only: paths and queries can hold secrets (webhook tokens), and messages end up
    in events and logs."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
