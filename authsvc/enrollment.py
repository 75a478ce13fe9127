"""Enrollment and customer management: registration choices and consent, voice samples,
typing samples, listing and erasure."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from authsvc import changes, keystroke
from authsvc.audio.codecs import Encoding, check_rate, decode
from authsvc.audio.fingerprint import VERSION as FINGERPRINT_VERSION
from authsvc.audio.fingerprint import fingerprint
from authsvc.audio.quality import Quality, assess
from authsvc.audio.vad import SpeechTracker
from authsvc.consent import BIOMETRIC_METHODS, METHODS, require_consent
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput, NotFound, PreconditionFailed
from authsvc.fraud import caller_voices
from authsvc.identifiers import check_id
from authsvc.scoring.cosine import aggregate, cosine, embedding_from_bytes, embedding_to_bytes, usable
from authsvc.store.base import CustomerRecord, Erasure, Transaction, within
from authsvc.voice.pipeline import encoder_input, track

VOICE = "voice"
# Landmark fingerprints of enrollment samples (and recent calls), for replay detection: they go
# with the voiceprint (erased, re-registered and expired with it).
FINGERPRINT = "voice_fingerprint"
# Customer state of passive enrollment (authsvc.passive): calls gathered toward a first voiceprint.
PASSIVE_PENDING = "voice.pending"
KEYSTROKE_FIXED = "keystroke_fixed"
KEYSTROKE_FREE = "keystroke_free"
MAX_ENROLL_SECONDS = 300
_PROFILE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class EnrollResult:
    customer: CustomerRecord
    added: bool
    net_speech_s: float
    quality: tuple[Quality, ...]
    # Other customers of the tenant whose voiceprint the sample matches (how many, not who).
    same_voice_customers: int = 0


async def embed_sample(
    ctx: ServiceContext, policy, encoding: Encoding, sample_rate: int, audio: bytes
) -> tuple[np.ndarray, SpeechTracker, tuple[Quality, ...], np.ndarray]:
    """Decodes and quality-gates one recording of a voice, -> (samples, tracker, quality, embedding).
    No speech, too little, clipped or a degenerate embedding is InvalidInput."""
    check_rate(sample_rate, "format.sample_rate_hz")
    if not audio:
        raise InvalidInput("audio", "is empty")
    samples = decode(audio, encoding)
    if samples.size > MAX_ENROLL_SECONDS * sample_rate:
        raise InvalidInput("audio", f"longer than {MAX_ENROLL_SECONDS} s; split it into samples")
    rules = policy.voice
    tracker = track(samples, sample_rate, int(encoding.full_scale * 0.98))
    quality = tuple(assess(tracker, rules.min_enroll_speech_s))
    if Quality.SILENT in quality:
        raise InvalidInput("audio", "no speech detected in the sample")
    if Quality.TOO_SHORT in quality:
        raise InvalidInput(
            "audio",
            f"only {tracker.net_speech_s:.2f} s of net speech; enrollment needs "
            f"{rules.min_enroll_speech_s:.2f} s",
        )
    if Quality.CLIPPED in quality:
        raise InvalidInput("audio", "the sample is clipped (saturated); record it at a lower gain")
    embedding = await ctx.runner.embed(encoder_input(tracker, ctx.encoder.sample_rate))
    if not usable(embedding):
        raise InvalidInput("audio", "the sample gives no usable voiceprint (a degenerate embedding)")
    return samples, tracker, quality, embedding


async def enroll_voice(
    ctx: ServiceContext,
    tenant: str,
    customer_id: str,
    encoding: Encoding,
    sample_rate: int,
    audio: bytes,
    label: str = "",
    actor: str = "",
    change: str | None = None,
) -> EnrollResult:
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    async with ctx.store.transaction() as tx:
        require_consent(await tx.get_customer(tenant, customer_id), tenant, customer_id, "voice")
    policy = await ctx.policy_for(tenant)
    samples, tracker, quality, embedding = await embed_sample(ctx, policy, encoding, sample_rate, audio)
    digest = ctx.vault.sample_digest(tenant, customer_id, VOICE, audio)
    screened = ctx.watchlists.screen(policy, await ctx.watchlists.index(tenant), embedding)
    if screened.high and policy.fraud.enrollment_on_watchlist == "refuse":
        # Voice ID's default: a known fraudster's voice is never enrolled under a customer's name.
        await ctx.auditor.record(tenant, "enroll.voice", customer_id, "refused_watchlist", actor)
        raise PreconditionFailed(
            f"the sample's voice matches a known fraudster on tenant {tenant}'s watchlists; "
            "it was not enrolled"
        )
    enc = ctx.encoder
    same_voice = await same_voice_as(ctx, policy, tenant, customer_id, embedding)
    # Of the sample as recorded (not only its speech): a replay brings the whole recording.
    print_ = await asyncio.to_thread(fingerprint, samples, sample_rate)
    # The customer, the template and its audit row are stored together or not at all.
    async with ctx.store.transaction() as tx:
        # Checked again under the lock: the customer may have opted out while the sample embedded.
        record = require_consent(await tx.lock_customer(tenant, customer_id), tenant, customer_id, "voice")
        await ctx.factors.gate_addition(tx, policy, record, change, "another voice sample")
        added = await store_voice_sample(
            ctx,
            tenant,
            customer_id,
            digest,
            embedding,
            print_.to_bytes(),
            ctx.vault.sample_digest(tenant, customer_id, FINGERPRINT, audio),
            label,
            tx,
        )
        customer = await tx.get_customer(tenant, customer_id)
        assert customer is not None  # put() created it in this unit of work
        # Not the label: an operator's file name may name the person, and audit rows outlive erasure.
        await ctx.auditor.record(
            tenant,
            "enroll.voice",
            customer_id,
            "added" if added else "already_enrolled",
            actor,
            encoder=f"{enc.encoder_id}/{enc.version}",
            tx=tx,
            **({"authorized_by": change} if change else {}),
            **({"watchlist": "match"} if screened.high else {}),
            # One voice behind several accounts: named here, for the tenant's administrators.
            **({"same_voice_as": same_voice} if same_voice else {}),
        )
    return EnrollResult(customer, added, tracker.net_speech_s, quality, len(same_voice))


async def store_voice_sample(
    ctx: ServiceContext,
    tenant: str,
    customer_id: str,
    digest: str,
    embedding: np.ndarray,
    print_bytes: bytes,
    print_digest: str,
    label: str,
    tx: Transaction,
) -> bool:
    """One voice sample's template and, with it, its recording's fingerprint (replay detection);
    -> False when this sample (digest) is enrolled already."""
    enc = ctx.encoder
    added = await ctx.vault.put(
        tenant,
        customer_id,
        VOICE,
        enc.encoder_id,
        enc.version,
        digest,
        embedding_to_bytes(embedding),
        label,
        tx=tx,
    )
    if added:
        await ctx.vault.put(
            tenant,
            customer_id,
            FINGERPRINT,
            "landmark",
            FINGERPRINT_VERSION,
            print_digest,
            print_bytes,
            "",
            tx=tx,
        )
        # An enrollment: retention counts from here, and an earlier expiry is over.
        await tx.touch_customer(tenant, customer_id, int(time.time() * 1000), enrolled=True)
    return added


async def passive_pending(ctx: ServiceContext, tenant: str, customer_id: str, tx: Transaction) -> list[dict]:
    """The calls gathered toward a first voiceprint (authsvc.passive), oldest first."""
    raw = await ctx.vault.load_state(tenant, customer_id, PASSIVE_PENDING, tx)
    return json.loads(raw) if raw else []


# Beyond this many voice samples in a tenant the scan is skipped (it reads every one):
# the per-tenant index that watchlists use is the way to lift it.
MAX_SAME_VOICE_SCAN = 20_000


async def same_voice_as(ctx: ServiceContext, policy, tenant: str, customer_id: str, embedding) -> list[str]:
    """Other customers of the tenant whose voiceprint this sample matches (at the watchlist's
    per-comparison false-match rate): one voice behind several accounts is a fraud signal."""
    threshold = ctx.watchlists.threshold(policy)
    if threshold is None:
        return []
    enc = ctx.encoder
    async with ctx.store.transaction() as tx:
        payloads = await ctx.vault.tenant_payloads(tenant, VOICE, enc.encoder_id, enc.version, tx)
    payloads.pop(customer_id, None)
    if not payloads or sum(map(len, payloads.values())) > MAX_SAME_VOICE_SCAN:
        return []

    def scan() -> list[str]:
        v = np.asarray(embedding, np.float32)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        hits = []
        for other, blobs in payloads.items():
            if cosine(aggregate([embedding_from_bytes(b) for b in blobs]), v) >= threshold:
                hits.append(other)
        return hits

    return await asyncio.to_thread(scan)


def keystroke_modality(kind: str, profile: str) -> str:
    """Template modality of a typing sample: fixed-text profiles are named, free text is one profile."""
    if kind == "free":
        return KEYSTROKE_FREE
    if not _PROFILE.fullmatch(profile):
        raise InvalidInput(
            "profile", "fixed-text and DTMF samples need a profile name like 'password' or 'pin'"
        )
    return f"{KEYSTROKE_FIXED}/{profile}"


@dataclass(frozen=True)
class KeystrokeEnrollResult:
    customer: CustomerRecord
    added: int
    already: int


async def enroll_keystrokes(
    ctx: ServiceContext,
    tenant: str,
    customer_id: str,
    samples: Sequence[tuple[str, keystroke.Sample]],
    actor: str = "",
    change: str | None = None,
) -> KeystrokeEnrollResult:
    """Adds (profile name, sample) pairs; each profile is created on first use and grown after.

    The sealed template is {"profile": <profile bytes>, "samples": [digests]}, so
    a sample enrolled twice is recognised and not counted again.
    """
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    if not samples:
        raise InvalidInput("samples", "at least one keystroke sample is required")
    if len(samples) > keystroke.MAX_ENROLL_SAMPLES:
        raise InvalidInput(
            "samples", f"at most {keystroke.MAX_ENROLL_SAMPLES} per request; send the rest in another"
        )
    groups: dict[str, list[keystroke.Sample]] = {}
    for name, sample in samples:
        groups.setdefault(keystroke_modality(sample.kind, name), []).append(sample)
    policy = await ctx.policy_for(tenant)
    async with ctx.store.transaction() as tx:
        record = require_consent(await tx.lock_customer(tenant, customer_id), tenant, customer_id, "typing")
        await ctx.factors.gate_addition(tx, policy, record, change, "more typing samples")
        added, already = 0, 0
        for modality, group in groups.items():
            a, b = await _grow_profile(ctx, tx, tenant, customer_id, modality, group, actor)
            added, already = added + a, already + b
        record = await tx.ensure_customer(tenant, customer_id, int(time.time() * 1000))
    return KeystrokeEnrollResult(record, added, already)


async def _grow_profile(
    ctx: ServiceContext,
    tx: Transaction,
    tenant: str,
    customer_id: str,
    modality: str,
    group: list[keystroke.Sample],
    actor: str,
) -> tuple[int, int]:
    """Adds the new samples of `group` to the customer's `modality` profile; -> (added, already)."""
    already = 0
    existing = await ctx.vault.load(tenant, customer_id, modality, tx)
    old, digests = _typing_template(existing[0].payload) if existing else (None, [])
    seen = set(digests)
    fresh = []
    for sample in group:
        digest = ctx.vault.sample_digest(tenant, customer_id, modality, _sample_bytes(sample))
        if digest in seen:
            already += 1
            continue
        seen.add(digest)
        fresh.append(sample)
    if not fresh:
        return 0, already
    profile = keystroke.enroll(fresh, old)
    _, model_id, version = keystroke.template_identity(profile)
    payload = json.dumps({"profile": profile.decode("latin-1"), "samples": sorted(seen)}).encode()
    await ctx.vault.replace(tenant, customer_id, modality, model_id, version, payload, tx)
    await tx.touch_customer(tenant, customer_id, int(time.time() * 1000), enrolled=True)
    await ctx.auditor.record(
        tenant,
        "enroll.keystrokes",
        customer_id,
        "added",
        actor,
        profile=modality,
        samples=len(fresh),
        tx=tx,
    )
    return len(fresh), already


