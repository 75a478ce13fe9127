"""The audit trail: decisions, step-up attempts, enrollments, erasures, policy changes.

Records who, when, what and the outcome, never biometric data (no scores of
templates, no audio, no codes): details are ids, policy versions and reasons.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from authsvc.store.base import AuditEvent, Store

log = logging.getLogger(__name__)


class Auditor:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self, tenant: str, action: str, customer_id: str, outcome: str, actor: str = "service", **details: Any
    ) -> None:
        event = AuditEvent(
            tenant, int(time.time() * 1000), actor or "unknown", action, customer_id, outcome, details
        )
        try:
            self.store.append_audit(event)
        except Exception:  # the decision itself must not fail because the audit write did
            log.exception("audit write failed: %s", event)
