"""Who may change what already protects a customer.

A confirmed TOTP secret, the one-time code destination and the biometric
templates are what an account takeover replaces, or quietly adds to, first.
Once a customer is protected (has a template or an active second factor) and
their enrollment window (`enrollment.window_s` after they first registered) has closed,
any change to that protection needs a tenant-admin principal, or an assertion
of that same customer, issued by this service at the assurance level the
tenant's policy demands (AAL2 where step-up is required) within
`assertion.change_window_s`: a re-registration, another sample, a new
modality, a new or replaced factor. Replacing a confirmed TOTP secret or the
code destination, and dropping templates, need it even inside the window.
An assertion authorizes a change only if it was never used before, and its
authentication event (shared by every assertion one session issues) is then
used up: one authentication, one change.
"""

from __future__ import annotations

from dataclasses import replace

from authsvc.errors import PermissionDenied
from authsvc.identity.principal import Principal
from authsvc.identity.roles import TENANT_ADMIN
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup.assertions import AALS, AssertionRejected
from authsvc.store.base import CustomerRecord
from authsvc.trust import AssertionAuthority

CHANNEL = "enrollment"
REASON = "CHANGE_NOT_AUTHORIZED"


def required_level(policy: TenantPolicy) -> str:
    """Where a biometric alone authenticates (general), its assertion (no AAL) authorizes too."""
    return "AAL2" if policy.step_up.required else ""


async def authorize(
    trust: AssertionAuthority, policy: TenantPolicy, customer_id: str, principal: Principal, assertion: str
) -> str | None:
    """-> how a replacement is authorized ("tenant-admin", "assertion:<id>"), or None when neither
    holds. An assertion that is given but unusable is refused outright (PermissionDenied)."""
    if principal.has(TENANT_ADMIN):
        return TENANT_ADMIN
    if not assertion:
        return None
    # max_uses = 1: only an assertion used nowhere yet counts, and this use is its only one here.
    once = replace(policy, assertion=replace(policy.assertion, max_uses=1))
    try:
        claims = await trust.validate(once, assertion, CHANNEL, once_per_authentication=True)
    except AssertionRejected as exc:
        raise PermissionDenied(REASON, f"the authorization assertion was refused: {exc}") from exc
    if claims.customer_id != customer_id:
        raise PermissionDenied(REASON, "the authorization assertion names another customer")
    if AALS.index(claims.assurance_level) < AALS.index(required_level(policy)):
        raise PermissionDenied(
            REASON,
            f"the authorization assertion is {claims.assurance_level or 'of no AAL'}; this tenant needs "
            f"{required_level(policy)} to replace a customer's protection",
        )
    if trust.clock() - claims.issued_at > policy.assertion.change_window_s:
        raise PermissionDenied(
            REASON,
            f"the authorization assertion is older than {policy.assertion.change_window_s:.0f} s; "
            "authenticate the customer again",
        )
    return f"assertion:{claims.id}"


def enrollment_open(policy: TenantPolicy, record: CustomerRecord, now_ms: int) -> bool:
    """Whether the customer is still in the enrollment window their first registration opened
    (from the record's creation: re-registering does not extend it)."""
    return record.registered and now_ms - record.created_ms <= policy.enrollment.window_s * 1000


def require(change: str | None, what: str) -> None:
    if change is None:
        raise refuse(what)


def refuse(what: str) -> PermissionDenied:
    return PermissionDenied(
        REASON,
        f"{what}: this customer is already protected, so the change needs a fresh assertion of the "
        "customer (authorization.assertion) or a tenant-admin",
    )
