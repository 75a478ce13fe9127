"""WatchlistService: proto in, domain call, proto out."""

from __future__ import annotations

import grpc

from authsvc import enrollment
from authsvc.api.v1 import fraud_pb2, fraud_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.fraud import caller_voices
from authsvc.identifiers import check_id
from authsvc.scoring.cosine import aggregate
from authsvc.server.convert import ENCODINGS
from authsvc.server.errors import principal, unary_errors

MAX_SAMPLES = 20


class WatchlistServicer(fraud_pb2_grpc.WatchlistServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @unary_errors
    async def CreateWatchlist(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        w = await self.ctx.watchlists.create(
            request.tenant, request.name, request.description, principal().id
        )
        return fraud_pb2.Watchlist(
            tenant=w.tenant, name=w.name, description=w.description, created_unix_ms=w.created_ms
        )

    @unary_errors
    async def ListWatchlists(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        lists = await self.ctx.watchlists.list(request.tenant)
        policy = await self.ctx.policy_for(request.tenant)
        return fraud_pb2.ListWatchlistsResponse(
            watchlists=[
                fraud_pb2.Watchlist(
                    tenant=w.tenant,
                    name=w.name,
                    description=w.description,
                    created_unix_ms=w.created_ms,
                    fraudsters=w.members,
                )
                for w in lists
            ],
            false_match_rate_per_comparison=policy.fraud.watchlist_far,
            listed_voices=sum(w.members for w in lists),
        )

    @unary_errors
    async def DeleteWatchlist(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        removed = await self.ctx.watchlists.delete(request.tenant, request.name, principal().id)
        return fraud_pb2.DeleteWatchlistResponse(fraudsters_removed=removed)

    @unary_errors
    async def AddFraudster(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        if request.from_session_id:
            if request.audio:
                raise InvalidInput("audio", "give recordings or a session, not both")
            check_id(request.tenant, "tenant")
            check_id(request.session_customer_id, "session_customer_id")
            voice = await caller_voices.voice_of(
                self.ctx, request.tenant, request.session_customer_id, request.from_session_id
            )
            added = await self.ctx.watchlists.add(
                request.tenant, request.watchlist, request.fraudster_id, voice, 1, principal().id
            )
            return fraud_pb2.AddFraudsterResponse(added=added, samples=1)
        encoding = ENCODINGS.get(request.format.encoding)
        if encoding is None:
            raise InvalidInput("format.encoding", "must be PCM16_LE, MULAW or ALAW")
        if not request.audio:
            raise InvalidInput("audio", "give at least one recording of the fraudster's voice")
        if len(request.audio) > MAX_SAMPLES:
            raise InvalidInput("audio", f"at most {MAX_SAMPLES} recordings at a time")
        policy = await self.ctx.policy_for(request.tenant)
        embeddings, speech = [], 0.0
        for i, audio in enumerate(request.audio):
            try:
                _, tracker, _, embedding = await enrollment.embed_sample(
                    self.ctx, policy, encoding, request.format.sample_rate_hz, audio
                )
            except InvalidInput as exc:
                raise InvalidInput(f"audio[{i}]", exc.description) from None
            embeddings.append(embedding)
            speech += tracker.net_speech_s
        added = await self.ctx.watchlists.add(
            request.tenant,
            request.watchlist,
            request.fraudster_id,
            aggregate(embeddings),
            len(embeddings),
            principal().id,
        )
        return fraud_pb2.AddFraudsterResponse(added=added, samples=len(embeddings), net_speech_seconds=speech)

    @unary_errors
    async def RemoveFraudster(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        await self.ctx.watchlists.remove(
            request.tenant, request.watchlist, request.fraudster_id, principal().id
        )
        return fraud_pb2.RemoveFraudsterResponse()

    @unary_errors
    async def ListFraudsters(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        members = await self.ctx.watchlists.members(request.tenant, request.watchlist)
        return fraud_pb2.ListFraudstersResponse(
            fraudsters=[
                fraud_pb2.Fraudster(fraudster_id=f, samples=n, created_unix_ms=c) for f, n, c in members
            ]
        )
