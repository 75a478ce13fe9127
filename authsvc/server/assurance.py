"""StepUpService, AssertionService and AuditService: proto in, domain call, proto out."""

from __future__ import annotations

import re

import grpc

from authsvc import changes
from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.identifiers import check_id
from authsvc.server.convert import CHANNELS, assertion_pb, audit_pb
from authsvc.server.errors import principal, unary_errors

MAX_PAGE = 1000


# An action family ("enroll", "request.refused") or outcome ("wrong_code"): what the service
# records, nothing a query language could read as more.
_AUDIT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}")


def _check_audit_filters(request: assurance_pb2.ListAuditEventsRequest) -> None:
    if request.customer_id:
        check_id(request.customer_id, "customer_id")
    for name in ("action", "outcome"):
        value = getattr(request, name)
        if value and not _AUDIT_NAME.fullmatch(value):
            raise InvalidInput(
                name, f"{value[:40]!r} is not an audit {name}: dotted names of letters, digits, _ and -"
            )
    since, until = request.since_unix_ms, request.until_unix_ms
    if since < 0:
        raise InvalidInput("since_unix_ms", "must be a time in ms since the epoch, or 0 for no lower bound")
    if until < 0:
        raise InvalidInput("until_unix_ms", "must be a time in ms since the epoch, or 0 for no upper bound")
    if since and until and since >= until:
        raise InvalidInput("until_unix_ms", "must be after since_unix_ms")


class StepUpServicer(assurance_pb2_grpc.StepUpServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def _change(self, request):
        policy = await self.ctx.policy_for(request.tenant)
        change = await changes.authorize(
            self.ctx.trust, policy, request.customer_id, principal(), request.authorization.assertion
        )
        return change, policy

    @unary_errors
    async def EnrollTotp(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        change, policy = await self._change(request)
        uri = await self.ctx.factors.enroll_totp(
            request.tenant,
            request.customer_id,
            request.account_name,
            request.issuer,
            principal().id,
            change,
            policy,
        )
        return assurance_pb2.EnrollTotpResponse(provisioning_uri=uri)

    @unary_errors
    async def ConfirmTotp(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        await self.ctx.policy_for(request.tenant)
        ok = await self.ctx.factors.confirm_totp(
            request.tenant, request.customer_id, request.code, principal().id
        )
        return assurance_pb2.ConfirmTotpResponse(confirmed=ok)

    @unary_errors
    async def SetCodeDestination(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        change, policy = await self._change(request)
        await self.ctx.factors.set_destination(
            request.tenant, request.customer_id, request.destination, principal().id, change, policy
        )
        return assurance_pb2.SetCodeDestinationResponse()


class AssertionServicer(assurance_pb2_grpc.AssertionServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @unary_errors
    async def ValidateAssertion(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        policy = await self.ctx.policy_for(request.tenant)
        claims = await self.ctx.trust.validate(
            policy, request.token, CHANNELS.get(request.channel, "unspecified")
        )
        return assurance_pb2.ValidateAssertionResponse(assertion=assertion_pb(claims))


class AuditServicer(assurance_pb2_grpc.AuditServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @unary_errors
    async def ListAuditEvents(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        check_id(request.tenant, "tenant")
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidInput("page_size", f"must be between 0 and {MAX_PAGE}")
        if request.page_token and not re.fullmatch(r"[0-9]{1,18}", request.page_token):
            raise InvalidInput("page_token", "is not a token this service issued")
        size = request.page_size or 100
        before = int(request.page_token) if request.page_token else None
        _check_audit_filters(request)
        events = await self.ctx.auditor.list(
            request.tenant,
            size + 1,
            before,
            request.customer_id,
            action=request.action,
            outcome=request.outcome,
            since_ms=request.since_unix_ms,
            until_ms=request.until_unix_ms,
        )
        page = events[:size]
        return assurance_pb2.ListAuditEventsResponse(
            events=[audit_pb(e) for e in page],
            next_page_token=str(page[-1].id) if len(events) > size else "",
        )

    @unary_errors
    async def VerifyAuditChain(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        check_id(request.tenant, "tenant")
        result = await self.ctx.auditor.verify(request.tenant)
        return assurance_pb2.VerifyAuditChainResponse(
            intact=result.intact,
            rows_checked=result.rows_checked,
            first_bad_id=result.first_bad_id,
            problem=result.problem,
            head_hash=result.head_hash,
            unchained_rows=result.unchained,
        )
