"""What a customer agreed to: nothing is enrolled for a method they did not choose, with consent."""

from __future__ import annotations

from authsvc.errors import PreconditionFailed
from authsvc.store.base import CustomerRecord

METHODS = ("voice", "typing", "totp", "one_time_code")
BIOMETRIC_METHODS = ("voice", "typing")


def require_consent(
    record: CustomerRecord | None, tenant: str, customer_id: str, method: str
) -> CustomerRecord:
    """The customer's record if they registered `method` with a consent record; else
    PreconditionFailed naming what is missing."""
    who = f"customer {tenant}/{customer_id}"
    if record is None or not record.registered:
        raise PreconditionFailed(
            f"{who} has no registration with consent; register them with method {method!r} "
            "(RegisterCustomer / authsvc register) before enrolling it"
        )
    if record.opted_out and method in BIOMETRIC_METHODS:
        raise PreconditionFailed(f"{who} opted out of biometrics; nothing is enrolled")
    if method not in record.methods:
        raise PreconditionFailed(
            f"{who} did not choose {method!r} at registration "
            f"(chose: {', '.join(record.methods) or 'nothing'}); register it with consent first"
        )
    return record
