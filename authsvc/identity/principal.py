"""The authenticated caller of one request."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from authsvc.identity.roles import EVIDENCE_ROLES, PLATFORM_ADMIN


@dataclass(frozen=True)
class Principal:
    # The credential's id ("key_…" or "cert_…"); the audit trail's actor.
    id: str
    # '' for a platform-wide principal.
    tenant: str
    roles: frozenset[str]
    # The peer as gRPC reports it ("ipv4:10.0.0.7:53122").
    source: str = ""
    # "api_key" or "certificate".
    via: str = "api_key"

    @property
    def sees_evidence(self) -> bool:
        return bool(self.roles & EVIDENCE_ROLES)

    @property
    def platform(self) -> bool:
        return not self.tenant and PLATFORM_ADMIN in self.roles

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def origin(self) -> str:
        """ "<credential>@<peer address>": one caller from one place (the peer's port varies
        per connection, so it is left out)."""
        host = self.source.rsplit(":", 1)[0] if self.source.count(":") >= 2 else self.source
        return f"{self.id}@{host}"


# Set by the server's interceptor for the request being handled (each RPC runs in its own task).
CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current() -> Principal | None:
    return CURRENT.get()


def actor(fallback: str = "service") -> str:
    """The audit actor of the running request: its principal, never a field of the request."""
    p = CURRENT.get()
    return p.id if p is not None else fallback
