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

from authsvc import keystroke
from authsvc.audio.codecs import Encoding
from authsvc.calls import LiveCall
from authsvc.context import ServiceContext
from authsvc.errors import PermissionDenied, Unauthenticated
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

    async def claim(self, customer_id: str) -> None:
        await self.submit(lambda: self.session.claim(customer_id))

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

    def abort(self) -> None:
        """The connection is gone without an end: no final decision, the call just ends."""
        self._worker.cancel()
        self.ctx.calls.close(self.call, self.error)


def bind(principal: Principal) -> None:
    """Makes `principal` the audit actor of the running connection task."""
    CURRENT.set(principal)
