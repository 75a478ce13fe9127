"""The storage contract. Backends hold opaque, already-encrypted template blobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CustomerRecord:
    tenant: str
    customer_id: str
    created_ms: int


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

    def delete_customer(self, tenant: str, customer_id: str) -> int | None:
        """Deletes the customer and all their templates; -> templates deleted, None if unknown."""

    def add_template(self, row: TemplateRow) -> bool:
        """Inserts the template; False (and nothing changes) if its digest is already stored."""

    def templates(self, tenant: str, customer_id: str, modality: str | None = None) -> list[TemplateRow]: ...

    def close(self) -> None: ...
