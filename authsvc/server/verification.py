"""VerificationService: a bidirectional stream per call, driving one VerificationSession."""

from __future__ import annotations

import grpc

from authsvc.api.v1 import verification_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.server.convert import CHANNELS, ENCODINGS, decision_pb, factor, keystroke_sample
from authsvc.server.errors import stream_errors
from authsvc.session import SessionStart, VerificationSession


def _start(ctx: ServiceContext, s) -> VerificationSession:
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
        ),
    )


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @stream_errors
    async def Verify(self, request_iterator, context: grpc.aio.ServicerContext):  # noqa: N802
        session: VerificationSession | None = None
        async for request in request_iterator:
            kind = request.WhichOneof("message")
            if session is None:
                if kind != "start":
                    raise InvalidInput("start", "the first message of the stream must be SessionStart")
                session = _start(self.ctx, request.start)
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
                yield decision_pb(decision, session.start.session_id)
        if session is None:
            raise InvalidInput("start", "the stream ended before SessionStart was sent")
        yield decision_pb(await session.finish(), session.start.session_id)
