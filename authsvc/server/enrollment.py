"""EnrollmentService: proto in, domain call, proto out."""

from __future__ import annotations

import base64

import grpc

from authsvc import changes, enrollment, passive, retention
from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput, PermissionDenied
from authsvc.identifiers import check_id
from authsvc.identity.roles import TENANT_ADMIN
from authsvc.server.convert import ENCODINGS, QUALITY, customer_pb, keystroke_sample, methods
from authsvc.server.errors import principal, unary_errors

MAX_PAGE = 1000


def _page_token(customer_id: str) -> str:
    return base64.urlsafe_b64encode(customer_id.encode()).decode()


def _after(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode() if token else ""
    except ValueError:
        raise InvalidInput("page_token", "is not a token this service issued") from None


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def _change(self, request) -> str | None:
        policy = await self.ctx.policy_for(request.tenant)
        return await changes.authorize(
            self.ctx.trust, policy, request.customer_id, principal(), request.authorization.assertion
        )

    @unary_errors
    async def RegisterCustomer(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        who = principal()
        change = await self._change(request)
        done = await enrollment.register_customer(
            self.ctx,
            request.tenant,
            request.customer_id,
            methods(request.methods, "methods"),
            request.opt_out_biometrics,
            request.consent_text_version,
            who.id,
            confirm_removal=request.confirm_template_removal,
            change=change,
        )
        summary = await enrollment.describe_customer(self.ctx, request.tenant, request.customer_id)
        return enrollment_pb2.RegisterCustomerResponse(
            customer=customer_pb(summary), templates_removed=done.templates_removed
        )

    @unary_errors
    async def EnrollVoice(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        encoding = ENCODINGS.get(request.format.encoding)
        if encoding is None:
            raise InvalidInput("format.encoding", "must be PCM16_LE, MULAW or ALAW")
        result = await enrollment.enroll_voice(
            self.ctx,
            request.tenant,
            request.customer_id,
            encoding,
            request.format.sample_rate_hz,
            request.audio,
            request.label,
            principal().id,
            await self._change(request),
        )
        summary = await enrollment.describe_customer(self.ctx, request.tenant, request.customer_id)
        return enrollment_pb2.EnrollVoiceResponse(
            customer=customer_pb(summary),
            added=result.added,
            net_speech_seconds=result.net_speech_s,
            quality_issues=[QUALITY[q] for q in result.quality],
            same_voice_customers=result.same_voice_customers,
        )

    @unary_errors
    async def EnrollKeystrokes(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        samples = [keystroke_sample(s, f"samples[{i}]") for i, s in enumerate(request.samples)]
        result = await enrollment.enroll_keystrokes(
            self.ctx,
            request.tenant,
            request.customer_id,
            samples,
            principal().id,
            await self._change(request),
        )
        summary = await enrollment.describe_customer(self.ctx, request.tenant, request.customer_id)
        return enrollment_pb2.EnrollKeystrokesResponse(
            customer=customer_pb(summary), samples_added=result.added, samples_already_enrolled=result.already
        )

    async def _passive_min(self, tenant: str) -> float:
        return (await self.ctx.policy_for(tenant)).enrollment.passive_min_speech_s

    @unary_errors
    async def GetCustomer(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        summary = await enrollment.describe_customer(self.ctx, request.tenant, request.customer_id)
        return customer_pb(summary, await self._passive_min(request.tenant))

    @unary_errors
    async def ListCustomers(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidInput("page_size", f"must be between 0 and {MAX_PAGE}")
        page, more = await enrollment.list_customers(
            self.ctx,
            request.tenant,
            request.page_size or 100,
            _after(request.page_token),
        )
        passive_min = await self._passive_min(request.tenant)
        return enrollment_pb2.ListCustomersResponse(
            customers=[customer_pb(s, passive_min) for s in page],
            next_page_token=_page_token(page[-1].record.customer_id) if more else "",
        )

    @unary_errors
    async def DeleteCustomer(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        deleted = await enrollment.delete_customer(
            self.ctx, request.tenant, request.customer_id, principal().id
        )
        return enrollment_pb2.DeleteCustomerResponse(
            templates_deleted=deleted.templates, secrets_deleted=deleted.secrets
        )

    @unary_errors
    async def UnlockCustomer(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        cleared = await enrollment.unlock_customer(
            self.ctx, request.tenant, request.customer_id, principal().id
        )
        return enrollment_pb2.UnlockCustomerResponse(factors=cleared)

    @unary_errors
    async def ExpireCustomers(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        if not 0 <= request.limit <= retention.MAX_LIMIT:
            raise InvalidInput("limit", f"must be between 0 and {retention.MAX_LIMIT}")
        report = await retention.expire_customers(
            self.ctx,
            request.tenant,
            dry_run=request.dry_run,
            limit=request.limit or retention.DEFAULT_LIMIT,
            actor=principal().id,
        )
        return enrollment_pb2.ExpireCustomersResponse(
            customers=[
                enrollment_pb2.ExpiredCustomer(
                    customer_id=e.customer_id, last_active_unix_ms=e.last_active_ms, templates=e.templates
                )
                for e in report.customers
            ],
            retention_days=report.retention_days,
            cutoff_unix_ms=report.cutoff_ms,
            dry_run=report.dry_run,
            more=report.more,
        )

    @unary_errors
    async def EnrollFromSession(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        who = principal()
        check_id(request.session_id, "session_id")
        if request.override_voice_mismatch and not who.has(TENANT_ADMIN):
            raise PermissionDenied(
                "ROLE_NOT_GRANTED", "override_voice_mismatch is a tenant administrator's decision"
            )
        call = self.ctx.calls.get(request.tenant, request.session_id)
        result = await passive.enroll_from_call(
            self.ctx, call, request.customer_id, request.override_voice_mismatch, who
        )
        return enrollment_pb2.EnrollFromSessionResponse(
            added=result.added,
            call_net_speech_seconds=result.call_net_speech_s,
            voice_enrollment=enrollment_pb2.VoiceEnrollment(
                complete=result.complete,
                net_speech_seconds=result.enrolled_net_speech_s,
                required_net_speech_seconds=result.required_net_speech_s,
                calls=result.calls,
            ),
            same_voice_customers=result.same_voice_customers,
        )
