"""Helpers that speak the service's wire format, as a telephony client would."""

from __future__ import annotations

import numpy as np

from authsvc.api.v1 import common_pb2, enrollment_pb2, verification_pb2
from authsvc.audio.codecs import Encoding, encode
from authsvc.audio.resample import resample

PB = {
    Encoding.PCM16_LE: common_pb2.AUDIO_ENCODING_PCM16_LE,
    Encoding.MULAW: common_pb2.AUDIO_ENCODING_MULAW,
    Encoding.ALAW: common_pb2.AUDIO_ENCODING_ALAW,
}


def enroll_request(
    tenant: str, customer: str, wav16k: np.ndarray, label: str = ""
) -> enrollment_pb2.EnrollVoiceRequest:
    return enrollment_pb2.EnrollVoiceRequest(
        tenant=tenant,
        customer_id=customer,
        format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16_LE, sample_rate_hz=16000),
        audio=encode(wav16k, Encoding.PCM16_LE),
        label=label,
    )


def start_request(tenant: str, customer: str, encoding: Encoding = Encoding.MULAW, rate: int = 8000):
    return verification_pb2.VerifyRequest(
        start=verification_pb2.SessionStart(
            tenant=tenant,
            customer_id=customer,
            channel=common_pb2.CHANNEL_VOICE,
            audio_format=common_pb2.AudioFormat(encoding=PB[encoding], sample_rate_hz=rate),
            session_id="call-1",
        )
    )


def call_requests(
    tenant: str,
    customer: str,
    wav16k: np.ndarray,
    encoding: Encoding = Encoding.MULAW,
    rate: int = 8000,
    frame_ms: int = 20,
) -> list:
    """SessionStart then `frame_ms` chunks of the utterance in `encoding` at `rate`."""
    data = encode(resample(wav16k, 16000, rate), encoding)
    step = rate * frame_ms // 1000 * encoding.bytes_per_sample
    chunks = [
        verification_pb2.VerifyRequest(audio=verification_pb2.AudioChunk(data=data[i : i + step]))
        for i in range(0, len(data), step)
    ]
    return [start_request(tenant, customer, encoding, rate), *chunks]


def keystroke_pb(sample, profile: str = "") -> common_pb2.KeystrokeSample:
    """A domain keystroke Sample as the wire message a web or telephony client sends."""
    kinds = {
        "fixed": common_pb2.KEYSTROKE_KIND_FIXED_TEXT,
        "free": common_pb2.KEYSTROKE_KIND_FREE_TEXT,
        "dtmf": common_pb2.KEYSTROKE_KIND_DTMF,
    }
    return common_pb2.KeystrokeSample(
        kind=kinds[sample.kind],
        profile=profile,
        text=sample.text or "",
        events=[common_pb2.KeyEvent(key=e.key, down_s=e.press, up_s=e.release) for e in sample.events],
    )


def stream(address: str, requests, key: str | None = None) -> list:
    """Runs one Verify stream with the blocking client (as the CLI does); -> decisions.

    grpc.aio's client can replace the server's status with INTERNAL when the
    server ends a stream while writes are in flight (grpc/grpc#36066); the
    blocking client reports the server's status, which is what tests assert on.
    """
    import itertools

    import grpc

    from authsvc.api.v1 import verification_pb2_grpc
    from tests.principals import bearer, key_of_request

    # Peeked, not listed: some tests' request generators wait on the server's replies.
    requests = iter(requests)
    first = next(requests, None)
    if first is not None:
        requests = itertools.chain([first], requests)
    if key is None:
        key = key_of_request(address, first)
    metadata = bearer(key) if key else None
    with grpc.insecure_channel(address) as ch:
        return list(
            verification_pb2_grpc.VerificationServiceStub(ch).Verify(
                iter(requests), timeout=120, metadata=metadata
            )
        )
