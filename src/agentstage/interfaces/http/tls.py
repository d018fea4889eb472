"""mTLS for ``agent serve``: uvicorn protocol classes that put the verified client certificate's
subject into the ASGI scope (the ASGI TLS extension's ``client_cert_name``, RFC 4514), which
uvicorn does not do itself. The auth middleware maps that subject to a principal
(``security.client_certs``). ``agent serve --tls-client-ca`` names these classes by import string.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

App = Any


def certificate_subject(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def _with_subject(app: App, subject: str) -> App:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = {**(scope.get("extensions") or {}), "tls": {"client_cert_name": subject}}
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return wrapped


class _PeerCertificate:
    app: App

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app = _with_subject(self.app, certificate_subject(der))


class H11WithClientCert(_PeerCertificate, H11Protocol):
    """HTTP/1.1 with the client certificate's subject in ``scope["extensions"]["tls"]``."""


try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # the websockets package is optional
    WebSocketsWithClientCert: type | None = None
else:

    class _WebSockets(_PeerCertificate, WebSocketsSansIOProtocol):
        """WebSockets with the client certificate's subject in the scope."""

    WebSocketsWithClientCert = _WebSockets
