"""Persistence behind the async `Store` protocol: SQLite (embedded default) or PostgreSQL (shared)."""

from __future__ import annotations

import os
from pathlib import Path

from authsvc.errors import ConfigError
from authsvc.store.base import (
    AuditEvent,
    CustomerRecord,
    Erasure,
    Secret,
    Store,
    StoreUnavailable,
    TemplateRow,
    Transaction,
    within,
)

__all__ = [
    "STORE_ENV",
    "AuditEvent",
    "CustomerRecord",
    "Erasure",
    "Secret",
    "Store",
    "StoreUnavailable",
    "TemplateRow",
    "Transaction",
    "open_store",
    "store_spec",
    "within",
]

STORE_ENV = "AUTHSVC_STORE"
SQLITE_FILE = "authsvc.sqlite3"


def store_spec(spec: str | None, data_dir: Path) -> str:
    """The store to use: `spec`, else $AUTHSVC_STORE, else the SQLite file in the data directory."""
    spec = spec or os.environ.get(STORE_ENV, "")
    return spec or f"sqlite:{data_dir / SQLITE_FILE}"


async def open_store(spec: str, pool_size: int = 8) -> Store:
    """`postgresql://...` (or `postgres://`, or a libpq key=value string with `host=`) or
    `sqlite:PATH`. Raises StoreUnavailable when the database cannot be reached. `pool_size`:
    PostgreSQL connections of this process (units of work beyond it wait for one)."""
    if pool_size < 1:
        raise ConfigError(f"the store's pool size must be at least 1, got {pool_size}")
    if spec.startswith("sqlite:"):
        from authsvc.store.sqlite import SQLiteStore

        return await SQLiteStore.open(spec.removeprefix("sqlite:"))
    if spec.startswith(("postgresql://", "postgres://")) or "host=" in spec or "dbname=" in spec:
        from authsvc.store.postgres import PostgresStore

        return await PostgresStore.open(spec, max_size=pool_size)
    raise ConfigError("store must be sqlite:PATH or a postgresql:// DSN (the value is not repeated here)")
