"""Who may replace what already protects a customer.

A confirmed TOTP secret, the one-time code destination and the biometric
templates are what an account takeover replaces first. Replacing one needs a
tenant-admin principal, or an assertion of that same customer, issued by this
service at the assurance level the tenant's policy demands (AAL2 where step-up
is required) within `assertion.change_window_s`. The assertion is used up like
any validation, so one authentication authorizes one change.
"""

from __future__ import annotations

from authsvc.errors import PermissionDenied
from authsvc.identity.principal import Principal
from authsvc.identity.roles import TENANT_ADMIN
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup.assertions import AALS, AssertionRejected
from authsvc.trust import AssertionAuthority

CHANNEL = "enrollment"
REASON = "CHANGE_NOT_AUTHORIZED"


def required_level(policy: TenantPolicy) -> str:
    return "AAL2" if policy.step_up.required else "AAL1"


async def authorize(
    trust: AssertionAuthority, policy: TenantPolicy, customer_id: str, principal: Principal, assertion: str
) -> str | None:
    """-> how a replacement is authorized ("tenant-admin", "assertion:<id>"), or None when neither
    holds. An assertion that is given but unusable is refused outright (PermissionDenied)."""
    if principal.has(TENANT_ADMIN):
        return TENANT_ADMIN
    if not assertion:
        return None
    try:
        claims = await trust.validate(policy, assertion, CHANNEL)
    except AssertionRejected as exc:
        raise PermissionDenied(REASON, f"the authorization assertion was refused: {exc}") from exc
    if claims.customer_id != customer_id:
        raise PermissionDenied(REASON, "the authorization assertion names another customer")
    if AALS.index(claims.assurance_level) < AALS.index(required_level(policy)):
        raise PermissionDenied(
            REASON,
            f"the authorization assertion is {claims.assurance_level}; this tenant needs "
            f"{required_level(policy)} to replace a customer's protection",
        )
    if trust.clock() - claims.issued_at > policy.assertion.change_window_s:
        raise PermissionDenied(
            REASON,
            f"the authorization assertion is older than {policy.assertion.change_window_s:.0f} s; "
            "authenticate the customer again",
        )
    return f"assertion:{claims.id}"


def refuse(what: str) -> PermissionDenied:
    return PermissionDenied(
        REASON,
        f"{what} already protects this customer; replacing it needs a fresh assertion of the customer "
        "(authorization.assertion) or a tenant-admin",
    )
