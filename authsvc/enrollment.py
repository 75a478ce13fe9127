"""Voice enrollment: one audio sample -> quality checks -> embedding -> encrypted template."""

from __future__ import annotations

from dataclasses import dataclass

from authsvc.audio.codecs import Encoding, check_rate, decode
from authsvc.audio.quality import Quality, assess
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput, NotFound
from authsvc.identifiers import check_id
from authsvc.scoring.cosine import embedding_to_bytes
from authsvc.store.base import CustomerRecord, Erasure
from authsvc.voice.pipeline import encoder_input, track

VOICE = "voice"
MAX_ENROLL_SECONDS = 300


@dataclass(frozen=True)
class EnrollResult:
    customer: CustomerRecord
    added: bool
    net_speech_s: float
    quality: tuple[Quality, ...]


async def enroll_voice(
    ctx: ServiceContext,
    tenant: str,
    customer_id: str,
    encoding: Encoding,
    sample_rate: int,
    audio: bytes,
    label: str = "",
) -> EnrollResult:
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    check_rate(sample_rate, "format.sample_rate_hz")
    if not audio:
        raise InvalidInput("audio", "is empty")
    samples = decode(audio, encoding)
    if samples.size > MAX_ENROLL_SECONDS * sample_rate:
        raise InvalidInput("audio", f"longer than {MAX_ENROLL_SECONDS} s; split it into samples")
    rules = ctx.policies.get(tenant).voice
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
    digest = ctx.vault.sample_digest(tenant, customer_id, VOICE, audio)
    embedding = await ctx.runner.embed(encoder_input(tracker, ctx.encoder.sample_rate))
    enc = ctx.encoder
    added = ctx.vault.put(
        tenant, customer_id, VOICE, enc.encoder_id, enc.version, digest, embedding_to_bytes(embedding), label
    )
    customer = ctx.vault.store.get_customer(tenant, customer_id)
    assert customer is not None  # put() created it in the same transaction
    return EnrollResult(customer, added, tracker.net_speech_s, quality)


@dataclass(frozen=True)
class TemplateSummary:
    modality: str
    encoder_id: str
    encoder_version: str
    sample_count: int
    updated_ms: int


def describe_customer(
    ctx: ServiceContext, tenant: str, customer_id: str
) -> tuple[CustomerRecord, list[TemplateSummary]]:
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    record = ctx.vault.store.get_customer(tenant, customer_id)
    if record is None:
        raise NotFound(f"customer {tenant}/{customer_id} does not exist")
    groups: dict[tuple[str, str, str], list[int]] = {}
    for row in ctx.vault.store.templates(tenant, customer_id):
        groups.setdefault((row.modality, row.encoder_id, row.encoder_version), []).append(row.created_ms)
    summaries = [TemplateSummary(m, e, v, len(ts), max(ts)) for (m, e, v), ts in sorted(groups.items())]
    return record, summaries


def delete_customer(ctx: ServiceContext, tenant: str, customer_id: str) -> Erasure:
    check_id(tenant, "tenant")
    check_id(customer_id, "customer_id")
    deleted = ctx.vault.store.delete_customer(tenant, customer_id)
    if deleted is None:
        raise NotFound(f"customer {tenant}/{customer_id} does not exist")
    return deleted
