"""Passive enrollment: a live call's voice enrolled after an agent verified the caller by other
means (EnrollFromSession), as Voice ID and Nuance enroll from calls.

The call's customer speech (the customer channel only, as every bridge feeds it) is quality
gated like an operator's recording, refused when the call carries a high replay, synthetic or
known-fraudster risk, screened against the tenant's watchlists, and checked against what the
customer already has: a voice that matches neither their voiceprint nor their earlier calls'
speech is refused unless a tenant-admin overrides it (one call cannot swap a customer's voice).

A customer with a voiceprint gets the call as one more sample. A customer without one
accumulates calls (sealed embeddings in the customer's state, erased with the customer, the
voice method or an opt-out) until they total `enrollment.passive_min_speech_s` of net speech;
then they become the voiceprint at once, and only then does verification use it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from authsvc.audio.codecs import Encoding, encode
from authsvc.audio.fingerprint import fingerprint
from authsvc.calls import LiveCall
from authsvc.changes import required_level
from authsvc.consent import require_consent
from authsvc.context import ServiceContext
from authsvc.enrollment import (
    FINGERPRINT,
    PASSIVE_PENDING,
    VOICE,
    embed_sample,
    passive_pending,
    same_voice_as,
    store_voice_sample,
)
from authsvc.errors import InvalidInput, PreconditionFailed
from authsvc.identifiers import check_id
from authsvc.identity.principal import Principal
from authsvc.identity.roles import TENANT_ADMIN
from authsvc.policy.engine import voice_threshold
from authsvc.scoring.cosine import aggregate, cosine, embedding_from_bytes, embedding_to_bytes
from authsvc.stepup.assertions import AALS
from authsvc.store.base import Transaction

PENDING = PASSIVE_PENDING


@dataclass(frozen=True)
class PassiveResult:
    added: bool
    call_net_speech_s: float
    enrolled_net_speech_s: float
    required_net_speech_s: float
    complete: bool
    calls: int
    same_voice_customers: int = 0


async def enroll_from_call(
    ctx: ServiceContext, call: LiveCall, customer_id: str, override: bool, principal: Principal
) -> PassiveResult:
    """Enrolls the call's customer speech (see the module docstring). `customer_id` names the
    customer of a call not claimed yet (claiming it), or must equal the claimed one."""
    actor = principal.id
    session = call.session
    tenant = session.start.tenant
    policy = session.policy
    if not policy.enrollment.passive:
        raise PreconditionFailed(f"tenant {tenant}'s policy does not allow enrollment from calls")
    claimed = session.start.customer_id
    if customer_id:
        check_id(customer_id, "customer_id")
        if claimed and customer_id != claimed:
            raise PreconditionFailed(f"call {call.call_id} is the call of another customer")
        if not claimed:
            await call.run(lambda: session.claim(customer_id))
    elif not claimed:
        raise InvalidInput("customer_id", "the call has no customer claimed yet: name the customer")
    cid = session.start.customer_id
    async with ctx.store.transaction() as tx:
        require_consent(await tx.get_customer(tenant, cid), tenant, cid, "voice")
    material = await call.run(session.enrollment_material)
    risky = sorted({r.detector for r in material.risks if r.high})
    if risky:
        await ctx.auditor.record(tenant, "enroll.passive", cid, "refused_risk", actor, risks=risky)
        raise PreconditionFailed(f"the call has a high {', '.join(risky)} risk; its voice is not enrolled")
    pcm = encode(material.speech, Encoding.PCM16_LE)
    _, tracker, _, embedding = await embed_sample(ctx, policy, Encoding.PCM16_LE, material.sample_rate, pcm)
    screened = ctx.watchlists.screen(policy, await ctx.watchlists.index(tenant), embedding)
    if screened.high and policy.fraud.enrollment_on_watchlist == "refuse":
        await ctx.auditor.record(tenant, "enroll.passive", cid, "refused_watchlist", actor)
        raise PreconditionFailed(
            f"the call's voice matches a known fraudster on tenant {tenant}'s watchlists"
        )
    same_voice = await same_voice_as(ctx, policy, tenant, cid, embedding)
    print_ = await asyncio.to_thread(fingerprint, material.audio, material.sample_rate)
    enc = ctx.encoder
    seconds = tracker.net_speech_s
    # One sample per call: enrolling the same call again (its speech grown since) adds nothing.
    digest = ctx.vault.sample_digest(tenant, cid, VOICE, f"call:{call.call_id}".encode())
    async with ctx.store.transaction() as tx:
        # Again under the lock: the customer may have opted out while the call's voice embedded.
        record = require_consent(await tx.lock_customer(tenant, cid), tenant, cid, "voice")
        # Adding to what protects a customer after their enrollment window needs authority like
        # any enrollment: a tenant-admin, or this very call having authenticated the customer at
        # the policy's assurance level (an agent's word alone is not enough there).
        await ctx.factors.gate_addition(
            tx, policy, record, _authority(principal, session), "a voice from a call"
        )
        templates = [
            t
            for t in await ctx.vault.load(tenant, cid, VOICE, tx)
            if (t.encoder_id, t.encoder_version) == (enc.encoder_id, enc.version)
        ]
        pending = await passive_pending(ctx, tenant, cid, tx)
        reference = [embedding_from_bytes(t.payload) for t in templates] or [
            embedding_from_bytes(bytes.fromhex(p["embedding"])) for p in pending
        ]
        if reference and not override:
            threshold, _ = voice_threshold(policy, ctx.calibration)
            mismatch = cosine(aggregate(reference), embedding) < threshold
        else:
            mismatch = False
        if not mismatch:
            added, total, complete = await _add(
                ctx,
                tenant,
                cid,
                digest,
                embedding,
                print_.to_bytes(),
                seconds,
                templates,
                pending,
                policy,
                tx,
            )
            await ctx.auditor.record(
                tenant,
                "enroll.passive",
                cid,
                ("completed" if complete and not templates else "added") if added else "already_enrolled",
                actor,
                session=call.call_id,
                net_speech_s=round(seconds, 1),
                encoder=f"{enc.encoder_id}/{enc.version}",
                tx=tx,
                **({"override": "voice_mismatch"} if override and reference else {}),
                **({"watchlist": "match"} if screened.high else {}),
                **({"same_voice_as": same_voice} if same_voice else {}),
            )
    if mismatch:  # audited outside the unit of work that stored nothing
        await ctx.auditor.record(
            tenant, "enroll.passive", cid, "refused_mismatch", actor, session=call.call_id
        )
        raise PreconditionFailed(
            "the call's voice does not match the customer's voiceprint or earlier calls; a tenant "
            "administrator may override (one call cannot replace a customer's voice)"
        )
    required = policy.enrollment.passive_min_speech_s
    enrolled = total if not templates else seconds
    return PassiveResult(
        added, seconds, enrolled, required, complete, len(pending) if not templates else 0, len(same_voice)
    )


def _authority(principal: Principal, session) -> str | None:
    if principal.has(TENANT_ADMIN):
        return TENANT_ADMIN
    issued = session.issued_assertion
    if issued is not None and AALS.index(issued.assurance_level) >= AALS.index(
        required_level(session.policy)
    ):
        return f"call-assertion:{issued.id}"
    return None


async def _add(ctx, tenant, cid, digest, embedding, print_bytes, seconds, templates, pending, policy, tx):
    """Stores the call: one more sample of a voiceprint, or one more call gathered toward a first
    one (which becomes the voiceprint once the calls reach the minimum); -> (added, gathered
    net speech, complete)."""
    enc = ctx.encoder
    if any(p["digest"] == digest for p in pending):
        added = False
    elif templates:
        added = await _store(ctx, tenant, cid, digest, embedding, print_bytes, tx)
    else:
        pending.append(
            {
                "digest": digest,
                "embedding": embedding_to_bytes(embedding).hex(),
                "fingerprint": print_bytes.hex(),
                "seconds": round(seconds, 2),
                "encoder": f"{enc.encoder_id}/{enc.version}",
            }
        )
        added = True
    total = sum(p["seconds"] for p in pending)
    complete = bool(templates) or total >= policy.enrollment.passive_min_speech_s
    if not templates and complete:
        for p in pending:
            stored = embedding_from_bytes(bytes.fromhex(p["embedding"]))
            await _store(ctx, tenant, cid, p["digest"], stored, bytes.fromhex(p["fingerprint"]), tx)
        await tx.delete_state(tenant, cid, PENDING)
    elif not templates:
        await ctx.vault.put_state(tenant, cid, PENDING, json.dumps(pending).encode(), tx)
    return added, total, complete


async def _store(
    ctx, tenant: str, cid: str, digest: str, embedding, print_bytes: bytes, tx: Transaction
) -> bool:
    print_digest = ctx.vault.sample_digest(tenant, cid, FINGERPRINT, bytes.fromhex(digest))
    return await store_voice_sample(ctx, tenant, cid, digest, embedding, print_bytes, print_digest, "", tx)
