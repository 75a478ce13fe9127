"""Who may call: every RPC is refused without a credential, with a wrong-role credential and with
another tenant's credential, each with its status and ErrorInfo reason, and each refusal audited.

The role table itself is checked against the proto: a method added without a row fails here.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc.api.v1 import (
    assurance_pb2,
    common_pb2,
    enrollment_pb2,
    fraud_pb2,
    identity_pb2,
    verification_pb2,
    webhooks_pb2,
)
from authsvc.identity import roles
from authsvc.identity.roles import METHODS, Scope
from tests.principals import bearer, key_for

MODULES = (assurance_pb2, enrollment_pb2, fraud_pb2, identity_pb2, verification_pb2, webhooks_pb2)
DECLARED = {
    f"/{service.full_name}/{method.name}": method
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}


def test_the_role_table_has_a_row_for_every_rpc_of_every_service_and_no_other():
    missing = sorted(set(DECLARED) - set(METHODS))
    stale = sorted(set(METHODS) - set(DECLARED))
    assert not missing, f"RPCs with no row in authsvc/identity/roles.py: {missing}"
    assert not stale, f"rows for RPCs the proto does not declare: {stale}"
    for name, rule in METHODS.items():
        assert rule.roles and rule.roles <= set(roles.ROLES), name
        assert (roles.PLATFORM_ADMIN in rule.roles) == (rule.scope is not Scope.TENANT), name


def reason_of(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def request_for(method: str, tenant: str, customer: str = "victim"):
    """A well-formed request of `method` naming `tenant` (and a customer, where it has one)."""
    desc = DECLARED[method]
    cls = message_factory.GetMessageClass(desc.input_type)
    fields = cls.DESCRIPTOR.fields_by_name
    if method.endswith("/Verify"):
        return verification_pb2.VerifyRequest(
            start=verification_pb2.SessionStart(
                tenant=tenant, customer_id=customer, channel=common_pb2.CHANNEL_WEB, session_id="s"
            )
        )
    values = {}
    if "tenant" in fields:
        values["tenant"] = tenant
    if "customer_id" in fields:
        values["customer_id"] = customer
    if "name" in fields:
        values["name"] = tenant
    return cls(**values)


def call(address: str, method: str, request, key: str | None) -> grpc.RpcError | None:
    """Calls `method` with the blocking client; -> the error, or None when it succeeded."""
    try:
        invoke(address, method, request, key)
    except grpc.RpcError as err:
        return err
    return None


def invoke(address: str, method: str, request, key: str | None):
    """Calls `method` with the blocking client; -> the response (the last, for a stream)."""
    desc = DECLARED[method]
    response_cls = message_factory.GetMessageClass(desc.output_type)
    metadata = bearer(key) if key else None
    with grpc.insecure_channel(address) as ch:
        if desc.client_streaming:
            rpc = ch.stream_stream(method, type(request).SerializeToString, response_cls.FromString)
            return list(rpc(iter([request]), metadata=metadata, timeout=30))[-1]
        if desc.server_streaming:
            rpc = ch.unary_stream(method, type(request).SerializeToString, response_cls.FromString)
            return list(rpc(request, metadata=metadata, timeout=30))[-1]
        rpc = ch.unary_unary(method, type(request).SerializeToString, response_cls.FromString)
        return rpc(request, metadata=metadata, timeout=30)


async def refusals(ctx, tenant: str) -> list:
    await ctx.refusals.flush_due(everything=True)
    events = await ctx.auditor.list(tenant, 1000)
    return [e for e in events if e.action.startswith("request.refused")]


def _wrong_role(method: str) -> str:
    rule = METHODS[method]
    if rule.scope is Scope.TENANT:
        return next(r for r in (roles.TELEPHONY, roles.ENROLLMENT, roles.AGENT) if r not in rule.roles)
    return roles.ENROLLMENT


@pytest.mark.parametrize("method", sorted(DECLARED), ids=lambda m: m.rsplit(".", 1)[-1])
async def test_every_rpc_refuses_no_credential_a_wrong_role_and_another_tenant(service, method):
    _, ctx, _, address = service
    rule = METHODS[method]

    err = await asyncio.to_thread(call, address, method, request_for(method, "acme"), None)
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, method
    assert reason_of(err) == "CREDENTIAL_MISSING"

    forged = "ask_0123456789abcdef_" + "A" * 43
    err = await asyncio.to_thread(call, address, method, request_for(method, "acme"), forged)
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(err) == "CREDENTIAL_INVALID"

    wrong = await key_for(ctx, "acme", _wrong_role(method))
    err = await asyncio.to_thread(call, address, method, request_for(method, "acme"), wrong)
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED, method
    assert reason_of(err) == "ROLE_NOT_GRANTED"

    # Another tenant's principal holding every role the method takes (platform methods: the other
    # tenant's administrator, who is still no platform principal).
    granted = sorted(rule.roles - {roles.PLATFORM_ADMIN}) or [roles.TENANT_ADMIN]
    other = await key_for(ctx, "globex", *granted)
    err = await asyncio.to_thread(call, address, method, request_for(method, "acme"), other)
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED, method
    holds_role = bool(rule.roles & set(granted))
    expected = "TENANT_NOT_GRANTED" if holds_role and rule.scope is not Scope.PLATFORM else "ROLE_NOT_GRANTED"
    assert reason_of(err) == expected

    # Each refusal is in an audit trail with its source: the tenant the request named, else the
    # principal's, else the platform's (a stream refused before its first message has no tenant).
    rows = [
        e for t in ("", "acme", "globex") for e in await refusals(ctx, t) if e.details.get("method") == method
    ]
    assert {e.outcome for e in rows} == {
        "CREDENTIAL_MISSING",
        "CREDENTIAL_INVALID",
        "ROLE_NOT_GRANTED",
        expected,
    }
    assert all(e.details.get("source", "").startswith("ipv4:127.0.0.1") for e in rows)
    # An anonymous caller's refusals go to the platform's trail, naming the tenant it claimed:
    # it cannot write into a tenant's trail. A principal's go to the tenant it knocked on.
    anonymous = [
        e for e in await refusals(ctx, "") if e.details.get("method") == method and e.actor == "anonymous"
    ]
    assert {e.outcome for e in anonymous} == {"CREDENTIAL_MISSING", "CREDENTIAL_INVALID"}, method
    if not DECLARED[method].client_streaming and "tenant" in DECLARED[method].input_type.fields_by_name:
        assert {e.details.get("claimed_tenant") for e in anonymous} == {"acme"}
    if expected == "TENANT_NOT_GRANTED":
        assert "TENANT_NOT_GRANTED" in {e.outcome for e in await refusals(ctx, "acme")}
