"""A pool of model-server endpoints behind one OpenAI-compatible provider (on-premises clusters).

Configured on the provider (``configs/instances/onprem.json``)::

    "inhouse": {"type": "openai", "api_key": "env:INHOUSE_API_KEY",
                "nodes": ["https://gpu-1:8000/v1", "https://gpu-2:8000/v1"],
                "load_balancing": "least-busy",          # or "round-robin" (default)
                "health_check": {"interval": 10, "timeout": 2, "cooldown": 15},
                "tls": {"ca": "/etc/agentstage/ca.pem", "cert": "client.pem", "key": "client-key.pem"}}

Every call picks a node (round-robin, or the one with the fewest calls in flight); a node that
cannot be reached is marked down for ``cooldown`` seconds and the call moves to the next node
before anything was streamed (a failover is not a retry: the model never saw the request). So is
a node whose front refuses the call before the model server sees it (:func:`refused_in_front`):
a TLS proxy turning away this client (nginx answers 400 without a client certificate), an
authenticating proxy's 401/403 page, a gateway's 502/503/504. The model server's own refusal of a
request (a JSON error: too long, bad parameters, wrong key) is the request's fault, not the node's,
and fails the call as it would on any node. A
background check (``GET {node}/models``) brings nodes back as soon as they answer. ``tls`` gives
the CA that signs the servers' certificates and, for mutual TLS, this client's certificate and key.
One pool per provider is shared by every run of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstage.errors import ConfigError

log = logging.getLogger("agentstage.providers")


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval: float = Field(default=10.0, gt=0, description="Seconds between checks of each node.")
    timeout: float = Field(default=2.0, gt=0)
    cooldown: float = Field(default=15.0, ge=0, description="Seconds a failed node is skipped.")
    path: str = "/models"


class TlsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ca: str | None = Field(default=None, description="PEM bundle of the CA(s) that sign the servers.")
    cert: str | None = Field(default=None, description="This client's certificate (mutual TLS).")
    key: str | None = Field(default=None, description="This client's private key (mutual TLS).")
    verify: bool = True


class PoolOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[str] = Field(min_length=1)
    load_balancing: Literal["round-robin", "least-busy"] = "round-robin"
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    tls: TlsOptions | None = None


@dataclass
class Node:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    calls: int = 0
    failures: int = 0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until


@dataclass
class EndpointPool:
    options: PoolOptions
    nodes: list[Node] = field(default_factory=list)
    _turn: Iterator[int] = field(default_factory=itertools.count)
    _checker: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        self.nodes = [Node(url.rstrip("/")) for url in self.options.nodes]
        self.ssl_context = tls_context(self.options.tls)

    def order(self) -> list[Node]:
        """Nodes to try for one call: the chosen one first, then the other live nodes, then the
        ones marked down (a call still goes somewhere when every node looks down)."""
        self._ensure_checker()
        start = next(self._turn) % len(self.nodes)
        rotated = self.nodes[start:] + self.nodes[:start]
        if self.options.load_balancing == "least-busy":
            rotated.sort(key=lambda node: node.in_flight)  # stable: ties keep round-robin order
        return [n for n in rotated if n.up] + [n for n in rotated if not n.up]

    def failed(self, node: Node, error: BaseException) -> None:
        node.failures += 1
        node.down_until = time.monotonic() + self.options.health_check.cooldown
        log.warning("model server %s failed (%s); skipped for %gs", node.url, type(error).__name__,
                    self.options.health_check.cooldown)  # fmt: skip

    def _ensure_checker(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._checker is None or self._checker.done() or self._loop is not loop:
            self._loop = loop
            self._checker = loop.create_task(self._check_loop(), name="agentstage-endpoint-health")

    async def _check_loop(self) -> None:
        import httpx

        check = self.options.health_check
        verify: ssl.SSLContext | bool = self.ssl_context if self.ssl_context is not None else True
        async with httpx.AsyncClient(timeout=check.timeout, verify=verify) as client:
            while True:
                for node in self.nodes:
                    try:
                        answer = await client.get(node.url + check.path)
                        healthy = answer.status_code < 500 and not refused_in_front(
                            answer.status_code, answer.headers.get("content-type"), answer.content
                        )
                    except httpx.HTTPError:
                        healthy = False
                    if healthy and not node.up:
                        log.warning("model server %s answers again", node.url)
                        node.down_until = 0.0
                    elif not healthy and node.up:
                        node.down_until = time.monotonic() + max(check.cooldown, check.interval)
                await asyncio.sleep(check.interval)

    def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(RuntimeError):
                self._checker = None


def tls_context(options: TlsOptions | None) -> ssl.SSLContext | None:
    if options is None:
        return None
    for name in ("ca", "cert", "key"):
        value = getattr(options, name)
        if value is not None and not Path(value).expanduser().is_file():
            raise ConfigError(f"tls.{name} {value!r} is not a readable file")
    if (options.cert is None) != (options.key is None):
        raise ConfigError("tls.cert and tls.key go together (mutual TLS needs both)")
    context = ssl.create_default_context(cafile=str(Path(options.ca).expanduser()) if options.ca else None)
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if options.cert and options.key:
        context.load_cert_chain(str(Path(options.cert).expanduser()), str(Path(options.key).expanduser()))
    return context


# Answers that come from whatever stands in front of a model server, not from the server itself.
_FRONT_REFUSALS = frozenset({400, 401, 403, 407, 421, 495, 496, 497})
_GATEWAY_FAILURES = frozenset({502, 503, 504})


def refused_in_front(status: int, content_type: str | None, body: bytes) -> bool:
    """Whether an HTTP answer means the node cannot take calls from us now, rather than that this
    request is wrong: a gateway failure, or a refusal that is not the API's JSON error (an HTML
    or plain-text page from a TLS or authenticating proxy)."""
    if status in _GATEWAY_FAILURES:
        return True
    if status not in _FRONT_REFUSALS:
        return False
    if content_type is not None and "json" in content_type.lower():
        return False
    stripped = body.lstrip()
    return not stripped.startswith((b"{", b"["))


_POOLS: dict[tuple[str, str], EndpointPool] = {}


POOL_KEYS = ("nodes", "load_balancing", "health_check", "tls")


def endpoint_pool(provider: str, options: dict[str, Any]) -> EndpointPool:
    """The process's pool for a provider (built once per configuration of it). ``options`` are the
    provider's; only the pool's own keys are read."""
    parsed = PoolOptions.model_validate({k: options[k] for k in POOL_KEYS if k in options})
    key = (provider, parsed.model_dump_json())
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = EndpointPool(parsed)
    return pool
