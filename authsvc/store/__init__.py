"""Persistence behind the `Store` protocol; SQLite is the embedded default."""

from authsvc.store.base import CustomerRecord, Store, TemplateRow

__all__ = ["CustomerRecord", "Store", "TemplateRow"]
