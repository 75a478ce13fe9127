"""What every media bridge shares: the principal of a connection, its live call, refusals.

A bridge connection is one call. Its credential is checked like an RPC's (revoked and expired
keys refused at once) against the bridge's row of the role table, and its tenant is the
credential's own: a bridge never takes a tenant from the platform's messages. Refusals are
audited like the interceptor's, with the peer address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from authsvc import keystroke
from authsvc.audio.codecs import Encoding
from authsvc.calls import LiveCall
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput, PermissionDenied, Unauthenticated
from authsvc.identity.principal import CURRENT, Principal
from authsvc.identity.roles import BRIDGES
from authsvc.session import SessionStart, VerificationSession

log = logging.getLogger(__name__)
# A bridge's frames wait here for the session; beyond it the bridge stops reading (the peer's
# own flow control), so one slow call never grows without bound.
AUDIO_QUEUE = 100


def check_grant(principal: Principal, bridge: str) -> Principal:
    rule = BRIDGES[bridge]
    if not principal.roles & rule.roles:
        raise PermissionDenied(
            "ROLE_NOT_GRANTED", f"the {bridge} bridge needs one of the roles {', '.join(sorted(rule.roles))}"
        )
    if not principal.tenant:
        raise PermissionDenied("TENANT_NOT_GRANTED", "a call belongs to a tenant; this credential has none")
    return principal


async def refused(
    ctx: ServiceContext,
    bridge: str,
    source: str,
    exc: Unauthenticated | PermissionDenied,
    principal: Principal | None = None,
    tenant: str = "",
) -> None:
    """Audits a refused connection (summarised per source like refused RPCs)."""
    ctx.metrics.bridge_connections.labels(bridge, "refused").inc()
    trail = principal.tenant if principal is not None else ""
    if tenant and await ctx.tenants.find(tenant) is not None:
        trail = tenant
    await ctx.refusals.refused(
        trail,
        source,
        principal.id if principal else "anonymous",
        f"bridge:{bridge}",
        exc.reason,
        claimed_tenant=tenant,
    )


class BridgeCall:
    """One call arriving through a bridge: its session, driven in order by one worker task so the
    bridge can answer its protocol's control messages (pings) while the session computes."""

    def __init__(self, ctx: ServiceContext, bridge: str, call: LiveCall) -> None:
        self.ctx, self.bridge, self.call = ctx, bridge, call
        self._work: asyncio.Queue = asyncio.Queue(AUDIO_QUEUE)
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self.error: BaseException | None = None

    @classmethod
    async def open(
        cls,
        ctx: ServiceContext,
        bridge: str,
        principal: Principal,
        call_id: str,
        customer_id: str,
        encoding: Encoding,
        sample_rate: int,
    ) -> BridgeCall:
        """Starts the session (the caller's task must hold `principal` in CURRENT for the audit)."""
        policy = await ctx.policy_for(principal.tenant)
        session = VerificationSession(
            ctx,
            SessionStart(
                tenant=principal.tenant,
                customer_id=customer_id,
                channel="voice",
                encoding=encoding,
                sample_rate=sample_rate,
                session_id=call_id,
                source=principal.origin,
            ),
            policy,
        )
        call = ctx.calls.open(principal.tenant, call_id, session)
        try:
            await call.run(session.begin)
        except BaseException as exc:
            ctx.calls.close(call, exc)
            raise
        return cls(ctx, bridge, call)

    @property
    def session(self) -> VerificationSession:
        return self.call.session

    async def _run(self) -> None:
        while (step := await self._work.get()) is not None:
            if self.error is None:
                try:
                    await self.call.run(step)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the call fails; the bridge reports it in its protocol
                    log.warning("%s call %s: %s", self.bridge, self.call.call_id, exc)
                    self.error = exc

    async def submit(self, step: Callable[[], Awaitable]) -> None:
        await self._work.put(step)

    async def audio(self, data: bytes) -> None:
        await self.submit(lambda: self.session.feed_audio(data))

    async def keys(self, profile: str, sample: keystroke.Sample) -> None:
        await self.submit(lambda: self.session.feed_keystrokes(profile, sample))

    async def finish(self, decide: bool = True) -> None:
        """Ends the call: its last decision once every frame before it is handled (`decide`), then
        the call leaves the registry and its watchers finish."""
        if decide:
            await self.submit(self._final)
        await self._work.put(None)
        try:
            await self._worker
        finally:
            self.ctx.calls.close(self.call, self.error)

    async def _final(self) -> None:
        if self.session.has_evidence():
            await self.session.finish()


