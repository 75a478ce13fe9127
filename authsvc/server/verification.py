"""VerificationService: a bidirectional stream per call, driving one VerificationSession."""

from __future__ import annotations

import grpc

from authsvc.api.v1 import verification_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.identifiers import check_id
from authsvc.server.auth import Authorizer
from authsvc.server.convert import CHANNELS, ENCODINGS, decision_pb, factor, keystroke_sample
from authsvc.server.errors import principal, stream_errors
from authsvc.session import SessionStart, VerificationSession

METHOD = "/authsvc.v1.VerificationService/Verify"


async def _start(ctx: ServiceContext, authorizer: Authorizer, s, context) -> VerificationSession:
    check_id(s.tenant, "start.tenant")
    # The first message names the tenant: checked here, since the interceptor saw only metadata.
    await authorizer.require_tenant(principal(), METHOD, s.tenant, context, s.customer_id)
    policy = await ctx.policy_for(s.tenant)
    return VerificationSession(
        ctx,
        SessionStart(
            tenant=s.tenant,
            customer_id=s.customer_id,
            channel=CHANNELS.get(s.channel, "unspecified"),
            encoding=ENCODINGS.get(s.audio_format.encoding),
            sample_rate=s.audio_format.sample_rate_hz,
            session_id=s.session_id,
            assertion=s.assertion,
            source=principal().origin,
        ),
        policy,
    )


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    def __init__(self, ctx: ServiceContext, authorizer: Authorizer) -> None:
        self.ctx = ctx
        self.authorizer = authorizer

    @stream_errors
    async def Verify(self, request_iterator, context: grpc.aio.ServicerContext):  # noqa: N802
        session: VerificationSession | None = None
        evidence = principal().sees_evidence
        async for request in request_iterator:
            kind = request.WhichOneof("message")
            if session is None:
                if kind != "start":
                    raise InvalidInput("start", "the first message of the stream must be SessionStart")
                session = await _start(self.ctx, self.authorizer, request.start, context)
                decisions = await session.begin()
            elif kind == "audio":
                decisions = await session.feed_audio(request.audio.data)
            elif kind == "keystrokes":
                decisions = await session.feed_keystrokes(*keystroke_sample(request.keystrokes, "keystrokes"))
            elif kind == "step_up":
                decisions = await session.step_up(
                    factor(request.step_up.factor, "step_up.factor"), request.step_up.code
                )
            elif kind == "send_code":
                decisions = await session.send_code()
            elif kind == "start":
                raise InvalidInput("start", "SessionStart may only be sent once, as the first message")
            else:
                raise InvalidInput(
                    "message", "empty request: set start, audio, keystrokes, step_up or send_code"
                )
            for decision in decisions:
                yield decision_pb(decision, session.start.session_id, evidence)
        if session is None:
            raise InvalidInput("start", "the stream ended before SessionStart was sent")
        yield decision_pb(await session.finish(), session.start.session_id, evidence)
