"""The security sections of the settings: ``security``, ``secrets`` and the HTTP door's guards.

They live here, next to the code that enforces them; ``settings.py`` places them in the tree.
Secrets are references (``env:NAME`` or ``file:/path``), never values.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentstage.access.permissions import RoleTable

HMAC_ALGORITHMS = {"HS256", "HS384", "HS512"}
ASYMMETRIC_ALGORITHMS = {
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
}  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JwtSettings(_Strict):
    """Bearer JWTs. Off while ``algorithms`` is empty."""

    algorithms: list[str] = Field(default_factory=list, description="Allowed algorithms, e.g. ['RS256'].")
    secret: str | None = Field(default=None, description="HS* shared secret: 'env:NAME' or 'file:/path'.")
    public_key: str | None = Field(default=None, description="PEM public key file (RS/ES/EdDSA).")
    jwks_file: str | None = Field(
        default=None, description="A JWKS document on disk (re-read on an unknown kid)."
    )
    jwks_url: str | None = Field(
        default=None, description="A JWKS URL (cached; refetched on an unknown kid)."
    )
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwks_min_refresh_seconds: float = Field(
        default=5.0, ge=0, description="Unknown kids refetch the JWKS at most this often."
    )
    issuer: str | None = None
    audience: str | None = None
    leeway: float = Field(default=30.0, ge=0, le=3600, description="Seconds of clock skew allowed.")
    subject_claim: str = "sub"
    tenant_claim: str | None = Field(default="tenant", description="Claim naming the tenant (dotted path).")
    roles_claim: str = Field(default="roles", description="Claim holding a role or a list of roles.")
    default_tenant: str = "default"
    default_role: str | None = Field(default=None, description="Role when the token names none.")
    max_token_bytes: int = Field(default=8192, ge=256)

    @property
    def enabled(self) -> bool:
        return bool(self.algorithms)

    @model_validator(mode="after")
    def _consistent(self) -> JwtSettings:
        if not self.algorithms:
            return self
        unknown = set(self.algorithms) - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ValueError(f"algorithms: not allowed: {', '.join(sorted(unknown))} ('none' never is)")
        hmac = set(self.algorithms) & HMAC_ALGORITHMS
        if hmac and hmac != set(self.algorithms):
            raise ValueError("algorithms: do not mix HS* with asymmetric algorithms (key confusion)")
        if hmac and not self.secret:
            raise ValueError("HS* algorithms need 'secret' ('env:NAME' or 'file:/path')")
        if hmac and (self.public_key or self.jwks_file or self.jwks_url):
            raise ValueError("HS* algorithms use 'secret' only, not public keys")
        if not hmac and not (self.public_key or self.jwks_file or self.jwks_url):
            raise ValueError("asymmetric algorithms need 'public_key', 'jwks_file' or 'jwks_url'")
        if not hmac and self.secret:
            raise ValueError("'secret' is only for HS* algorithms")
        return self


class CertPrincipal(_Strict):
    role: str
    tenant: str = "default"
    name: str | None = None


class ClientCertSettings(_Strict):
    """mTLS: a verified client certificate's subject (RFC 4514, e.g. 'CN=ci,O=Acme') → a principal."""

    subjects: dict[str, CertPrincipal] = Field(default_factory=dict)
    default_role: str | None = Field(
        default=None, description="Role for a verified certificate not listed in 'subjects' (None: refused)."
    )
    default_tenant: str = "default"


class TenantSettings(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=1, description="Shared by all of its keys.")


class McpPolicy(_Strict):
    """What tool servers registered over the network may be."""

    allow_commands: bool = Field(default=False, description="Allow MCP servers started by command over HTTP.")
    executables: list[str] = Field(default_factory=list, description="Programs such servers may run.")
    child_env: list[str] = Field(
        default_factory=lambda: ["TZ", "LC_ALL", "NO_COLOR"],
        description="Variables a registered command server may set (besides PATH, HOME, LANG).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts ('mcp.example.com', '*.example.com') and networks ('10.1.0.0/16') MCP URLs may reach.",
    )
    timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds to connect and list tools.")
    description_max_chars: int = Field(default=1000, ge=50, le=100_000)


class SecuritySettings(_Strict):
    tenants: dict[str, TenantSettings] = Field(default_factory=lambda: {"default": TenantSettings()})
    roles: dict[str, list[str]] = Field(default_factory=dict, description="Custom roles: name → permissions.")
    anonymous_role: str = Field(default="operator", description="The caller's role when http.auth is off.")
    jwt: JwtSettings = Field(default_factory=JwtSettings)
    client_certs: ClientCertSettings = Field(default_factory=ClientCertSettings)
    mcp: McpPolicy = Field(default_factory=McpPolicy)
    failed_auth_per_minute: int = Field(
        default=30, ge=1, description="Failed authentications per client address."
    )
    key_cache_size: int = Field(default=10_000, ge=10, description="API keys kept verified in memory (LRU).")

    @model_validator(mode="after")
    def _roles_exist(self) -> SecuritySettings:
        table = RoleTable(self.roles)
        named = [self.anonymous_role, self.client_certs.default_role, self.jwt.default_role]
        named += [c.role for c in self.client_certs.subjects.values()]
        for role in named:
            if role is not None and role not in table.roles:
                raise ValueError(f"role {role!r} does not exist (roles: {', '.join(sorted(table.roles))})")
        tenants = [self.jwt.default_tenant, self.client_certs.default_tenant]
        tenants += [c.tenant for c in self.client_certs.subjects.values()]
        for tenant in tenants:
            if tenant not in self.tenants:
                raise ValueError(f"tenant {tenant!r} is not in security.tenants")
        return self


class SecretsSettings(_Strict):
    allowed_env: list[str] | None = Field(
        default=None,
        description="Variables 'env:' may name in changes made over HTTP (default: those the providers name).",
    )


def env_references(data: Any) -> set[str]:
    """Every variable named by an ``env:NAME`` string anywhere in ``data``."""
    if isinstance(data, dict):
        return set().union(*(env_references(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(env_references(v) for v in data)) if data else set()
    if isinstance(data, str) and data.startswith("env:"):
        return {data[4:]}
    return set()
