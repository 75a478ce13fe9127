"""EnrollmentService: proto in, domain call, proto out."""

from __future__ import annotations

import asyncio
import base64

import grpc

from authsvc import enrollment
from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.identifiers import check_id
from authsvc.server.convert import ENCODINGS, QUALITY, customer_pb
from authsvc.server.errors import unary_errors

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
        )
        record, templates = await asyncio.to_thread(
            enrollment.describe_customer, self.ctx, request.tenant, request.customer_id
        )
        return enrollment_pb2.EnrollVoiceResponse(
            customer=customer_pb(record, templates),
            added=result.added,
            net_speech_seconds=result.net_speech_s,
            quality_issues=[QUALITY[q] for q in result.quality],
        )

    @unary_errors
    async def GetCustomer(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        record, templates = await asyncio.to_thread(
            enrollment.describe_customer, self.ctx, request.tenant, request.customer_id
        )
        return customer_pb(record, templates)

    @unary_errors
    async def ListCustomers(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        check_id(request.tenant, "tenant")
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidInput("page_size", f"must be between 0 and {MAX_PAGE}")
        size = request.page_size or 100
        records = await asyncio.to_thread(
            self.ctx.vault.store.list_customers, request.tenant, size + 1, _after(request.page_token)
        )
        page, more = records[:size], len(records) > size
        customers = []
        for record in page:
            _, templates = await asyncio.to_thread(
                enrollment.describe_customer, self.ctx, record.tenant, record.customer_id
            )
            customers.append(customer_pb(record, templates))
        return enrollment_pb2.ListCustomersResponse(
            customers=customers, next_page_token=_page_token(page[-1].customer_id) if more else ""
        )

    @unary_errors
    async def DeleteCustomer(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        deleted = await asyncio.to_thread(
            enrollment.delete_customer, self.ctx, request.tenant, request.customer_id
        )
        return enrollment_pb2.DeleteCustomerResponse(
            templates_deleted=deleted.templates, secrets_deleted=deleted.secrets
        )