class KeypadRun:
    """DTMF digits of a bridge that gives no tone timings: each digit is stamped with the call's
    media clock when it arrives (its press; no release is known), and a run of digits ends at
    '#' or a pause of `gap_s`, becoming one keypad sample for the session."""

    def __init__(self, call: BridgeCall, profile: str = "pin", gap_s: float = 3.0, limit: int = 32) -> None:
        self.call, self.profile, self.gap_s, self.limit = call, profile, gap_s, limit
        self.digits: list[keystroke.KeyEvent] = []

    async def digit(self, digit: str, at_s: float) -> None:
        """InvalidInput for a character that is no DTMF digit."""
        event = keystroke.dtmf_event(digit, at_s, None)
        if event.key == "#":
            await self.flush()
        elif len(self.digits) < self.limit:
            self.digits.append(event)

    async def tick(self, now_s: float) -> None:
        """The media clock moved on: a run that paused long enough is complete."""
        if self.digits and now_s - self.digits[-1].press > self.gap_s:
            await self.flush()

    async def flush(self) -> None:
        events, self.digits = self.digits, []
        if len(events) < 2:
            return  # one digit has no rhythm
        try:
            sample = keystroke.make_sample(events, "dtmf", "".join(e.key for e in events))
        except InvalidInput:
            return  # digits the keypad model cannot use (no gap between them): no sample
        await self.call.keys(self.profile, sample)


class WebSocketBridge:
    """A bridge served over WebSocket: the upgrade authenticates (`authenticate`, answering an
    HTTP refusal or leaving the connection's principal), then one protocol session per
    connection (`session`), counted in metrics by how it ended."""

    bridge = ""
    max_message = 65536

    def __init__(self, ctx: ServiceContext, host: str, port: int, idle_s: float, ssl: Any) -> None:
        self.ctx, self.host, self.port, self.idle_s, self.ssl = ctx, host, port, idle_s, ssl
        self._server: Server | None = None

    async def start(self) -> int:
        self._server = await serve(
            self._connection,
            self.host,
            self.port,
            process_request=self.authenticate,
            max_size=self.max_message,
            ssl=self.ssl,
            # Each protocol has its own liveness (AudioHook's ping/pong, Twilio's steady media)
            # and the idle time; a WebSocket ping a peer does not expect would add a third timer.
            ping_interval=None,
            server_header="authsvc",
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        raise NotImplementedError

    async def session(self, connection: ServerConnection, principal: Principal) -> str:
        """Runs one connection's protocol; -> how it ended (completed, protocol_error, idle, ...)."""
        raise NotImplementedError

    async def _connection(self, connection: ServerConnection) -> None:
        principal: Principal = connection.principal  # type: ignore[attr-defined]
        await run_counted(self.ctx, self.bridge, principal, lambda: self.session(connection, principal))


async def run_counted(
    ctx: ServiceContext, bridge: str, principal: Principal, run: Callable[[], Awaitable[str]]
) -> None:
    """Runs one accepted connection as `principal` (the audit actor of everything it does),
    counted in the bridge metrics by how it ended."""
    CURRENT.set(principal)
    metrics = ctx.metrics
    metrics.bridge_active.labels(bridge).inc()
    outcome = "error"
    try:
        outcome = await run()
    finally:
        metrics.bridge_active.labels(bridge).dec()
        metrics.bridge_connections.labels(bridge, outcome).inc()


def peer(address: Any) -> str:
    """A peer address (host, port, ...) as gRPC names one ("ipv4:HOST:PORT")."""
    return f"ipv4:{address[0]}:{address[1]}" if address else ""