def _typing_template(payload: bytes) -> tuple[bytes, list[str]]:
    """A sealed keystroke template's contents: (profile bytes, digests of the enrolled samples)."""
    doc = json.loads(payload)
    return doc["profile"].encode("latin-1"), doc["samples"]


def profile_bytes(payload: bytes) -> bytes:
    """The keystroke profile inside a sealed keystroke template."""
    return _typing_template(payload)[0]


def profile_samples(payload: bytes) -> int:
    return len(_typing_template(payload)[1])


def _sample_bytes(sample: keystroke.Sample) -> bytes:
    events = [
        (e.key, round(e.press, 6), None if e.release is None else round(e.release, 6)) for e in sample.events
    ]
    return json.dumps([sample.kind, sample.text, events]).encode()


@dataclass(frozen=True)
class Registration:
    customer: CustomerRecord
    templates_removed: int


async def register_customer(
    ctx: ServiceContext,
    tenant: str,
    customer_id: str,
    methods: Sequence[str],
    opt_out: bool,
    consent_version: str,
    actor: str = "",
    confirm_removal: bool = False,
    change: str | None = None,
) -> Registration:
    """Stores the customer's choice of methods (or opt-out) with the consent text version.

    Opting out (or dropping a biometric method) erases the templates of that method: an
    opted-out customer is never scored, so keeping their voiceprint would only be a
    liability. Because that also strips the customer's protection, it needs
    `confirm_removal` and `change` (how it was authorized, authsvc.changes).
    """
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InvalidInput("methods", f"unknown method {unknown[0]!r}")
    if opt_out and any(m in BIOMETRIC_METHODS for m in methods):
        raise InvalidInput("methods", "a customer who opts out of biometrics cannot choose voice or typing")
    if not consent_version:
        raise InvalidInput("consent_text_version", "is required: record which consent text the customer saw")
    policy = await ctx.policy_for(tenant)
    async with ctx.store.transaction() as tx:
        existing = await tx.lock_customer(tenant, customer_id)
        stored = await tx.templates(tenant, customer_id)
        unwanted = sorted({r.modality for r in stored if _method_of(r.modality) not in methods})
        # A voice sample's fingerprint goes with it, and is not counted as a template of its own.
        prints = sum(1 for r in stored if r.modality == FINGERPRINT and r.modality in unwanted)
        doomed = sum(1 for r in stored if r.modality in unwanted) - prints
        named = [m for m in unwanted if m != FINGERPRINT]
        if existing is not None:
            await ctx.factors.gate_addition(
                tx, policy, existing, change, "re-registering the customer", adds=False
            )
        if doomed:
            if change is None:
                raise changes.refuse(f"removing {doomed} biometric template(s) ({', '.join(named)})")
            if not confirm_removal:
                raise PreconditionFailed(
                    f"this registration removes {doomed} template(s) of customer {tenant}/{customer_id} "
                    f"({', '.join(named)}); confirm it (confirm_template_removal, authsvc register --yes)"
                )
        record = await tx.set_choices(
            tenant,
            customer_id,
            list(dict.fromkeys(methods)),
            opt_out,
            consent_version,
            int(time.time() * 1000),
        )
        removed = await tx.delete_templates(tenant, customer_id, unwanted) - prints if unwanted else 0
        if opt_out or "voice" not in methods:
            # The voices of recent callers claiming this customer, and calls gathered toward a
            # voiceprint, go with the voice method.
            for name in await tx.state_names(tenant, customer_id):
                if name.startswith(caller_voices.PREFIX) or name == PASSIVE_PENDING:
                    await tx.delete_state(tenant, customer_id, name)
        await ctx.auditor.record(
            tenant,
            "register",
            customer_id,
            "opted_out" if opt_out else "registered",
            actor,
            methods=sorted(methods),
            consent_text_version=consent_version,
            templates_removed=removed,
            tx=tx,
            **({"authorized_by": change} if change else {}),
        )
    return Registration(record, removed)


