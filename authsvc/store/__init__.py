"""Persistence behind the `Store` protocol; SQLite is the embedded default."""

from authsvc.store.base import AuditEvent, CustomerRecord, Erasure, Store, TemplateRow

__all__ = ["AuditEvent", "CustomerRecord", "Erasure", "Store", "TemplateRow"]
