"""End to end through the in-process gRPC server: enroll, then stream a call."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, verification_pb2
from authsvc.audio.codecs import Encoding, to_int16
from authsvc.voice.pipeline import encoder_input, track
from tests.principals import TenantKeys, provision, register
from tests.wire import call_requests, enroll_request, start_request, stream

V = verification_pb2


async def _enroll(channel, tenant, customer, utterances):
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await register(channel, tenant, customer)
    replies = [
        await stub.EnrollVoice(enroll_request(tenant, customer, u, f"u{i}"), timeout=60)
        for i, u in enumerate(utterances)
    ]
    return replies


async def _call(address: str, requests) -> list:
    return await asyncio.to_thread(stream, address, requests)


def _speakers(speech):
    names = sorted(speech)
    return speech[names[0]], speech[names[1]]


async def test_enrolled_caller_is_authenticated_over_8khz_mulaw_after_pending(service, speech):
    channel, ctx, _, address = service
    target, _ = _speakers(speech)
    await _enroll(channel, "acme", "cust-1", target[:4])
    decisions = await _call(address, call_requests("acme", "cust-1", target[4]))

    outcomes = [d.outcome for d in decisions]
    first_verdict = next(i for i, o in enumerate(outcomes) if o != V.OUTCOME_PENDING)
    assert first_verdict > 0, "expected PENDING decisions before the first verdict"
    pending = decisions[:first_verdict]
    assert all(d.net_speech_seconds < 3.0 for d in pending)
    assert [d.net_speech_seconds for d in pending] == sorted(d.net_speech_seconds for d in pending)
    verdict = decisions[first_verdict]
    assert verdict.outcome == V.OUTCOME_AUTHENTICATED, verdict.reason
    assert verdict.net_speech_seconds >= 3.0
    (ev,) = verdict.evidence
    assert ev.encoder_id == "ge2e" and ev.encoder_version == ctx.encoder.version
    looks = (await ctx.policy_for("acme")).decision.max_looks
    assert ev.score >= ev.threshold and ev.target_far == pytest.approx(0.01 / looks), "held to its share"
    assert ev.enrolled_samples == 4
    assert decisions[-1].final and decisions[-1].outcome == V.OUTCOME_AUTHENTICATED
    assert [d.sequence for d in decisions] == list(range(1, len(decisions) + 1))


async def test_other_speaker_is_rejected_at_8khz_mulaw(service, speech):
    channel, _, _, address = service
    target, other = _speakers(speech)
    await _enroll(channel, "acme", "cust-1", target[:4])
    decisions = await _call(address, call_requests("acme", "cust-1", other[0]))
    verdicts = [d for d in decisions if d.outcome != V.OUTCOME_PENDING]
    assert verdicts and all(d.outcome == V.OUTCOME_REJECTED for d in verdicts)
    assert verdicts[-1].evidence[0].score < verdicts[-1].evidence[0].threshold


async def test_unknown_customer_is_not_enrolled(service, speech):
    channel, _, _, address = service  # noqa: RUF059
    target, _ = _speakers(speech)
    decisions = await _call(address, call_requests("acme", "nobody", target[0]))
    assert decisions[0].outcome == V.OUTCOME_NOT_ENROLLED
    assert decisions[-1].final and decisions[-1].outcome == V.OUTCOME_NOT_ENROLLED


async def test_alaw_and_16khz_pcm_streams_authenticate_too(service, speech):
    channel, _, _, address = service
    target, _ = _speakers(speech)
    await _enroll(channel, "acme", "cust-1", target[:4])
    # Another recording each time: the same one streamed twice is a replay.
    for utterance, encoding, rate in (
        (target[4], Encoding.ALAW, 8000),
        (target[6], Encoding.PCM16_LE, 16000),
    ):
        decisions = await _call(address, call_requests("acme", "cust-1", utterance, encoding, rate))
        assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, (encoding, decisions[-1].reason)


async def test_tenants_are_isolated(service, speech):
    channel, _, _, address = service
    target, _ = _speakers(speech)
    await _enroll(channel, "acme", "cust-1", target[:2])
    decisions = await _call(address, call_requests("globex", "cust-1", target[4]))
    assert decisions[-1].outcome == V.OUTCOME_NOT_ENROLLED


async def test_reenrolling_the_same_audio_does_not_duplicate_samples(service, speech):
    channel, _, _, address = service  # noqa: RUF059
    target, _ = _speakers(speech)
    first = await _enroll(channel, "acme", "cust-1", target[:2])
    again = await _enroll(channel, "acme", "cust-1", target[:2])
    assert [r.added for r in first] == [True, True]
    assert [r.added for r in again] == [False, False]
    assert again[-1].customer.templates[0].sample_count == 2


async def test_customers_can_be_listed_shown_and_deleted(service, speech):
    channel, _, _, address = service  # noqa: RUF059
    target, _ = _speakers(speech)
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    for cid in ("c-1", "c-2", "c-3"):
        await register(channel, "acme", cid)
        await stub.EnrollVoice(enroll_request("acme", cid, target[0]), timeout=60)
    page1 = await stub.ListCustomers(enrollment_pb2.ListCustomersRequest(tenant="acme", page_size=2))
    page2 = await stub.ListCustomers(
        enrollment_pb2.ListCustomersRequest(tenant="acme", page_size=2, page_token=page1.next_page_token)
    )
    assert [c.customer_id for c in page1.customers] + [c.customer_id for c in page2.customers] == [
        "c-1",
        "c-2",
        "c-3",
    ]
    assert page2.next_page_token == ""
    shown = await stub.GetCustomer(enrollment_pb2.GetCustomerRequest(tenant="acme", customer_id="c-2"))
    assert shown.templates[0].modality == common_pb2.MODALITY_VOICE and shown.templates[0].sample_count == 1
    deleted = await stub.DeleteCustomer(
        enrollment_pb2.DeleteCustomerRequest(tenant="acme", customer_id="c-2")
    )
    assert deleted.templates_deleted == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetCustomer(enrollment_pb2.GetCustomerRequest(tenant="acme", customer_id="c-2"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("service_backend", ["sqlite"])  # it reads the database files
async def test_database_holds_no_plaintext_embedding(service, speech, ge2e):
    channel, ctx, data_dir, address = service  # noqa: RUF059
    target, _ = _speakers(speech)
    await _enroll(channel, "acme", "cust-1", target[:1])

    vec = ge2e.embed_batch([encoder_input(track(to_int16(target[0]), 16000), 16000)])[0]
    raw = b"".join(p.read_bytes() for p in data_dir.glob("authsvc.sqlite3*"))
    stored = (await ctx.vault.load("acme", "cust-1", "voice"))[0].payload
    assert np.allclose(np.frombuffer(stored, "<f4"), vec, atol=1e-5), "test must look for the real embedding"
    nonzero = vec[vec != 0]  # GE2E ends in a ReLU: zeros say nothing about the template
    assert nonzero.size > 64
    for dtype in ("<f4", "<f8"):
        for a, b in itertools.pairwise(nonzero):
            assert np.asarray([a, b], dtype=dtype).tobytes() not in raw


async def test_swapped_ciphertext_fails_to_decrypt(service, speech):
    channel, ctx, _, address = service
    target, other = _speakers(speech)
    await _enroll(channel, "acme", "alice", target[:1])
    await _enroll(channel, "acme", "bob", other[:1])
    # What someone with write access to the database would do, on either backend.
    async with ctx.store.transaction() as tx:
        blobs = dict(await tx._all("SELECT customer_id, blob FROM templates"))
        await tx._count("UPDATE templates SET blob=? WHERE customer_id='alice'", (blobs["bob"],))
    with pytest.raises(grpc.RpcError) as err:
        await _call(address, call_requests("acme", "alice", other[1]))
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "failed authentication" in err.value.details()


@pytest.mark.parametrize(
    ("requests_", "field"),
    [
        ([], "start"),
        ([V.VerifyRequest(audio=V.AudioChunk(data=b"\x00" * 160))], "start"),
        (
            [
                start_request("acme", "c", Encoding.PCM16_LE, 16000),
                V.VerifyRequest(audio=V.AudioChunk(data=b"\x00" * 3)),
            ],
            "audio.data",
        ),
        ([start_request("acme", "c", Encoding.MULAW, 44100)], "start.audio_format.sample_rate_hz"),
        ([start_request("acme", "c", Encoding.MULAW, 8000)], "audio"),
        ([start_request("", "c")], "start.tenant"),
        ([start_request("acme", "../etc/passwd")], "start.customer_id"),
        ([start_request("acme", "c"), start_request("acme", "c")], "start"),
    ],
    ids=[
        "empty-stream",
        "audio-before-start",
        "odd-pcm16",
        "bad-rate",
        "no-audio",
        "no-tenant",
        "bad-id",
        "double-start",
    ],
)
async def test_malformed_streams_get_invalid_argument_naming_the_field(service, requests_, field):
    channel, _, _, address = service  # noqa: RUF059
    with pytest.raises(grpc.RpcError) as err:
        await _call(address, requests_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":"), err.value.details()


async def test_silent_enrollment_sample_is_refused(service):
    channel, _, _, address = service  # noqa: RUF059
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await register(channel, "acme", "c")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.EnrollVoice(enroll_request("acme", "c", np.zeros(16000 * 3, np.float32)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no speech" in err.value.details()


async def test_health_needs_no_credential_and_reflection_is_served_only_when_enabled(service):
    _, ctx, _, address = service
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from authsvc.server.app import AuthServer

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async def services(channel) -> set[str]:
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        return {
            s.name async for r in refl.ServerReflectionInfo(ask()) for s in r.list_services_response.service
        }

    async with grpc.aio.insecure_channel(address) as anonymous:
        health = health_pb2_grpc.HealthStub(anonymous)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="authsvc.v1.VerificationService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await services(anonymous)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, "reflection is off by default"
    with_reflection = AuthServer(ctx, "127.0.0.1:0", reflection_on=True)
    await with_reflection.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{with_reflection.port}") as anonymous:
            names = await services(anonymous)
        assert {"authsvc.v1.EnrollmentService", "authsvc.v1.TenantService", "grpc.health.v1.Health"} <= names
    finally:
        await with_reflection.server.stop(0)


async def test_rolling_decisions_embed_each_second_of_speech_about_once(service, speech):
    """Re-decisions embed only new speech, so a long call costs in proportion to its length."""
    channel, ctx, _, address = service
    target, _ = _speakers(speech)
    await _enroll(channel, "acme", "cust-1", target[:2])
    embedded = []
    real_embed = ctx.runner.embed

    async def counting_embed(wav, *args, **kwargs):
        embedded.append(wav.size / ctx.encoder.sample_rate)
        return await real_embed(wav, *args, **kwargs)

    ctx.runner.embed = counting_embed
    # Several utterances the customer did not enroll with (enrolled ones would be a replay).
    long_call = np.concatenate(target[2:])
    decisions = await _call(address, call_requests("acme", "cust-1", long_call))
    looks = [d for d in decisions if d.outcome != V.OUTCOME_PENDING and not d.final]
    max_looks = (await ctx.policy_for("acme")).decision.max_looks
    assert len(looks) == max_looks, "re-decided as speech arrives, up to the policy's looks"
    assert all(d.outcome == V.OUTCOME_AUTHENTICATED for d in looks), [d.reason for d in looks]
    assert decisions[-1].final and decisions[-1].outcome == V.OUTCOME_AUTHENTICATED
    assert len(embedded) == max_looks, "the final decision after the last look embeds nothing"
    assert decisions[-1].net_speech_seconds > looks[-1].net_speech_seconds + 3, "the call went on"
    assert sum(embedded) < 1.6 * looks[-1].net_speech_seconds, (sum(embedded), looks[-1].net_speech_seconds)


async def test_templates_of_another_encoder_are_never_scored(service, speech):
    _, ctx, _, address = service
    target, _ = _speakers(speech)
    enc = ctx.encoder
    vec = enc.embed_batch([target[0]])[0]
    # A template made by another version of the encoder (e.g. before a model upgrade).
    await ctx.vault.put(
        "acme", "old", "voice", enc.encoder_id, "older-weights", "d1", vec.astype("<f4").tobytes()
    )
    with pytest.raises(grpc.RpcError) as err:
        await _call(address, call_requests("acme", "old", target[1]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "older-weights" in err.value.details() and "meaningless" in err.value.details()


async def test_tls_is_served_when_configured(tmp_path, ge2e, speech):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from authsvc.context import ServiceConfig, build_context
    from authsvc.server.app import AuthServer, TlsFiles

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = await build_context(ServiceConfig(data_dir=tmp_path / "data"), encoder=ge2e)
    server = AuthServer(ctx, "127.0.0.1:0", TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem"))
    await server.start()
    address = f"127.0.0.1:{server.port}"
    await provision(ctx, address, ("acme",))
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        options = [("grpc.ssl_target_name_override", "localhost")]
        async with grpc.aio.secure_channel(
            address, creds, options=options, interceptors=[TenantKeys(address)]
        ) as secure:
            target, _ = _speakers(speech)
            replies = await _enroll(secure, "acme", "tls-1", target[:1])
            assert replies[0].added
        async with grpc.aio.insecure_channel(address, interceptors=[TenantKeys(address)]) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _enroll(plain, "acme", "tls-2", target[:1])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace_s=0.5)


async def test_an_overloaded_embedding_core_defers_a_re_decision_without_ending_the_call(service, speech):
    channel, ctx, _, address = service
    target, _ = _speakers(speech)
    await _enroll(channel, "acme", "cust-1", target[:3])
    from authsvc.errors import Overloaded

    calls = []
    real_embed = ctx.runner.embed

    async def flaky_embed(wav, *args, **kwargs):
        calls.append(wav.size)
        if len(calls) == 2:  # the first re-decision finds the queue full
            raise Overloaded("embedding queue full", retry_after_s=0.1)
        return await real_embed(wav, *args, **kwargs)

    ctx.runner.embed = flaky_embed
    decisions = await _call(address, call_requests("acme", "cust-1", np.concatenate(target[3:])))
    verdicts = [d for d in decisions if d.outcome != V.OUTCOME_PENDING]
    assert len(calls) >= 4 and len(verdicts) >= 3, "decisions keep flowing after the refusal"
    assert decisions[-1].final and decisions[-1].outcome == V.OUTCOME_AUTHENTICATED
    assert calls[2] > calls[1], "the refused segment is retried with the speech that followed, not lost"
