"""VerificationService: a bidirectional stream per call, driving one VerificationSession."""

from __future__ import annotations

import grpc

from authsvc.api.v1 import verification_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.server.convert import CHANNELS, ENCODINGS, decision_pb
from authsvc.server.errors import stream_errors
from authsvc.session import SessionStart, VerificationSession


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
                s = request.start
                session = VerificationSession(
                    self.ctx,
                    SessionStart(
                        tenant=s.tenant,
                        customer_id=s.customer_id,
                        channel=CHANNELS.get(s.channel, "unspecified"),
                        encoding=ENCODINGS.get(s.audio_format.encoding),
                        sample_rate=s.audio_format.sample_rate_hz,
                        session_id=s.session_id,
                    ),
                )
                decisions = await session.begin()
            elif kind == "audio":
                decisions = await session.feed_audio(request.audio.data)
            elif kind == "start":
                raise InvalidInput("start", "SessionStart may only be sent once, as the first message")
            else:
                raise InvalidInput("message", "empty request: set start or audio")
            for decision in decisions:
                yield decision_pb(decision, session.start.session_id)
        if session is None:
            raise InvalidInput("start", "the stream ended before SessionStart was sent")
        yield decision_pb(await session.finish(), session.start.session_id)
