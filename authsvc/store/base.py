"""The storage contract. Backends hold opaque, already-encrypted template blobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CustomerRecord:
    tenant: str
    customer_id: str
    created_ms: int
    # The customer's registration choices and consent (empty until registered).
    methods: tuple[str, ...] = ()
    opted_out: bool = False
    consent_version: str = ""
    consent_ms: int = 0
    registered: bool = False


@dataclass(frozen=True)
class Erasure:
    templates: int
    secrets: int


@dataclass(frozen=True)
class AuditEvent:
    """Who did what to whom, when, with which outcome. Never biometric data."""

    tenant: str
    time_ms: int
    actor: str
    action: str
    customer_id: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass(frozen=True)
class TemplateRow:
    """One enrollment sample's template. `digest` makes re-enrolling the same sample a no-op."""

    tenant: str
    customer_id: str
    modality: str
    encoder_id: str
    encoder_version: str
    digest: str
    key_id: str
    blob: bytes
    created_ms: int
    label: str = ""


class Store(Protocol):
    def get_data_key(self, tenant: str) -> tuple[str, bytes] | None:
        """-> (master key id, wrapped data key) for the tenant, or None."""

    def put_data_key(self, tenant: str, master_key_id: str, wrapped: bytes) -> tuple[str, bytes]:
        """Stores the tenant's data key unless one exists; returns the one that is stored."""

    def ensure_customer(self, tenant: str, customer_id: str, now_ms: int) -> CustomerRecord: ...

    def get_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None: ...

    def list_customers(self, tenant: str, limit: int, after: str = "") -> list[CustomerRecord]:
        """Customers with id > `after`, in id order (keyset pagination)."""

    def set_choices(
        self,
        tenant: str,
        customer_id: str,
        methods: list[str],
        opted_out: bool,
        consent_version: str,
        now_ms: int,
    ) -> CustomerRecord:
        """Records the registration choice and consent (creating the customer if needed)."""

    def delete_customer(self, tenant: str, customer_id: str) -> Erasure | None:
        """Erases the customer, all templates and all state (factor secrets); None if unknown."""

    def add_template(self, row: TemplateRow) -> bool:
        """Inserts the template; False (and nothing changes) if its digest is already stored."""

    def templates(self, tenant: str, customer_id: str, modality: str | None = None) -> list[TemplateRow]: ...

    def replace_template(self, row: TemplateRow) -> None:
        """Inserts or overwrites the template with the same identity (profiles that grow)."""

    def delete_templates(self, tenant: str, customer_id: str, modalities: list[str]) -> int:
        """Deletes the customer's templates of these modalities; -> rows deleted."""

    def get_state(self, tenant: str, customer_id: str, name: str) -> bytes | None:
        """Per-customer state (factor secrets, counters), sealed by the caller where secret."""

    def state_names(self, tenant: str, customer_id: str) -> list[str]: ...

    def put_state(self, tenant: str, customer_id: str, name: str, blob: bytes, now_ms: int) -> None: ...

    def delete_state(self, tenant: str, customer_id: str, name: str) -> None: ...

    def get_secret(self, name: str) -> bytes | None:
        """Service-wide sealed secrets (the assertion signing keys)."""

    def put_secret(self, name: str, blob: bytes) -> None: ...

    def use_assertion(self, jti: str, tenant: str, expires_ms: int, now_ms: int) -> int:
        """Counts one use of an assertion id; -> uses so far. Expired ids are forgotten."""

    def append_audit(self, event: AuditEvent) -> int: ...

    def list_audit(
        self, tenant: str, limit: int, before_id: int | None = None, customer_id: str = ""
    ) -> list[AuditEvent]:
        """Newest first; `before_id` pages backwards."""

    def close(self) -> None: ...
