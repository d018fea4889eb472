"""JWT bearer tokens with keys the tests make: HS256, RS256, ES256 and EdDSA; a JWKS file with two
kids and a rotation; a JWKS URL served on 127.0.0.1; and every bad-token case as a precise 401/403
problem, audited."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agentstage.access.config import JwtSettings
from agentstage.access.jwt import JwtVerifier
from agentstage.errors import UnauthorizedError

from .conftest import SecureServer

ISSUER, AUDIENCE = "https://issuer.test", "agentstage"
HS_SECRET = "a-shared-secret-of-at-least-thirty-two-bytes!"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    kinds: dict[str, type[jwt.algorithms.Algorithm]] = {
        "RS256": jwt.algorithms.RSAAlgorithm,
        "ES256": jwt.algorithms.ECAlgorithm,
    }
    algorithm = kinds[alg]
    data: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 600,
        "iat": now,
        "roles": ["operator"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(key: Any, alg: str, kid: str | None = None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


class Keys:
    def __init__(self, directory: Path):
        self.rsa1, self.rsa2, self.rsa3 = rsa_key(), rsa_key(), rsa_key()
        self.ec1 = ec.generate_private_key(ec.SECP256R1())
        self.path = directory / "jwks.json"
        self.publish([jwk(self.rsa1, "k1", "RS256"), jwk(self.ec1, "k2", "ES256")])

    def publish(self, keys: list[dict[str, Any]]) -> None:
        self.path.write_text(json.dumps({"keys": keys}))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("jwks"))


@pytest.fixture(scope="module")
def jwks_server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[SecureServer]:
    config = {
        "security": {
            "tenants": {"default": {}, "acme": {}},
            "jwt": {"algorithms": ["RS256", "ES256"], "jwks_file": str(keys.path), "issuer": ISSUER,
                    "audience": AUDIENCE, "leeway": 5, "jwks_min_refresh_seconds": 0},
        }
    }  # fmt: skip
    server = SecureServer(tmp_path_factory.mktemp("jwt-home"), config).start()
    yield server
    server.stop()


def call(server: SecureServer, bearer: str, method: str = "GET", path: str = "/api/v1/tools") -> Any:
    import httpx

    body: dict[str, Any] = {"json": {"input": "hi", "mode": "chat"}} if method == "POST" else {}
    return httpx.request(
        method, server.url + path, headers={"Authorization": f"Bearer {bearer}"}, timeout=30, **body
    )


def test_rs256_and_es256_tokens_from_a_jwks_file(jwks_server: SecureServer, keys: Keys) -> None:
    rs = call(jwks_server, token(keys.rsa1, "RS256", "k1"), "POST", "/api/v1/agent/run")
    assert rs.status_code == 200 and rs.json()["status"] == "completed"
    es = call(jwks_server, token(keys.ec1, "ES256", "k2", roles="viewer"))
    assert es.status_code == 200
    viewer_run = call(
        jwks_server, token(keys.ec1, "ES256", "k2", roles="viewer"), "POST", "/api/v1/agent/run"
    )
    assert viewer_run.status_code == 403 and viewer_run.json()["permission"] == "runs.start"
    tenant = call(jwks_server, token(keys.rsa1, "RS256", "k1", tenant="acme"))
    assert tenant.status_code == 200


def test_keys_rotate_without_a_restart(jwks_server: SecureServer, keys: Keys) -> None:
    old = token(keys.rsa1, "RS256", "k1")
    assert call(jwks_server, old).status_code == 200
    keys.publish([jwk(keys.rsa2, "k3", "RS256"), jwk(keys.ec1, "k2", "ES256")])
    try:
        assert call(jwks_server, token(keys.rsa2, "RS256", "k3")).status_code == 200  # unknown kid: reloaded
        gone = call(jwks_server, old)
        assert gone.status_code == 401 and gone.json()["code"] == "unknown_kid"
    finally:
        keys.publish([jwk(keys.rsa1, "k1", "RS256"), jwk(keys.ec1, "k2", "ES256")])


def test_every_bad_token_is_a_precise_problem_and_audited(jwks_server: SecureServer, keys: Keys) -> None:
    now = int(time.time())
    unsigned = jwt.encode(claims(), "", algorithm="none")  # PyJWT takes "" as no key for "none"
    tampered = token(keys.rsa1, "RS256", "k1")
    tampered = tampered[:-6] + ("AAAAAA" if not tampered.endswith("AAAAAA") else "BBBBBB")
    cases = {
        "not.a.jwt": (401, "invalid_token"),
        "eyJ" + "a" * 9000: (401, "token_too_large"),
        unsigned: (401, "algorithm_not_allowed"),
        jwt.encode(claims(), HS_SECRET, algorithm="HS256"): (401, "algorithm_not_allowed"),
        token(keys.rsa1, "RS256", "k1", exp=now - 60): (401, "token_expired"),
        token(keys.rsa1, "RS256", "k1", nbf=now + 600): (401, "token_not_yet_valid"),
        token(keys.rsa1, "RS256", "k1", aud="someone-else"): (401, "wrong_audience"),
        token(keys.rsa1, "RS256", "k1", iss="https://evil.test"): (401, "wrong_issuer"),
        token(keys.rsa3, "RS256", "k-unknown"): (401, "unknown_kid"),
        token(keys.rsa3, "RS256", "k1"): (401, "invalid_signature"),
        tampered: (401, "invalid_signature"),
        token(keys.rsa1, "RS256", "k1", exp=None): (401, "missing_claim"),
        token(keys.rsa1, "RS256", "k1", sub=None): (401, "missing_claim"),
        token(keys.rsa1, "RS256", "k1", roles=["superuser"]): (403, "unknown_role"),
        token(keys.rsa1, "RS256", "k1", roles=None): (403, "unknown_role"),
        token(keys.rsa1, "RS256", "k1", tenant="nowhere"): (403, "unknown_tenant"),
        token(keys.ec1, "ES256", "k1"): (401, "algorithm_not_allowed"),  # an EC token against an RSA key
    }
    for bearer, (status, code) in cases.items():
        response = call(jwks_server, bearer, "POST", "/api/v1/agent/run")
        assert (response.status_code, response.json()["code"]) == (status, code), (code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert bearer[:40] not in response.text  # the token is never echoed
    with jwks_server.as_role("admin") as admin:
        rows = admin.get("/api/v1/audit", params={"action": "runs.start", "limit": 1000}).json()["entries"]
    codes = {r["details"].get("code") for r in rows if r["outcome"] == "denied"}
    assert {code for _, code in cases.values()} <= codes
    with jwks_server.as_role("admin") as admin:
        assert admin.get("/api/v1/agent/runs").json()["total"] <= 2  # nothing ran for a bad token


def test_hs256_with_a_secret_from_the_environment(tmp_path: Path, keys: Keys) -> None:
    server = SecureServer(
        tmp_path, {"security": {"jwt": {"algorithms": ["HS256"], "secret": "env:AGENTSTAGE_JWT"}}}
    )
    server.env["AGENTSTAGE_JWT"] = HS_SECRET
    server.start()
    try:
        good = jwt.encode(claims(iss=None, aud=None), HS_SECRET, algorithm="HS256")
        assert call(server, good).status_code == 200
        assert (
            call(
                server, jwt.encode(claims(), "another-secret-of-thirty-two-bytes!!", algorithm="HS256")
            ).json()["code"]
            == "invalid_signature"
        )
        rs = call(server, token(keys.rsa1, "RS256", "k1"))
        assert rs.status_code == 401 and rs.json()["code"] == "algorithm_not_allowed"
        assert call(server, server.keys["viewer"]).status_code == 200  # API keys keep working
    finally:
        server.stop()


@pytest.mark.anyio
async def test_a_pem_public_key_and_eddsa(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    verifier = JwtVerifier(
        JwtSettings(algorithms=["EdDSA"], public_key=f"file:{tmp_path / 'key.pem'}", audience=AUDIENCE)
    )
    found = await verifier.verify(token(private, "EdDSA", roles="admin", tenant="t1"))
    assert (found.subject, found.roles, found.tenant) == ("alice", ("admin",), "t1")
    with pytest.raises(UnauthorizedError) as refused:
        await verifier.verify(token(ed25519.Ed25519PrivateKey.generate(), "EdDSA"))
    assert refused.value.code == "invalid_signature"


class JwksHandler(http.server.BaseHTTPRequestHandler):
    document: ClassVar[dict[str, Any]] = {}
    hits = 0

    def do_GET(self) -> None:
        JwksHandler.hits += 1
        body = json.dumps(JwksHandler.document).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.mark.anyio
async def test_a_jwks_url_is_cached_and_refetched_for_an_unknown_kid(jwks_url: str) -> None:
    first, second = rsa_key(), rsa_key()
    JwksHandler.document = {"keys": [jwk(first, "a", "RS256")]}
    JwksHandler.hits = 0
    verifier = JwtVerifier(
        JwtSettings(algorithms=["RS256"], jwks_url=jwks_url, audience=AUDIENCE, jwks_min_refresh_seconds=0)
    )
    for _ in range(3):
        assert (await verifier.verify(token(first, "RS256", "a"))).subject == "alice"
    assert JwksHandler.hits == 1  # cached
    JwksHandler.document = {"keys": [jwk(second, "b", "RS256")]}
    assert (await verifier.verify(token(second, "RS256", "b", sub="bob"))).subject == "bob"
    assert JwksHandler.hits == 2  # refetched for the unknown kid
    with pytest.raises(UnauthorizedError) as refused:
        await verifier.verify(token(first, "RS256", "a"))
    assert refused.value.code == "unknown_kid"


@pytest.mark.anyio
async def test_a_remembered_token_still_expires_and_a_refused_one_is_not_remembered(tmp_path: Path) -> None:
    private = rsa_key()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    verifier = JwtVerifier(
        JwtSettings(algorithms=["RS256"], public_key=f"file:{tmp_path / 'key.pem'}", leeway=0), max_cached=2
    )
    short = token(private, "RS256", exp=int(time.time()) + 2)
    for _ in range(3):  # verified once, then remembered
        assert (await verifier.verify(short)).subject == "alice"
    assert len(verifier) == 1
    forged = token(rsa_key(), "RS256")
    for _ in range(2):
        with pytest.raises(UnauthorizedError) as refused:
            await verifier.verify(forged)
        assert refused.value.code == "invalid_signature"
    assert len(verifier) == 1
    for sub in ("b", "c", "d"):  # bounded
        await verifier.verify(token(private, "RS256", sub=sub))
    assert len(verifier) == 2
    short = token(private, "RS256", exp=int(time.time()) + 2)
    await verifier.verify(short)
    expiry = jwt.decode(short, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, expiry - time.time()) + 0.05)
    with pytest.raises(UnauthorizedError) as expired:
        await verifier.verify(short)
    assert expired.value.code == "token_expired"
