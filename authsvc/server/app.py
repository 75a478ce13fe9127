"""The grpc.aio server: authsvc services plus standard health checking and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authsvc.api.v1 import (
    assurance_pb2,
    assurance_pb2_grpc,
    enrollment_pb2,
    enrollment_pb2_grpc,
    fraud_pb2,
    fraud_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from authsvc.context import ServiceContext
from authsvc.server.assurance import AssertionServicer, AuditServicer, StepUpServicer
from authsvc.server.auth import AuthInterceptor, Authorizer
from authsvc.server.enrollment import EnrollmentServicer
from authsvc.server.identity import CredentialServicer, TenantServicer
from authsvc.server.observe import ObserveInterceptor
from authsvc.server.verification import VerificationServicer
from authsvc.server.watchlist import WatchlistServicer
from authsvc.server.webhooks import WebhookServicer

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    enrollment_pb2.DESCRIPTOR.services_by_name["EnrollmentService"].full_name,
    verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name,
    *(
        assurance_pb2.DESCRIPTOR.services_by_name[n].full_name
        for n in ("StepUpService", "AssertionService", "AuditService")
    ),
    *(identity_pb2.DESCRIPTOR.services_by_name[n].full_name for n in ("TenantService", "CredentialService")),
    fraud_pb2.DESCRIPTOR.services_by_name["WatchlistService"].full_name,
    webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
)
# Enrollment samples can be minutes of PCM16; 32 MiB covers 15 min at 16 kHz.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# Health names of the fraud detectors (not services: they say what each decision assesses).
SYNTHETIC_HEALTH = "authsvc.fraud.synthetic"
REPLAY_HEALTH = "authsvc.fraud.replay"
# How often the store is pinged for health; a load balancer sees NOT_SERVING within this.
STORE_CHECK_S = 2.0


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set to require client certificates (mTLS)


class AuthServer:
    def __init__(
        self, ctx: ServiceContext, address: str, tls: TlsFiles | None = None, reflection_on: bool = False
    ) -> None:
        self.ctx = ctx
        authorizer = Authorizer(ctx.credentials, ctx.refusals, ctx.tenants)
        self.server = grpc.aio.server(
            # Outermost first: the access log and RPC metrics see every status, the auth
            # interceptor's refusals included.
            interceptors=[ObserveInterceptor(ctx.metrics), AuthInterceptor(authorizer)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(EnrollmentServicer(ctx), self.server)
        verification_pb2_grpc.add_VerificationServiceServicer_to_server(
            VerificationServicer(ctx, authorizer), self.server
        )
        identity_pb2_grpc.add_TenantServiceServicer_to_server(TenantServicer(ctx), self.server)
        identity_pb2_grpc.add_CredentialServiceServicer_to_server(CredentialServicer(ctx), self.server)
        assurance_pb2_grpc.add_StepUpServiceServicer_to_server(StepUpServicer(ctx), self.server)
        assurance_pb2_grpc.add_AssertionServiceServicer_to_server(AssertionServicer(ctx), self.server)
        assurance_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(ctx), self.server)
        fraud_pb2_grpc.add_WatchlistServiceServicer_to_server(WatchlistServicer(ctx), self.server)
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(ctx), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if reflection_on:
            # Off by default: it hands anyone who can connect the full map of the API.
            reflection.enable_server_reflection(
                (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
            )
        if tls is None:
            self.port = self.server.add_insecure_port(address)
        else:
            creds = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                require_client_auth=tls.client_ca is not None,
            )
            self.port = self.server.add_secure_port(address, creds)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")

    async def start(self) -> None:
        await self.server.start()
        await self._set_health(True)
        self._monitor = asyncio.get_running_loop().create_task(self._watch_store())

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)
        # Per detector, so an operator (or a probe) can see what is assessed: SERVING where the
        # countermeasure model is loaded, NOT_SERVING where synthetic speech goes unassessed.
        cm = serving and self.ctx.countermeasure is not None
        await self.health.set(
            SYNTHETIC_HEALTH,
            health_pb2.HealthCheckResponse.SERVING if cm else health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        await self.health.set(REPLAY_HEALTH, status)

    async def _watch_store(self) -> None:
        """NOT_SERVING while the store cannot answer (a load balancer then sends calls to other
        nodes), SERVING again once it does: the node recovers without a restart."""
        serving = True
        while True:
            await asyncio.sleep(STORE_CHECK_S)
            # Summaries of repeated refusals are written when their window closes.
            await self.ctx.refusals.flush_due()
            try:
                await asyncio.wait_for(self.ctx.store.ping(), STORE_CHECK_S * 2)
                ok = True
            except Exception as exc:  # whatever the store raises, it is not serving: say so, keep watching
                ok = False
                if serving:
                    log.error("store unavailable, health NOT_SERVING: %s", exc or type(exc).__name__)
            if ok != serving:
                serving = ok
                if ok:
                    log.info("store reachable again, health SERVING")
                await self._set_health(ok)

    async def stop(self, grace_s: float = 5.0) -> None:
        """NOT_SERVING first so load balancers drain, then let live streams finish."""
        monitor = getattr(self, "_monitor", None)
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        await self.ctx.close()

    async def wait(self) -> None:
        await self.server.wait_for_termination()
