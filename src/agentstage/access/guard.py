"""The guard every door shares: authenticate, authorize, admit (rate limits) and audit.

One object per process, built by the runtime from the settings and the store; doors gather
credentials from their transport, call these four verbs, and hand the principal to the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from agentstage.access import audit as audit_rows
from agentstage.access.apikeys import KeyStore, KeyVerifier
from agentstage.access.audit import AuditLog, AuditStore
from agentstage.access.config import SecuritySettings
from agentstage.access.limits import LimitStore, RateLimiter
from agentstage.access.permissions import SENSITIVE, require
from agentstage.access.principals import Authenticator, Credentials, Principal
from agentstage.errors import AgentstageError, TooManyRequestsError, UnauthorizedError


class SecurityStore(KeyStore, AuditStore, LimitStore, Protocol):
    pass


class Guard:
    def __init__(
        self,
        settings: SecuritySettings,
        store: SecurityStore,
        *,
        auth_enabled: bool,
        default_rate: int,
        on_audit_lost: Callable[[int], None] | None = None,
    ):
        self.settings = settings
        self.default_rate = default_rate
        self.keys = KeyVerifier(store, settings.key_cache_size)
        self.authenticator = Authenticator(settings, self.keys, enabled=auth_enabled)
        self.limiter = RateLimiter(store)
        self.audit_log = AuditLog(store, on_audit_lost)
        self.store = store

    @property
    def auth_enabled(self) -> bool:
        return self.authenticator.enabled

    def start(self) -> None:
        self.audit_log.start()

    async def close(self) -> None:
        await self.audit_log.close()

    async def authenticate(self, credentials: Credentials) -> Principal:
        """The principal, or 401/403. An address whose credentials keep failing gets 429 for its
        failures (valid credentials from the same address, e.g. behind one NAT, still work)."""
        failures = f"authfail:{credentials.client or 'unknown'}"
        rate = self.settings.failed_auth_per_minute
        try:
            return await self.authenticator.authenticate(credentials)
        except UnauthorizedError:
            if not credentials.presented:
                raise
            if self.limiter.blocked(failures):
                raise self._too_many_failures(rate) from None
            wait = await self.limiter.take(failures, rate)
            if wait > 0:
                self.limiter.mark_blocked(failures, wait, rate)
                raise self._too_many_failures(rate) from None
            raise

    @staticmethod
    def _too_many_failures(rate: int) -> TooManyRequestsError:
        return TooManyRequestsError(
            f"more than {rate} failed authentications per minute from this address; wait a minute",
            code="too_many_failed_authentications",
            retry_after=60,
        )

    async def audit_entries(self, **filters: Any) -> list[dict[str, Any]]:
        await self.audit_log.flush()
        return await self.store.audit_entries(**filters)

    @staticmethod
    def authorize(principal: Principal, permission: str) -> None:
        require(principal.permissions, permission)

    async def admit(self, principal: Principal, count: int = 1, client: str | None = None) -> None:
        """Count ``count`` requests against the principal's and its tenant's limits, or raise 429."""
        per_key = principal.requests_per_minute or self.default_rate
        identity = f"client:{client}" if principal.kind == "anonymous" else f"{principal.kind}:{principal.id}"
        checks = [(identity, per_key, "this key")]
        tenant_rate = self.authenticator.tenant_rate(principal.tenant)
        if tenant_rate is not None:
            checks.append((f"tenant:{principal.tenant}", tenant_rate, f"tenant {principal.tenant!r}"))
        for bucket, per_minute, who in checks:
            if count > per_minute:
                raise TooManyRequestsError(
                    f"{count} requests at once are more than {who}'s limit of {per_minute} per minute",
                    retry_after=60,
                )
            wait = await self.limiter.take(bucket, per_minute, count)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                raise TooManyRequestsError(
                    f"more than {per_minute} requests per minute for {who}; retry in {retry}s",
                    retry_after=retry,
                )

    async def record(
        self,
        principal: Principal | None,
        action: str,
        target: str,
        *,
        allowed: bool,
        status: int | None = None,
        client: str | None = None,
        user_agent: str | None = None,
        request_id: str | None = None,
        error: AgentstageError | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """One audit row. A denial and a sensitive change (configuration, keys, tool servers) wait
        until their row is durable, so they are answered only once it is kept; any other change (a
        run started, cancelled, a message) hands its row to the next group commit, written at once
        but not awaited: the run's own durable record already names who started it, and holding
        every answer for a second commit cost each run's first event about 1.5 ms.

        When the row cannot be written, the audit log has logged and counted it; a sensitive change
        then raises, anything else is answered as it would be: its effect has already happened, and
        an error would only make the client repeat it."""
        info = dict(details or {})
        if error is not None:
            info["code"] = error.code
        row = audit_rows.entry(
            principal=principal.label if principal else "unauthenticated",
            tenant=principal.tenant if principal else None,
            action=action,
            target=target,
            outcome="allowed" if allowed else "denied",
            status=status,
            client=client,
            user_agent=user_agent,
            request_id=request_id,
            details=info,
        )
        sensitive = allowed and action in SENSITIVE
        try:
            await self.audit_log.record(row, durable=sensitive or not allowed)
        except Exception:
            if sensitive:
                raise
