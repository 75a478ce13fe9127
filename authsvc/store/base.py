"""The storage contract: an async store that hands out units of work.

Every use case that reads, checks and writes runs inside one
`async with store.transaction() as tx:` block, so concurrent requests (and
several service nodes sharing one PostgreSQL database) cannot both win a
race: the block commits when it ends and rolls back when it raises. Inside
it, `tx.lock_customer` serialises writers of one customer's state (a row
lock on PostgreSQL, the database write lock on SQLite). Backends hold
opaque, already-encrypted blobs; no plaintext template or secret reaches
them. No method runs on the event loop thread: SQLite works through one
executor thread, PostgreSQL through an async connection pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from authsvc.errors import AuthsvcError


class StoreUnavailable(AuthsvcError):
    """The database cannot be reached now; the request may be retried after `retry_after_s`.

    The message names the database (for the operator's log and the CLI); callers of the API
    get `public_message`, which does not describe the service's internals."""

    reason = "STORE_UNAVAILABLE"
    public_message = "the service's database is unavailable; retry after the delay given"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
    # The last enrollment or successful authentication (retention counts from it), and when the
    # biometric templates expired for want of one (0: never).
    last_active_ms: int = 0
    expired_ms: int = 0


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
class WatchlistRecord:
    tenant: str
    name: str
    description: str
    created_ms: int
    created_by: str
    members: int = 0


@dataclass(frozen=True)
class FraudsterRow:
    """A known fraudster's sealed voiceprint on one watchlist of a tenant."""

    tenant: str
    watchlist: str
    fraudster_id: str
    encoder_id: str
    encoder_version: str
    key_id: str
    blob: bytes
    samples: int
    created_ms: int
    created_by: str


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


@dataclass(frozen=True)
class TenantRecord:
    name: str
    # "general", "finance" or "health": the floor a policy file may not go below.
    sector: str
    created_ms: int
    created_by: str


@dataclass(frozen=True)
class CredentialRecord:
    """A principal's credential: an API key (only its hash is stored) or a certificate identity."""

    id: str
    tenant: str  # '' for platform-wide
    kind: str  # "api_key" | "certificate"
    roles: tuple[str, ...]
    created_ms: int
    created_by: str
    secret_hash: str = ""
    subject: str = ""
    description: str = ""
    expires_ms: int = 0  # 0: does not expire
    revoked_ms: int = 0  # 0: not revoked
    last_used_ms: int = 0


@dataclass(frozen=True)
class Secret:
    """A service-wide sealed secret and its version, for compare-and-swap updates."""

    blob: bytes
    version: int


class Transaction(Protocol):
    """One unit of work. Every method is a coroutine that runs off the event loop."""

    async def lock_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None:
        """Locks the customer against concurrent writers until the unit of work ends; None if unknown."""

    async def get_data_key(self, tenant: str) -> tuple[str, bytes] | None:
        """-> (master key id, wrapped data key) for the tenant, or None."""

    async def put_data_key(self, tenant: str, master_key_id: str, wrapped: bytes) -> tuple[str, bytes]:
        """Stores the tenant's data key unless one exists; returns the one that is stored."""

    async def data_keys(self) -> list[tuple[str, str, bytes]]:
        """Every (tenant, master key id, wrapped data key), locked for a re-wrap."""

    async def rewrap_data_key(self, tenant: str, old_key_id: str, new_key_id: str, wrapped: bytes) -> bool:
        """Replaces the wrapping if it is still by `old_key_id`; -> whether it was replaced."""

    async def master_key_ids(self) -> set[str]:
        """Ids of the master keys that wrap stored data keys (empty: nothing sealed is stored)."""

    async def has_sealed_data(self) -> bool:
        """Whether anything sealed by a master key (data keys, service secrets) is stored."""

    async def ensure_customer(self, tenant: str, customer_id: str, now_ms: int) -> CustomerRecord: ...

    async def get_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None: ...

    async def list_customers(self, tenant: str, limit: int, after: str = "") -> list[CustomerRecord]:
        """Customers with id > `after`, in id order (keyset pagination)."""

    async def set_choices(
        self,
        tenant: str,
        customer_id: str,
        methods: list[str],
        opted_out: bool,
        consent_version: str,
        now_ms: int,
    ) -> CustomerRecord:
        """Records the registration choice and consent (creating the customer if needed)."""

    async def touch_customer(
        self, tenant: str, customer_id: str, now_ms: int, enrolled: bool = False
    ) -> None:
        """Records an enrollment (`enrolled`: also clears an expiry) or a successful authentication."""

    async def stale_customers(
        self, tenant: str, before_ms: int, state_prefixes: Sequence[str], limit: int, after: str = ""
    ) -> list[CustomerRecord]:
        """Customers inactive since before `before_ms` who still hold a template or a state whose
        name starts with one of `state_prefixes` and was last written before `before_ms` (voices
        a dormant customer's calls gather now are not yet due), by id after `after`."""
        ...

    async def mark_expired(self, tenant: str, customer_id: str, now_ms: int) -> None: ...

    async def retention_tenants(self) -> list[str]:
        """Every tenant with customers or an audit trail."""
        ...

    async def delete_customer(self, tenant: str, customer_id: str) -> Erasure | None:
        """Erases the customer, all templates and all state (factor secrets); None if unknown.

        The backend also scrubs what it can of the deleted rows from its files once the unit of
        work commits (SQLite: secure_delete and a truncating WAL checkpoint)."""

    async def add_template(self, row: TemplateRow) -> bool:
        """Inserts the template; False (and nothing changes) if its digest is already stored."""

    async def templates(
        self, tenant: str, customer_id: str, modality: str | None = None
    ) -> list[TemplateRow]: ...

    async def clear_labels(self) -> list[tuple[int, str, str, str, str]]:
        """(row id, tenant, customer, modality, label) of templates whose label is not sealed."""

    async def set_template_label(self, row_id: int, label: str) -> None: ...

    async def replace_template(self, row: TemplateRow) -> None:
        """Inserts or overwrites the template with the same identity (profiles that grow)."""

    async def delete_templates(self, tenant: str, customer_id: str, modalities: list[str]) -> int:
        """Deletes the customer's templates of these modalities; -> rows deleted."""

    async def get_state(self, tenant: str, customer_id: str, name: str) -> bytes | None:
        """Per-customer state (factor secrets, counters), sealed by the caller where secret."""

    async def state_names(self, tenant: str, customer_id: str, before_ms: int | None = None) -> list[str]:
        """The customer's state names; with `before_ms`, only those last written before it."""
        ...

    async def put_state(self, tenant: str, customer_id: str, name: str, blob: bytes, now_ms: int) -> None: ...

    async def delete_state(self, tenant: str, customer_id: str, name: str) -> None: ...

    async def get_secret(self, name: str, for_update: bool = False) -> Secret | None:
        """A service-wide sealed secret (the assertion signing keys); `for_update` locks its row."""

    async def put_secret(self, name: str, blob: bytes, expected_version: int) -> bool:
        """Compare-and-swap: writes version `expected_version + 1` only if the stored version is
        `expected_version` (0: only if none is stored). -> whether it was written."""

    async def use_assertion(self, jti: str, tenant: str, max_uses: int, expires_ms: int, now_ms: int) -> bool:
        """Counts one use of an assertion id unless it has been used `max_uses` times already;
        -> whether the use was counted. Expired ids are forgotten."""

    async def create_tenant(self, record: TenantRecord) -> bool:
        """Inserts the tenant; False (nothing changes) if one of that name exists."""

    async def get_tenant(self, name: str) -> TenantRecord | None: ...

    async def list_tenants(self) -> list[TenantRecord]: ...

    async def set_tenant_sector(self, name: str, sector: str) -> None: ...

    async def put_credential(self, record: CredentialRecord) -> None: ...

    async def get_credential(self, credential_id: str) -> CredentialRecord | None: ...

    async def credentials_by_subject(self, subjects: list[str]) -> list[CredentialRecord]:
        """Unrevoked certificate credentials whose subject is one of `subjects`."""

    async def list_credentials(self, tenant: str) -> list[CredentialRecord]: ...

    async def revoke_credential(self, credential_id: str, now_ms: int) -> bool:
        """Marks it revoked; False if unknown or already revoked."""

    async def touch_credential(self, credential_id: str, now_ms: int) -> None:
        """Records a use (last_used_ms)."""

    async def audit_chain_from(self) -> tuple[int, str]:
        """(The first audit id written with a hash: rows before it predate the chain, its MAC
        ('' until a node of this version first started))."""

    async def seal_audit_chain_from(self, mac: str) -> None:
        """Stores the MAC of the chain's start unless one is stored."""

    async def audit_head(self, tenant: str, lock: bool = True) -> tuple[int, str, str]:
        """-> (id, hash, MAC) of the tenant's newest chained audit row ((0, '', '') for none);
        `lock` holds the head until the unit of work ends, so the tenant's rows chain one after
        another."""

    async def set_audit_head(self, tenant: str, last_id: int, last_hash: str, head_mac: str) -> None: ...

    async def audit_trim(self, tenant: str) -> tuple[int, str, str]:
        """(last deleted id, its hash, the MAC over both) of the tenant's retention trims."""
        ...

    async def trim_audit(self, tenant: str, before_ms: int, limit: int) -> tuple[int, int, str]:
        """Deletes up to `limit` of the tenant's oldest rows written before `before_ms` (only a
        run from the start: never a row after a retained one); -> (deleted, last id, its hash)."""
        ...

    async def set_audit_trim(self, tenant: str, trim_id: int, trim_hash: str, trim_mac: str) -> None: ...

    async def append_audit(self, event: AuditEvent, prev_hash: str = "", row_hash: str = "") -> int: ...

    async def audit_chain(self, tenant: str, after_id: int, limit: int) -> list[tuple[AuditEvent, str, str]]:
        """Rows with id > after_id in id order, each with (prev_hash, row_hash)."""

    async def list_audit(
        self,
        tenant: str,
        limit: int,
        before_id: int | None = None,
        customer_id: str = "",
        *,
        action: str = "",
        outcome: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
    ) -> list[AuditEvent]:
        """Newest first; `before_id` pages backwards. Every filter given must match: `action`
        names an action or its dotted family ("enroll" matches "enroll.voice"), `outcome` one
        exactly, `since_ms` (inclusive) and `until_ms` (exclusive) the time range; 0 is open."""

    async def tenant_templates(
        self, tenant: str, modality: str, encoder_id: str, encoder_version: str
    ) -> list[TemplateRow]:
        """Every customer's templates of one modality and encoder in the tenant (labels left out)."""

    # -- watchlists (known fraudsters) ---------------------------------------------------------

    async def create_watchlist(self, record: WatchlistRecord) -> bool:
        """False if the tenant already has a watchlist of that name."""

    async def list_watchlists(self, tenant: str) -> list[WatchlistRecord]: ...

    async def delete_watchlist(self, tenant: str, name: str) -> int | None:
        """-> fraudsters removed with it; None if there was no such list."""

    async def put_fraudster(self, row: FraudsterRow) -> bool:
        """Adds or replaces a fraudster's voiceprint; False if it replaced one."""

    async def delete_fraudster(self, tenant: str, watchlist: str, fraudster_id: str) -> bool: ...

    async def fraudsters(self, tenant: str, watchlist: str | None = None) -> list[FraudsterRow]: ...

    async def watchlist_version(self, tenant: str) -> int:
        """Counts every change of the tenant's watchlists (0: never changed)."""

    async def bump_watchlist_version(self, tenant: str) -> int: ...


class Store(Protocol):
    #: Where the data lives, safe to log (a PostgreSQL DSN without its password).
    description: str
    #: "sqlite" or "postgresql": which migrations (authsvc/store/migrations/<dialect>) apply.
    dialect: str

    def transaction(self, *, read_only: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """A unit of work: commits when the block ends, rolls back when it raises. `read_only`: it
        only reads (a write in it is refused), and sees the store as committed when it began,
        without waiting for units that write."""

    async def migrate(self) -> list[int]:
        """Applies pending schema migrations; -> the versions applied (empty: up to date)."""

    async def schema_version(self) -> int: ...

    async def ping(self) -> None:
        """Raises StoreUnavailable when the database cannot answer now."""

    async def close(self) -> None: ...


@asynccontextmanager
async def within(store: Store, tx: Transaction | None) -> AsyncIterator[Transaction]:
    """The caller's unit of work when it has one, else a new one: lets a facade method be a
    step of a larger use case or a use case of its own."""
    if tx is not None:
        yield tx
        return
    async with store.transaction() as own:
        yield own