def _method_of(modality: str) -> str:
    return "voice" if modality in (VOICE, FINGERPRINT) else "typing"


@dataclass(frozen=True)
class TemplateSummary:
    modality: str
    encoder_id: str
    encoder_version: str
    sample_count: int
    updated_ms: int


@dataclass(frozen=True)
class CustomerSummary:
    record: CustomerRecord
    templates: list[TemplateSummary]
    factors: tuple[str, ...]
    # Passive enrollment toward a first voiceprint: net speech and calls gathered so far.
    pending_voice_s: float = 0.0
    pending_calls: int = 0

    @property
    def has_voiceprint(self) -> bool:
        return any(t.modality == VOICE for t in self.templates)


async def describe_customer(
    ctx: ServiceContext, tenant: str, customer_id: str, tx: Transaction | None = None
) -> CustomerSummary:
    """The customer's choices, consent, templates (sample counts, never contents) and factors."""
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    async with within(ctx.store, tx) as t:
        record = await t.get_customer(tenant, customer_id)
        if record is None:
            raise NotFound(f"customer {tenant}/{customer_id} does not exist")
        # One read of all the rows (on PostgreSQL each statement sees the latest commit: a
        # second read could miss a profile the first one listed).
        groups: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        for tpl in await ctx.vault.load(tenant, customer_id, None, t):
            if tpl.modality == FINGERPRINT:
                continue  # one per voice sample: part of the voiceprint, not a template of its own
            # A keystroke profile is one row holding many samples; a voice row is one sample.
            count = 1 if tpl.modality == VOICE else profile_samples(tpl.payload)
            key = (tpl.modality, tpl.encoder_id, tpl.encoder_version)
            groups.setdefault(key, []).append((count, tpl.created_ms))
        summaries = [
            TemplateSummary(m, e, v, sum(c for c, _ in rows), max(ms for _, ms in rows))
            for (m, e, v), rows in sorted(groups.items())
        ]
        factors = await ctx.factors.active(tenant, customer_id, t)
        pending = await passive_pending(ctx, tenant, customer_id, t)
    seconds = round(sum(p["seconds"] for p in pending), 1)
    return CustomerSummary(record, summaries, factors, seconds, len(pending))


