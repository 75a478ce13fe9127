"""VerificationService: a bidirectional stream per call, driving one live call's session; the
claim of a call's customer and the watch of its decisions by its call id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from authsvc.api.v1 import verification_pb2, verification_pb2_grpc
from authsvc.calls import WATCH_QUEUE, LiveCall
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.identifiers import check_id
from authsvc.identity.roles import TELEPHONY
from authsvc.policy.engine import Outcome
from authsvc.server.auth import Authorizer
from authsvc.server.convert import CHANNELS, ENCODINGS, decision_pb, factor, keystroke_sample
from authsvc.server.errors import principal, stream_errors, unary_errors
from authsvc.server.observe import note_call
from authsvc.session import SessionStart, VerificationSession

METHOD = "/authsvc.v1.VerificationService/Verify"


async def _start(ctx: ServiceContext, authorizer: Authorizer, s, context) -> VerificationSession:
    check_id(s.tenant, "start.tenant")
    note_call(s.tenant)
    # The first message names the tenant: checked here, since the interceptor saw only metadata.
    await authorizer.require_tenant(principal(), METHOD, s.tenant, context, s.customer_id)
    policy = await ctx.policy_for(s.tenant)
    if s.session_id:
        check_id(s.session_id, "start.session_id")
        note_call(s.tenant, s.session_id)
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


async def _handle(session: VerificationSession, request) -> None:
    """One request of the stream; its decisions reach the call's feed as the session emits them."""
    kind = request.WhichOneof("message")
    if kind == "audio":
        await session.feed_audio(request.audio.data)
    elif kind == "keystrokes":
        await session.feed_keystrokes(*keystroke_sample(request.keystrokes, "keystrokes"))
    elif kind == "step_up":
        await session.step_up(factor(request.step_up.factor, "step_up.factor"), request.step_up.code)
    elif kind == "send_code":
        await session.send_code()
    elif kind == "claim":
        await session.claim(request.claim.customer_id)
    elif kind == "start":
        raise InvalidInput("start", "SessionStart may only be sent once, as the first message")
    else:
        raise InvalidInput(
            "message", "empty request: set start, audio, keystrokes, step_up, send_code or claim"
        )


def _bears_token(who) -> bool:
    """An assertion token is a bearer credential of the customer on other channels: it goes to
    a telephony system (the platform that hands the call over), never to an agent's desktop."""
    return who.has(TELEPHONY)


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    def __init__(self, ctx: ServiceContext, authorizer: Authorizer) -> None:
        self.ctx = ctx
        self.authorizer = authorizer

    @stream_errors
    async def Verify(self, request_iterator, context: grpc.aio.ServicerContext):  # noqa: N802
        started = time.perf_counter()
        evidence = principal().sees_evidence
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            raise InvalidInput("start", "the stream ended before SessionStart was sent")
        if first.WhichOneof("message") != "start":
            raise InvalidInput("start", "the first message of the stream must be SessionStart")
        session = await _start(self.ctx, self.authorizer, first.start, context)
        call = self.ctx.calls.open(session.start.tenant, session.start.session_id, session)
        # The stream reads its requests beside the decisions it writes, so a claim or another
        # caller's action can produce a decision while the caller is silent.
        decisions = call.feed.subscribe(latest=False)
        pump = asyncio.create_task(self._pump(call, requests))
        first = self.ctx.metrics.verify_first_decision
        try:
            async for decision in decisions:
                if first is not None and decision.outcome is not Outcome.PENDING:
                    first.observe(time.perf_counter() - started)
                    first = None
                yield decision_pb(decision, session.start.session_id, evidence)
        finally:
            pump.cancel()  # the caller is gone (or the call failed): read no more of it
            self.ctx.calls.close(call)

    async def _pump(self, call: LiveCall, requests: AsyncIterator) -> None:
        try:
            await call.run(call.session.begin)
            async for request in requests:
                await call.run(lambda r=request: _handle(call.session, r))
            await call.run(call.session.finish)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the stream's status: raised where its decisions are written
            self.ctx.calls.close(call, exc)
        else:
            self.ctx.calls.close(call)

    @unary_errors
    async def ClaimIdentity(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        check_id(request.session_id, "session_id")
        check_id(request.customer_id, "customer_id")
        call = self.ctx.calls.get(request.tenant, request.session_id)
        decisions = await call.run(lambda: call.session.claim(request.customer_id))
        decision = decisions[-1] if decisions else call.session.current()
        who = principal()
        return verification_pb2.ClaimIdentityResponse(
            decision=decision_pb(decision, request.session_id, who.sees_evidence, _bears_token(who))
        )

    @stream_errors
    async def WatchSession(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        check_id(request.session_id, "session_id")
        call = self.ctx.calls.get(request.tenant, request.session_id)
        who = principal()
        evidence, token = who.sees_evidence, _bears_token(who)
        async for decision in call.feed.subscribe(latest=True, limit=WATCH_QUEUE):
            yield decision_pb(decision, request.session_id, evidence, token)
