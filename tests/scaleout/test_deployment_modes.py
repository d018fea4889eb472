"""The three shipped instance configs: local (embedded defaults), cloud (a provider chain with
fallbacks), onprem (a pool of OpenAI-compatible model servers with health-checked failover and
mutual TLS) — each exercised for real: real llama.cpp servers, nginx terminating mTLS."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstage.providers.local import default_model_path
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from agentstage.settings import load_settings
from conftest import make_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from devcluster import free_port, wait_port

pytestmark = pytest.mark.anyio


def test_local_is_the_embedded_default(home: Path) -> None:
    settings = load_settings(environ={"AGENT_HOME": str(home), "AGENT_ENV": "local"})
    assert settings.store_url().startswith("sqlite") and not settings.distributed()
    assert [e.provider for e in settings.profile(None).chain] == ["local"]
    assert settings.providers["local"].type == "local"


async def test_cloud_falls_back_along_its_chain_when_the_hosted_providers_cannot_be_used(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_DATABASE_URL", f"sqlite+aiosqlite:///{home}/c.db")
    environ = {"AGENT_HOME": str(home), "AGENT_ENV": "cloud"}
    settings = load_settings(environ=environ)
    chain = [e.provider for e in settings.profile(None).chain]
    assert chain == ["openai", "anthropic", "local"]
    # The hosted providers are pointed at a closed port (no key, no network): the chain must move on.
    closed = f"http://127.0.0.1:{free_port()}/v1"
    overrides: dict[str, Any] = {
        "providers": {
            "openai": {"base_url": closed, "api_key": "env:UNSET_KEY_FOR_TEST"},
            "anthropic": {"type": "openai", "base_url": closed, "api_key": "env:UNSET_KEY_FOR_TEST"},
            "local": {"type": "scripted", "script": {"responses": [{"text": "From the last fallback."}]}},
        },
        "retry": {"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.02},
    }
    settings = load_settings(overrides, environ=environ)
    async with build_service(settings) as service:
        record = await service.run(RunRequest(input="hello", mode="chat"))
        kinds = [event.type for event in await service.events(record.id)]
    assert record.status == "completed" and record.output == "From the last fallback.", record.error_message
    assert kinds.count("model.fallback") == 2


# onprem: two real llama.cpp servers, one of them behind nginx requiring a client certificate --------


def _certificates(root: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, issuer: Any, issuer_key: Any, ca: bool, san: bool) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(issuer_key or key, hashes.SHA256()), key

    ca, ca_key = issue("test ca", None, None, True, False)
    paths: dict[str, Path] = {}
    for name, cert, key in (
        ("ca", ca, ca_key),
        ("server", *issue("server", ca.subject, ca_key, False, True)),
        ("client", *issue("client", ca.subject, ca_key, False, False)),
    ):
        paths[name] = root / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}-key"] = root / f"{name}-key.pem"
        paths[f"{name}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths


def _llama_server(root: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    # llama.cpp's own server, loaded without weight repacking: its AMX path crashes on some CPUs.
    # By default it cuts a streaming answer short whenever another request arrives, the pool's
    # health checks included: --interrupt_requests False, as for any pool of llama.cpp servers.
    launcher = (
        "import runpy\n"
        "from agentstage.providers.llama_engine import extra_buffers\n"
        "with extra_buffers(False):\n"
        "    runpy.run_module('llama_cpp.server', run_name='__main__')\n"
    )
    command = [sys.executable, "-c", launcher, "--model", str(default_model_path()), "--host",
               "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--model_alias", "smollm2",
               "--interrupt_requests", "False"]  # fmt: skip
    with (root / f"{name}.log").open("wb") as log:  # the server writes to its own copy of the descriptor
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, (root / f"{name}.log").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "a llama.cpp server did not start"
        time.sleep(0.2)


MTLS_CONF = """worker_processes 1; daemon off; pid {root}/nginx.pid; error_log {root}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {root}/b; proxy_temp_path {root}/p; fastcgi_temp_path {root}/f;
  uwsgi_temp_path {root}/u; scgi_temp_path {root}/s;
  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_client_certificate {ca}; ssl_verify_client on;
    location / {{ proxy_pass http://127.0.0.1:{upstream}; proxy_buffering off; proxy_http_version 1.1; }} }} }}
"""


@pytest.fixture(scope="module")
def onprem_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("onprem")
    certs = _certificates(root)
    plain, plain_port = _llama_server(root, "node-a")
    secured, secured_port = _llama_server(root, "node-b")
    tls_port = free_port()
    (root / "nginx.conf").write_text(
        MTLS_CONF.format(
            root=root,
            port=tls_port,
            cert=certs["server"],
            key=certs["server-key"],
            ca=certs["ca"],
            upstream=secured_port,
        ),
        encoding="utf-8",
    )
    nginx = subprocess.Popen(["nginx", "-c", str(root / "nginx.conf"), "-p", str(root)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(tls_port)
    try:
        yield {"plain": plain, "plain_port": plain_port, "tls_port": tls_port, "certs": certs}
    finally:
        for process in (nginx, plain, secured):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)


def onprem_settings(home: Path, nodes: list[str], certs: dict[str, Path], **tls: Any) -> Any:
    environ = {"AGENT_HOME": str(home), "AGENT_ENV": "onprem", "INHOUSE_API_KEY": "k"}
    base = load_settings(environ=environ)
    inhouse = base.providers["inhouse"].options()
    assert inhouse["load_balancing"] == "least-busy" and len(inhouse["nodes"]) == 2
    overrides = {
        "providers": {
            "inhouse": {
                "nodes": nodes,
                "load_balancing": "round-robin",
                # A generous timeout: a node busy generating on a loaded machine is slow, not down
                # (a refusing node answers at once, a dead one refuses the connection at once).
                "health_check": {"interval": 0.5, "timeout": 5, "cooldown": 30},
                "tls": {"ca": str(certs["ca"]), **tls},
            }
        },
        "profiles": {
            "onprem": {
                "chain": [{"provider": "inhouse", "model": "smollm2"}],
                "params": {"max_tokens": 24, "temperature": 0},
            }
        },
        "retry": {"max_attempts": 1},
    }
    os.environ.setdefault("INHOUSE_API_KEY", "k")
    return make_settings(home, {**overrides, "env": "onprem"})


@pytest.mark.model
async def test_onprem_pool_spreads_calls_fails_over_and_speaks_mutual_tls(
    onprem_nodes: dict[str, Any], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INHOUSE_API_KEY", "k")
    certs = onprem_nodes["certs"]
    nodes = [
        f"http://127.0.0.1:{onprem_nodes['plain_port']}/v1",
        f"https://127.0.0.1:{onprem_nodes['tls_port']}/v1",
    ]
    client_cert = {"cert": str(certs["client"]), "key": str(certs["client-key"])}
    settings = onprem_settings(home, nodes, certs, **client_cert)
    async with build_service(settings) as service:
        records = [await service.run(RunRequest(input=f"What is {n} plus 2?", mode="chat")) for n in range(4)]
        assert [r.status for r in records] == ["completed"] * 4, [r.error_message for r in records]
        from agentstage.providers.pool import endpoint_pool

        pool = endpoint_pool("inhouse", settings.providers["inhouse"].options())
        assert [node.calls for node in pool.nodes] == [2, 2]  # round-robin, the mTLS node included
        assert all(node.failures == 0 for node in pool.nodes)
    # Without the client certificate the mTLS node refuses the request (nginx answers 400 after the
    # handshake): the node cannot take our calls, so the call moves on to the other node and the
    # refusing one is skipped. (A new process would build its own pool; here a changed
    # configuration builds a new one.)
    settings = onprem_settings(home, nodes, certs)
    async with build_service(settings) as service:
        records = [
            await service.run(RunRequest(input=f"What is {n} times 3?", mode="chat")) for n in range(3)
        ]
        assert [r.status for r in records] == ["completed"] * 3, [r.error_message for r in records]
        pool = endpoint_pool("inhouse", settings.providers["inhouse"].options())
        assert not pool.nodes[1].up  # found refusing (by a call or a health check), skipped
        assert pool.nodes[0].calls >= 3
    onprem_nodes["plain"].terminate()
    onprem_nodes["plain"].wait(timeout=10)
    settings = onprem_settings(home, nodes, certs, **client_cert)
    async with build_service(settings) as service:
        pool = endpoint_pool("inhouse", settings.providers["inhouse"].options())
        records = [
            await service.run(RunRequest(input=f"What is {n} minus 1?", mode="chat")) for n in range(3)
        ]
        assert [r.status for r in records] == ["completed"] * 3, [r.error_message for r in records]
        assert not pool.nodes[0].up  # the dead node: found down (by a call or a health check), skipped
        assert pool.nodes[1].calls >= 3