async def list_customers(
    ctx: ServiceContext, tenant: str, limit: int, after: str
) -> tuple[list[CustomerSummary], bool]:
    """One page of customers in id order; -> (page, whether more follow)."""
    check_id(tenant, "tenant")
    async with ctx.store.transaction() as tx:
        records = await tx.list_customers(tenant, limit + 1, after)
        page = [await describe_customer(ctx, tenant, r.customer_id, tx) for r in records[:limit]]
    return page, len(records) > limit


async def unlock_customer(ctx: ServiceContext, tenant: str, customer_id: str, actor: str) -> list[str]:
    """Clears the customer's lockouts; -> the factors that were locked."""
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    return await ctx.factors.unlock(tenant, customer_id, actor)


async def delete_customer(ctx: ServiceContext, tenant: str, customer_id: str, actor: str = "") -> Erasure:
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    async with ctx.store.transaction() as tx:
        prints = sum(1 for r in await tx.templates(tenant, customer_id) if r.modality == FINGERPRINT)
        deleted = await tx.delete_customer(tenant, customer_id)
        if deleted is None:
            raise NotFound(f"customer {tenant}/{customer_id} does not exist")
        # Fingerprints are erased with the voice samples they belong to, not counted apart.
        deleted = replace(deleted, templates=deleted.templates - prints)
        await ctx.auditor.record(
            tenant,
            "erase",
            customer_id,
            "erased",
            actor,
            templates=deleted.templates,
            secrets=deleted.secrets,
            tx=tx,
        )
    return deleted
