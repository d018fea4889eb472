"""TLS and mTLS with certificates the test makes, the loopback rule for auth off, and HTTP
hygiene: security headers, CORS off by default, WebSocket refusals closed with 1008."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import AGENT

from .conftest import SecureServer


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _certificate(
    subject: str, issuer: Any, issuer_key: Any, key: Any, *, ca: bool = False
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test CA", _name("Test CA"), ca_key, ca_key, ca=True)
    server_key, client_key, stranger_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    found = {
        "ca": _write(directory / "ca", ca, ca_key)[0],
        "server": _write(
            directory / "server", _certificate("127.0.0.1", ca.subject, ca_key, server_key), server_key
        ),
        "client": _write(
            directory / "client", _certificate("ci-bot", ca.subject, ca_key, client_key), client_key
        ),
        "stranger": _write(
            directory / "stranger",
            _certificate("ci-bot", _name("Other CA"), other_ca_key, stranger_key),
            stranger_key,
        ),
    }
    return found


def start_tls(server: SecureServer, *flags: str) -> None:
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(
            [AGENT, "serve", "--port", str(server.port), *flags], env=server.env, stdout=log, stderr=log
        )
    server.url = server.url.replace("http://", "https://")
    deadline = time.monotonic() + 30
    while True:
        assert server.process.poll() is None, server.log()
        try:  # the port accepts connections (a TLS handshake may need a client certificate)
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            time.sleep(0.5)
            return
        except OSError:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)


def test_https_and_mutual_tls(tmp_path: Path, pki: dict[str, Any]) -> None:
    config = {
        "security": {
            "client_certs": {"subjects": {"CN=ci-bot,O=Tests": {"role": "operator", "name": "ci-bot"}}}
        }
    }
    server = SecureServer(tmp_path, config)
    cert, key = pki["server"]
    start_tls(server, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", pki["ca"])
    try:
        trusted = ssl.create_default_context(cafile=pki["ca"])
        trusted.load_cert_chain(*pki["client"])
        with httpx.Client(base_url=server.url, verify=trusted, timeout=30) as client:
            run = client.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
            assert run.status_code == 200 and run.json()["status"] == "completed"
            assert client.put("/api/v1/config", json={"description": "x"}).status_code == 403
        rows = server.audit_rows()
        assert any(r["principal"] == "certificate:ci-bot" and r["action"] == "runs.start" for r in rows)
        for client_cert in (None, pki["stranger"]):
            context = ssl.create_default_context(cafile=pki["ca"])
            if client_cert:
                context.load_cert_chain(*client_cert)
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{server.url}/health/live", verify=context, timeout=10).raise_for_status()
    finally:
        server.stop()


def test_https_without_client_certificates(tmp_path: Path, pki: dict[str, Any]) -> None:
    server = SecureServer(tmp_path)
    key = tmp_path / "server.key"
    key.write_bytes(Path(pki["server"][1]).read_bytes())
    key.chmod(0o640)  # readable by the group: used, with a warning that names it and the fix
    start_tls(server, "--tls-cert", *pki["server"][:1], "--tls-key", str(key))
    try:
        with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=pki["ca"])) as client:
            assert client.get("/api/v1/tools", headers=server.headers).status_code == 200
            assert client.get("/api/v1/tools").status_code == 401
    finally:
        server.stop()
    warned = [line for line in server.log().splitlines() if "--tls-key" in line]
    assert len(warned) == 1 and "open to group (mode 0640)" in warned[0] and f"chmod 600 {key}" in warned[0]
    assert "PRIVATE KEY" not in server.log()


def test_auth_off_refuses_a_public_address_without_insecure(tmp_path: Path) -> None:
    server = SecureServer(tmp_path, {"http": {"auth": "off"}})
    done = subprocess.run([AGENT, "serve", "--host", "0.0.0.0", "--port", str(server.port)], env=server.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "is not a loopback address" in done.stderr and "--insecure" in done.stderr
    half = subprocess.run(
        [AGENT, "serve", "--tls-cert", "/nope.pem"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert half.returncode == 2 and "--tls-cert and --tls-key go together" in half.stderr


def test_security_headers_and_cors(secure: SecureServer, tmp_path: Path) -> None:
    with secure.as_role("viewer") as viewer:
        api = viewer.get("/api/v1/tools")
        health = viewer.get("/health/live")
        preflight = viewer.options(
            "/api/v1/tools",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    assert api.headers["x-content-type-options"] == "nosniff" and api.headers["cache-control"] == "no-store"
    assert health.headers["x-content-type-options"] == "nosniff" and "no-store" not in health.headers.get(
        "cache-control", ""
    )
    assert "access-control-allow-origin" not in preflight.headers
    server = SecureServer(tmp_path, {"http": {"cors_origins": ["https://app.example"]}}).start()
    try:
        allowed = httpx.options(
            f"{server.url}/api/v1/tools",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        other = httpx.options(
            f"{server.url}/api/v1/tools",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-origin" not in other.headers
    finally:
        server.stop()


def test_a_websocket_without_valid_credentials_is_closed_with_1008(secure: SecureServer) -> None:
    url = secure.url.replace("http://", "ws://") + "/ws/agent/stream"
    for headers in ({}, {"X-API-Key": "ags_forged-websocket-key-000000000000000"}):
        with connect(url, additional_headers=headers) as socket, pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with connect(url + f"?api_key={secure.keys['viewer']}") as socket:
        socket.send(json.dumps({"type": "ping"}))
        assert json.loads(socket.recv(timeout=10)) == {"type": "pong"}
