"""Principals: who makes a request — an API key, a JWT subject, a client certificate, the local
CLI user, or (with authentication off) an anonymous caller — with a tenant and a permission set.

Doors gather :class:`Credentials` from their transport and call :meth:`Authenticator.authenticate`;
the principal it returns travels with the request to the runtime.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from agentstage.access.apikeys import KEY_PREFIX, KeyVerifier
from agentstage.access.config import SecuritySettings
from agentstage.access.permissions import PERMISSIONS, RoleTable
from agentstage.errors import ForbiddenError, UnauthorizedError

if TYPE_CHECKING:
    from agentstage.access.jwt import JwtVerifier

Kind = Literal["api_key", "jwt", "certificate", "local", "anonymous"]


@dataclass(frozen=True)
class Principal:
    kind: Kind
    id: str  # key id, JWT subject, certificate subject, OS user
    name: str  # how logs and the audit log name it
    tenant: str
    roles: tuple[str, ...]
    permissions: frozenset[str]
    requests_per_minute: int | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


def local_principal() -> Principal:
    """The user at the host's terminal: the CLI acts as admin (it can read the store anyway)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "local"
    return Principal("local", user, user, "default", ("admin",), frozenset(PERMISSIONS) - {"config.security"})


@dataclass
class Credentials:
    """What a transport presented; doors fill in what they have."""

    bearer: str | None = None
    api_key: str | None = None
    client_cert: str | None = None  # RFC 4514 subject of a verified client certificate
    client: str | None = None
    user_agent: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def presented(self) -> bool:
        return bool(self.bearer or self.api_key or self.client_cert)


class Authenticator:
    def __init__(self, settings: SecuritySettings, keys: KeyVerifier, *, enabled: bool = True):
        self.settings = settings
        self.keys = keys
        self.enabled = enabled
        self.roles = RoleTable(settings.roles)
        self.jwt: JwtVerifier | None = None
        if settings.jwt.enabled:  # PyJWT is imported only where JWTs are accepted (0.1 s per CLI command)
            from agentstage.access.jwt import JwtVerifier

            self.jwt = JwtVerifier(settings.jwt, settings.key_cache_size)

    async def authenticate(self, credentials: Credentials) -> Principal:
        """The caller's principal, or 401 (who are you?) / 403 (unknown role or tenant)."""
        token = credentials.bearer or credentials.api_key
        if token:
            if token.startswith(KEY_PREFIX) or self.jwt is None:
                return await self._api_key(token)
            return await self._jwt(token)
        if credentials.client_cert:
            return self._certificate(credentials.client_cert)
        if not self.enabled:
            return self._build(
                "anonymous", "anonymous", "anonymous", "default", (self.settings.anonymous_role,)
            )
        raise UnauthorizedError(
            "this request needs a credential (Authorization: Bearer <key or token>, or X-API-Key)",
            code="unauthorized",
        )

    async def _api_key(self, key: str) -> Principal:
        if len(key) > self.settings.jwt.max_token_bytes:
            raise UnauthorizedError(
                f"the credential is larger than {self.settings.jwt.max_token_bytes} bytes",
                code="token_too_large",
            )
        record = await self.keys.verify(key)
        permissions = self._check(record.tenant, (record.role,))
        if record.scopes is not None:
            permissions &= frozenset(record.scopes)
        return Principal(
            "api_key", record.id, record.name, record.tenant, (record.role,), permissions,
            record.requests_per_minute,
        )  # fmt: skip

    async def _jwt(self, token: str) -> Principal:
        assert self.jwt is not None
        claims = await self.jwt.verify(token)
        if not claims.roles:
            raise ForbiddenError(
                f"the token names no role (claim {self.settings.jwt.roles_claim!r}) and no default is set",
                code="unknown_role",
            )
        return self._build("jwt", claims.subject, claims.subject, claims.tenant, claims.roles)

    def _certificate(self, subject: str) -> Principal:
        certs = self.settings.client_certs
        mapped = certs.subjects.get(subject)
        if mapped is not None:
            return self._build("certificate", subject, mapped.name or subject, mapped.tenant, (mapped.role,))
        if certs.default_role is None:
            raise ForbiddenError(
                f"the client certificate {subject!r} is not mapped to a principal (security.client_certs)",
                code="unknown_certificate",
            )
        return self._build("certificate", subject, subject, certs.default_tenant, (certs.default_role,))

    def _build(self, kind: Kind, ident: str, name: str, tenant: str, roles: tuple[str, ...]) -> Principal:
        return Principal(kind, ident, name, tenant, roles, self._check(tenant, roles))

    def _check(self, tenant: str, roles: tuple[str, ...]) -> frozenset[str]:
        if tenant not in self.settings.tenants:
            raise ForbiddenError(f"tenant {tenant!r} does not exist", code="unknown_tenant")
        return self.roles.permissions(roles)

    def tenant_rate(self, tenant: str) -> int | None:
        found = self.settings.tenants.get(tenant)
        return found.requests_per_minute if found else None
