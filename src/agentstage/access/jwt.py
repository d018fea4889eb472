"""JWT bearer tokens (PyJWT): HS* with a shared secret, or RS/PS/ES/EdDSA with a PEM public key,
a JWKS file or a JWKS URL.

Only algorithms on ``security.jwt.algorithms`` are accepted (never ``none``, never HS* with a
public key). ``exp`` is required; ``nbf``, ``iss`` and ``aud`` are checked with ``leeway``. A token
with an unknown ``kid`` makes the key set reload (a file is re-read, a URL refetched at most every
``jwks_min_refresh_seconds``), so keys can rotate without a restart. Every refusal is a precise
401: the code says what was wrong, the message never echoes the token.

A client sends the same token with every request until it expires, and checking its signature
is most of what authenticating it costs (RS256: about 0.2 ms). So a token that verified is
remembered (bounded LRU, by its SHA-256): the same bytes checked against the same key give the
same answer, and only the time-bound claim can change — ``exp`` is checked again on every
request (``nbf`` and ``iat``, once passed, stay passed). An entry is used only while the key
that verified it is still the one the key set holds for its ``kid``: a reloaded JWKS verifies
every token afresh, so a key removed from the set stops its tokens at the next reload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt as pyjwt

from agentstage.access.config import HMAC_ALGORITHMS, JwtSettings
from agentstage.access.secrets import resolve_reference
from agentstage.errors import ConfigError, UnauthorizedError


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    tenant: str
    roles: tuple[str, ...]
    claims: dict[str, Any]


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class JwksCache:
    """Keys by ``kid`` from a file or URL, reloaded when stale or when a token names an unknown kid."""

    def __init__(self, settings: JwtSettings):
        self.settings = settings
        self._keys: dict[str | None, pyjwt.PyJWK] = {}
        self._loaded_at = -1e18
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> pyjwt.PyJWK:
        stale = time.monotonic() - self._loaded_at > self.settings.jwks_cache_seconds
        if stale or (kid not in self._keys and self._may_refresh()):
            async with self._lock:
                if kid not in self._keys or stale:
                    await self._reload()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid not in self._keys:
            known = ", ".join(sorted(str(k) for k in self._keys)) or "none"
            raise UnauthorizedError(
                f"the token's key id {kid!r} is not in the key set (known: {known})", code="unknown_kid"
            )
        return self._keys[kid]

    def _may_refresh(self) -> bool:
        return time.monotonic() - self._loaded_at >= self.settings.jwks_min_refresh_seconds

    async def _reload(self) -> None:
        self._loaded_at = time.monotonic()
        document = await (self._fetch() if self.settings.jwks_url else self._read())
        try:
            keys = pyjwt.PyJWKSet.from_dict(document).keys
        except (pyjwt.PyJWKSetError, pyjwt.InvalidKeyError, TypeError, ValueError) as error:
            raise ConfigError(f"security.jwt: the JWKS is not usable: {error}") from None
        self._keys = {key.key_id: key for key in keys}

    async def _read(self) -> dict[str, Any]:
        return await asyncio.to_thread(_read_jwks_file, str(self.settings.jwks_file))

    async def _fetch(self) -> dict[str, Any]:
        import httpx

        url = str(self.settings.jwks_url)
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False, trust_env=False) as client:
                response = await client.get(url)
                response.raise_for_status()
                data = response.json()
        except (httpx.HTTPError, json.JSONDecodeError) as error:
            raise ConfigError(f"security.jwt.jwks_url {url!r} cannot be fetched: {error}") from None
        return data if isinstance(data, dict) else {}


def _read_jwks_file(name: str) -> dict[str, Any]:
    path = Path(name).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"security.jwt.jwks_file {name!r} cannot be read: {error}") from None
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class _Verified:
    claims: TokenClaims
    algorithm: str
    kid: Any
    key: Any  # the key object that verified the signature
    expires: float


class JwtVerifier:
    def __init__(self, settings: JwtSettings, max_cached: int = 10_000):
        self.settings = settings
        self.max_cached = max_cached
        self._secret: str | None = None
        self._public_key: str | None = None
        self._jwks = JwksCache(settings) if settings.jwks_file or settings.jwks_url else None
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()

    def __len__(self) -> int:
        return len(self._verified)

    def _hmac_secret(self) -> str:
        if self._secret is None:
            self._secret = resolve_reference(str(self.settings.secret), "security.jwt.secret")
        return self._secret

    def _pem(self) -> str:
        if self._public_key is None:
            reference = str(self.settings.public_key)
            path = Path(reference[5:] if reference.startswith("file:") else reference).expanduser()
            try:
                self._public_key = path.read_text(encoding="utf-8")
            except OSError as error:
                raise ConfigError(f"security.jwt.public_key {str(path)!r}: {error.strerror}") from None
        return self._public_key

    async def verify(self, token: str) -> TokenClaims:
        settings = self.settings
        if len(token.encode("utf-8", "replace")) > settings.max_token_bytes:
            raise UnauthorizedError(
                f"the token is larger than {settings.max_token_bytes} bytes", code="token_too_large"
            )
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        seen = self._verified.get(digest)
        if seen is not None:
            key = await self._key(seen.algorithm, seen.kid)
            if key is seen.key:  # same token, same key: only the expiry can have changed
                if seen.expires <= time.time() - settings.leeway:
                    del self._verified[digest]
                    raise UnauthorizedError("the token has expired", code="token_expired")
                self._verified.move_to_end(digest)
                return seen.claims
            del self._verified[digest]
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.DecodeError:
            raise UnauthorizedError(
                "the bearer token is not a well-formed JWT", code="invalid_token"
            ) from None
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise UnauthorizedError(
                f"the token's algorithm {algorithm!r} is not allowed (allowed: {', '.join(settings.algorithms)})",
                code="algorithm_not_allowed",
            )
        key = await self._key(str(algorithm), header.get("kid"))
        claims = self._decode(token, key, str(algorithm))
        verified = self._principal_claims(claims)
        self._verified[digest] = _Verified(
            verified, str(algorithm), header.get("kid"), key, float(int(claims["exp"]))
        )
        while len(self._verified) > self.max_cached:
            self._verified.popitem(last=False)
        return verified

    async def _key(self, algorithm: str, kid: Any) -> Any:
        if algorithm in HMAC_ALGORITHMS:
            return self._hmac_secret()
        if self._jwks is not None:
            jwk = await self._jwks.key(kid if isinstance(kid, str) else None)
            if jwk.algorithm_name not in (algorithm, None) and "alg" in jwk._jwk_data:
                raise UnauthorizedError(
                    f"key {kid!r} is for {jwk.algorithm_name}, not {algorithm}", code="algorithm_not_allowed"
                )
            return jwk.key
        return self._pem()

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        settings = self.settings
        options: dict[str, Any] = {"require": ["exp"], "verify_aud": settings.audience is not None}
        try:
            return dict(
                pyjwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=settings.audience,
                    issuer=settings.issuer,
                    leeway=settings.leeway,
                    options=options,  # type: ignore[arg-type]
                )
            )
        except pyjwt.ExpiredSignatureError:
            raise UnauthorizedError("the token has expired", code="token_expired") from None
        except pyjwt.ImmatureSignatureError:
            raise UnauthorizedError(
                "the token is not valid yet (nbf/iat)", code="token_not_yet_valid"
            ) from None
        except pyjwt.InvalidAudienceError:
            raise UnauthorizedError(
                f"the token is not for this audience (expected {settings.audience!r})", code="wrong_audience"
            ) from None
        except pyjwt.InvalidIssuerError:
            raise UnauthorizedError(
                f"the token was not issued by {settings.issuer!r}", code="wrong_issuer"
            ) from None
        except pyjwt.MissingRequiredClaimError as error:
            raise UnauthorizedError(
                f"the token lacks the {error.claim!r} claim", code="missing_claim"
            ) from None
        except pyjwt.InvalidSignatureError:
            raise UnauthorizedError(
                "the token's signature does not verify", code="invalid_signature"
            ) from None
        except (pyjwt.InvalidKeyError, pyjwt.InvalidAlgorithmError):
            raise UnauthorizedError(
                f"the key cannot verify {algorithm} tokens", code="algorithm_not_allowed"
            ) from None
        except pyjwt.InvalidTokenError as error:
            raise UnauthorizedError(f"the token is not valid: {error}", code="invalid_token") from None

    def _principal_claims(self, claims: dict[str, Any]) -> TokenClaims:
        settings = self.settings
        subject = _claim(claims, settings.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise UnauthorizedError(
                f"the token has no subject claim {settings.subject_claim!r}", code="missing_claim"
            )
        tenant = _claim(claims, settings.tenant_claim) if settings.tenant_claim else None
        raw_roles = _claim(claims, settings.roles_claim)
        if isinstance(raw_roles, str):
            roles: tuple[str, ...] = tuple(raw_roles.replace(",", " ").split())
        elif isinstance(raw_roles, list) and all(isinstance(r, str) for r in raw_roles):
            roles = tuple(raw_roles)
        else:
            roles = ()
        if not roles and settings.default_role:
            roles = (settings.default_role,)
        return TokenClaims(
            subject=subject,
            tenant=tenant if isinstance(tenant, str) and tenant else settings.default_tenant,
            roles=roles,
            claims=claims,
        )
