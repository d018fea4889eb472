"""Where a tool server registered over the network may connect: an allow-list of hosts and networks.

A URL's host must be listed (``mcp.example.com``, ``*.example.com``) or fall in a listed network
(``10.1.0.0/16``). Every address it resolves to is checked again at connect time — on the
connection actually made, so a DNS answer that changes between the check and the connect
(rebinding) cannot reach an unlisted address — and loopback, private, link-local and other
special addresses are refused unless a listed network covers them. Redirects are not followed
off the list because every hop connects through the same check.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio

from agentstage.errors import ForbiddenError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressPolicy:
    def __init__(self, allowed: Sequence[str]):
        self.refused: ForbiddenError | None = None  # the last connection refused, for the error message
        self.names: list[str] = []
        self.networks: list[Network] = []
        for item in allowed:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.names.append(item.lower().rstrip("."))

    def host_listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for name in self.names:
            if host == name or (name.startswith("*.") and host.endswith(name[1:])):
                return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def address_allowed(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not (address.is_multicast or address.is_reserved)

    def check_url(self, url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ForbiddenError(
                f"MCP URL {url!r} must be http(s)://host[:port]/path", code="host_not_allowed"
            )
        host = parts.hostname
        if not self.host_listed(host):
            raise ForbiddenError(
                f"MCP URL host {host!r} is not on security.mcp.allowed_hosts "
                f"({', '.join(self.names + [str(n) for n in self.networks]) or 'empty'})",
                code="host_not_allowed",
            )
        return host, parts.port or (443 if parts.scheme == "https" else 80)

    async def resolve(self, host: str, port: int) -> list[Address]:
        """The host's addresses, all of which must be allowed; raises naming the first that is not."""
        try:
            return await self._resolve(host, port)
        except ForbiddenError as error:
            self.refused = error
            raise

    async def _resolve(self, host: str, port: int) -> list[Address]:
        if not self.host_listed(host):
            raise ForbiddenError(
                f"connection to {host!r} refused: not on the allow-list", code="host_not_allowed"
            )
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise ForbiddenError(f"cannot resolve {host!r}: {error}", code="host_unresolvable") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        for address in addresses:
            if not self.address_allowed(address):
                raise ForbiddenError(
                    f"{host!r} resolves to {address}, a loopback, private or link-local address; "
                    "list its network in security.mcp.allowed_hosts to allow it",
                    code="host_not_allowed",
                )
        return addresses


def guarded_client(policy: EgressPolicy, timeout: float) -> Any:
    """An ``httpx2`` client (what the MCP SDK uses) whose every connection goes through the policy."""
    import httpcore2
    import httpx2

    class GuardedBackend(httpcore2.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.inner = httpcore2.AnyIOBackend()

        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,  # noqa: ASYNC109 - the signature httpcore calls
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> Any:
            addresses = await policy.resolve(host, port)
            return await self.inner.connect_tcp(
                str(addresses[0]), port, timeout, local_address, socket_options
            )

        async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
            raise ForbiddenError("unix sockets are not allowed for MCP servers", code="host_not_allowed")

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    # The transport's pool is replaced by one whose network backend vets each connection; httpx
    # exposes no other place where the address actually dialled can be checked.
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=transport._pool._ssl_context, network_backend=GuardedBackend()
    )
    return httpx2.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        # Connecting is quick or refused; reads stay long because an MCP server holds its event
        # stream open (the session's start is bounded separately, by the policy's timeout).
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 5.0), read=300.0),
    )
