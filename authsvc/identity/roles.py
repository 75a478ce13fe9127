"""The one table of which role may call which method.

Every RPC of every service in proto/ has a row (tests/test_identity_roles.py
walks the descriptors and fails on a missing one); a method without a row is
refused. `scope` says whose data the call touches:

* TENANT: the request's `tenant` must be the principal's own tenant;
* CREDENTIALS: a tenant-admin in its own tenant, or a platform-admin in any;
* PLATFORM: platform-wide principals only (tenant management).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TELEPHONY = "telephony"
AGENT = "agent"
ENROLLMENT = "enrollment"
TENANT_ADMIN = "tenant-admin"
PLATFORM_ADMIN = "platform-admin"
# Not a role for any method: lets a principal see raw scores, LLRs and thresholds in decisions.
EVIDENCE = "evidence"

TENANT_ROLES = (TELEPHONY, AGENT, ENROLLMENT, TENANT_ADMIN, EVIDENCE)
ROLES = (*TENANT_ROLES, PLATFORM_ADMIN)
# Principals that may see a decision's scores: the tenant's administrators and explicit grants.
EVIDENCE_ROLES = frozenset({EVIDENCE, TENANT_ADMIN})


class Scope(enum.Enum):
    TENANT = "tenant"
    CREDENTIALS = "credentials"
    PLATFORM = "platform"


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    scope: Scope = Scope.TENANT


def _rule(*roles: str, scope: Scope = Scope.TENANT) -> Rule:
    return Rule(frozenset(roles), scope)


_P = "/authsvc.v1."
METHODS: dict[str, Rule] = {
    # A call in progress: verify (with the step-up answers and code requests inside the stream),
    # and the other channel's check of an assertion.
    f"{_P}VerificationService/Verify": _rule(TELEPHONY),
    # A live call found by its id: naming its customer, following its decisions.
    f"{_P}VerificationService/ClaimIdentity": _rule(TELEPHONY, AGENT),
    f"{_P}VerificationService/WatchSession": _rule(TELEPHONY, AGENT),
    f"{_P}AssertionService/ValidateAssertion": _rule(TELEPHONY, AGENT),
    # Enrollment: registration with consent, samples, second factors, reading one customer.
    # Replacing what already protects a customer needs more (see authsvc.enrollment.gates).
    f"{_P}EnrollmentService/RegisterCustomer": _rule(ENROLLMENT, TENANT_ADMIN),
    f"{_P}EnrollmentService/EnrollVoice": _rule(ENROLLMENT),
    f"{_P}EnrollmentService/EnrollKeystrokes": _rule(ENROLLMENT),
    f"{_P}EnrollmentService/GetCustomer": _rule(ENROLLMENT, TENANT_ADMIN),
    # A live call's voice, once an agent verified the caller by other means (authsvc.passive).
    f"{_P}EnrollmentService/EnrollFromSession": _rule(ENROLLMENT, AGENT, TENANT_ADMIN),
    f"{_P}StepUpService/EnrollTotp": _rule(ENROLLMENT, TENANT_ADMIN),
    f"{_P}StepUpService/ConfirmTotp": _rule(ENROLLMENT, TENANT_ADMIN),
    f"{_P}StepUpService/SetCodeDestination": _rule(ENROLLMENT, TENANT_ADMIN),
    # The tenant's administration: the whole customer list, erasure, unlock, the audit trail.
    f"{_P}EnrollmentService/ListCustomers": _rule(TENANT_ADMIN),
    f"{_P}EnrollmentService/DeleteCustomer": _rule(TENANT_ADMIN),
    f"{_P}EnrollmentService/UnlockCustomer": _rule(TENANT_ADMIN),
    f"{_P}EnrollmentService/ExpireCustomers": _rule(TENANT_ADMIN),
    f"{_P}AuditService/ListAuditEvents": _rule(TENANT_ADMIN),
    f"{_P}AuditService/VerifyAuditChain": _rule(TENANT_ADMIN),
    # Known fraudsters: listing a voice is an accusation, so only the tenant's administrators.
    f"{_P}WatchlistService/CreateWatchlist": _rule(TENANT_ADMIN),
    f"{_P}WatchlistService/ListWatchlists": _rule(TENANT_ADMIN),
    f"{_P}WatchlistService/DeleteWatchlist": _rule(TENANT_ADMIN),
    f"{_P}WatchlistService/AddFraudster": _rule(TENANT_ADMIN),
    f"{_P}WatchlistService/RemoveFraudster": _rule(TENANT_ADMIN),
    f"{_P}WatchlistService/ListFraudsters": _rule(TENANT_ADMIN),
    # Where a tenant's call decisions are POSTed: its administrators.
    f"{_P}WebhookService/SetWebhook": _rule(TENANT_ADMIN),
    f"{_P}WebhookService/GetWebhook": _rule(TENANT_ADMIN),
    f"{_P}WebhookService/DeleteWebhook": _rule(TENANT_ADMIN),
    # Credentials of a tenant: its administrators, or the platform's.
    f"{_P}CredentialService/CreateApiKey": _rule(TENANT_ADMIN, PLATFORM_ADMIN, scope=Scope.CREDENTIALS),
    # Certificate identities only by the platform: a SAN is global, and a tenant that could map
    # one could squat another tenant's (or make its certificate ambiguous, locking it out).
    f"{_P}CredentialService/MapCertificate": _rule(PLATFORM_ADMIN, scope=Scope.CREDENTIALS),
    f"{_P}CredentialService/ListCredentials": _rule(TENANT_ADMIN, PLATFORM_ADMIN, scope=Scope.CREDENTIALS),
    f"{_P}CredentialService/RevokeCredential": _rule(TENANT_ADMIN, PLATFORM_ADMIN, scope=Scope.CREDENTIALS),
    f"{_P}CredentialService/SetTwilioAuthToken": _rule(TENANT_ADMIN, PLATFORM_ADMIN, scope=Scope.CREDENTIALS),
    # Tenants themselves: the platform's operators only.
    f"{_P}TenantService/CreateTenant": _rule(PLATFORM_ADMIN, scope=Scope.PLATFORM),
    f"{_P}TenantService/GetTenant": _rule(PLATFORM_ADMIN, scope=Scope.PLATFORM),
    f"{_P}TenantService/ListTenants": _rule(PLATFORM_ADMIN, scope=Scope.PLATFORM),
}

# Media bridges (authsvc/bridges): not RPCs, but a call's audio all the same. Each connection's
# credential must hold one of these roles; its tenant is the credential's own.
BRIDGES: dict[str, Rule] = {
    "audiohook": _rule(TELEPHONY),
    "twilio": _rule(TELEPHONY),
    "audiosocket": _rule(TELEPHONY),
}

# Methods anyone may call without a credential: health checks (load balancers, kubelets) and
# reflection, which the server registers only when started with --reflection.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")


def check_roles(roles: tuple[str, ...] | list[str], tenant: str) -> tuple[str, ...]:
    """Validated, de-duplicated role names for a credential of `tenant` ('' = platform-wide)."""
    from authsvc.errors import InvalidInput

    if not roles:
        raise InvalidInput("roles", f"at least one role is required (roles: {', '.join(ROLES)})")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InvalidInput("roles", f"unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})")
    if tenant and PLATFORM_ADMIN in roles:
        raise InvalidInput("roles", "platform-admin is platform-wide: create it with no tenant")
    if not tenant and set(roles) - {PLATFORM_ADMIN}:
        raise InvalidInput("roles", "a platform-wide credential holds platform-admin only; name a tenant")
    return tuple(dict.fromkeys(roles))
