"""Observability: the access log (one line per RPC, text or JSON, never a secret), the Prometheus
metrics of RPCs, decisions, step-ups, lockouts, fraud risks and the store, the Grafana dashboard
built on them, and the OpenTelemetry spans of a decision."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import re
import urllib.parse
from pathlib import Path

import grpc
import pytest

from authsvc.api.v1 import (
    assurance_pb2,
    assurance_pb2_grpc,
    common_pb2,
    enrollment_pb2,
    enrollment_pb2_grpc,
)
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.identity.credentials import key_id
from authsvc.identity.roles import TELEPHONY
from authsvc.metrics import Metrics
from authsvc.server.observe import ACCESS_LOGGER, json_formatter
from authsvc.stepup import totp
from tests.principals import KEYS, bearer, key_for, register, register_direct
from tests.wire import call_requests, enroll_request, stream

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
LIST = "/authsvc.v1.EnrollmentService/ListCustomers"
VERIFY = "/authsvc.v1.VerificationService/Verify"
FINANCE = 'sector = "finance"\n[lockout]\nmax_failures = 3\nlockout_s = 600\n'
# The behaviour is the same on both stores; the store's own latency is checked on both below.
SQLITE = pytest.mark.parametrize("service_backend", ["sqlite"], indirect=True)


@pytest.fixture
def access(caplog):
    """The access log's records, as the server writes them (INFO and up)."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    def lines(method: str | None = None) -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == ACCESS_LOGGER and (method is None or getattr(r, "method", None) == method)
        ]

    return lines


def _value(ctx, name: str, **labels) -> float:
    return ctx.metrics.registry.get_sample_value(name, labels) or 0.0


def _speakers(speech):
    names = sorted(speech)
    return speech[names[0]], speech[names[1]]


async def _enroll_voice(channel, tenant, customer, utterances, methods=("voice",)):
    await register(channel, tenant, customer, methods)
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    for i, u in enumerate(utterances):
        await stub.EnrollVoice(enroll_request(tenant, customer, u, f"u{i}"), timeout=60)


async def _finance_customer(svc, speech) -> bytes:
    """bank/alice: voice enrolled and a confirmed TOTP authenticator under the finance preset;
    -> the TOTP secret."""
    channel, _, data_dir, _, clock = svc
    (data_dir / "policies" / "bank.toml").write_text(FINANCE)
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "bank", "alice", target[:4], ("voice", "totp"))
    stub = assurance_pb2_grpc.StepUpServiceStub(channel)
    reply = await stub.EnrollTotp(assurance_pb2.EnrollTotpRequest(tenant="bank", customer_id="alice"))
    b32 = urllib.parse.parse_qs(urllib.parse.urlparse(reply.provisioning_uri).query)["secret"][0]
    secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    confirm = await stub.ConfirmTotp(
        assurance_pb2.ConfirmTotpRequest(
            tenant="bank", customer_id="alice", code=totp.generate(secret, clock.now)
        )
    )
    assert confirm.confirmed
    clock.now += 30  # the next code is a new time step
    return secret


def _answer(code: str) -> V.VerifyRequest:
    return V.VerifyRequest(step_up=V.StepUpAnswer(factor=common_pb2.SECOND_FACTOR_TOTP, code=code))


# --- the access log ---------------------------------------------------------------------------


@SQLITE
async def test_a_successful_rpc_is_one_line_with_principal_tenant_status_latency_and_peer(service, access):
    channel, ctx, _, address = service
    before = _value(ctx, "authsvc_rpc_requests_total", method=LIST, code="OK")
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).ListCustomers(
        enrollment_pb2.ListCustomersRequest(tenant="acme"), timeout=30
    )
    (line,) = access(LIST)
    assert line.levelno == logging.INFO
    assert line.code == "OK" and line.authenticated is True
    assert line.principal == key_id(KEYS[address]["acme"])
    assert TELEPHONY in line.roles and line.tenant == "acme" and line.call_id == ""
    assert line.peer.startswith("ipv4:127.0.0.1:")
    assert 0 < line.latency_ms < 30_000
    text = line.getMessage()
    assert text.startswith(f"rpc method={LIST} code=OK ms=")
    assert f"principal={line.principal} " in text and " tenant=acme call=- peer=ipv4:127.0.0.1:" in text
    assert _value(ctx, "authsvc_rpc_requests_total", method=LIST, code="OK") == before + 1
    assert _value(ctx, "authsvc_rpc_duration_seconds_count", method=LIST) >= 1


@SQLITE
async def test_a_call_without_credential_is_logged_unauthenticated_with_its_status(service, access):
    _, ctx, _, address = service
    async with grpc.aio.insecure_channel(address) as bare:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await enrollment_pb2_grpc.EnrollmentServiceStub(bare).ListCustomers(
                enrollment_pb2.ListCustomersRequest(tenant="acme"), timeout=30
            )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (line,) = access(LIST)
    assert line.code == "UNAUTHENTICATED" and line.authenticated is False
    assert line.principal == "" and line.roles == [] and line.tenant == "acme"
    assert "principal=- roles=- authenticated=no tenant=acme" in line.getMessage()
    assert _value(ctx, "authsvc_rpc_requests_total", method=LIST, code="UNAUTHENTICATED") == 1


@SQLITE
async def test_a_refused_key_is_logged_by_its_id_and_a_refused_role_by_its_principal(service, access):
    _, ctx, _, address = service
    real = KEYS[address]["acme"]
    ident, secret = real[4:20], real[21:]  # ask_<16 hex id>_<secret>
    forged = f"ask_{ident}_{'A' * len(secret)}"  # the right id, a wrong secret
    narrow = await key_for(ctx, "acme", TELEPHONY)  # may not list customers
    async with grpc.aio.insecure_channel(address) as bare:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(bare)
        for key in (forged, narrow):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ListCustomers(
                    enrollment_pb2.ListCustomersRequest(tenant="acme"), metadata=bearer(key), timeout=30
                )
    unauthenticated, denied = access(LIST)
    assert unauthenticated.code == "UNAUTHENTICATED" and not unauthenticated.authenticated
    assert unauthenticated.principal == f"key_{ident}", "the id the caller claimed, never the secret"
    assert denied.code == "PERMISSION_DENIED" and denied.authenticated
    assert denied.principal == key_id(narrow) and denied.roles == [TELEPHONY]
    for line in (unauthenticated, denied):
        assert secret not in line.getMessage() and "A" * 20 not in json_formatter().format(line)


@SQLITE
async def test_a_verify_stream_is_one_line_with_its_call_id_and_its_decisions_are_counted(
    service, speech, access
):
    _, ctx, _, address = service
    target, _ = _speakers(speech)
    decisions = await asyncio.to_thread(stream, address, call_requests("acme", "nobody", target[0]))
    assert decisions[-1].final and decisions[-1].outcome == V.OUTCOME_NOT_ENROLLED
    (line,) = access(VERIFY)
    assert line.code == "OK" and line.call_id == "call-1" and line.tenant == "acme"
    assert " call=call-1 " in line.getMessage()
    assert line.latency_ms > 0
    count = _value(ctx, "authsvc_decisions_total", outcome="not_enrolled", sector="general", final="true")
    assert count == 1, "one final decision"
    assert _value(ctx, "authsvc_rpc_requests_total", method=VERIFY, code="OK") == 1
    assert _value(ctx, "authsvc_verify_first_decision_seconds_count") == 1


@SQLITE
async def test_a_refused_verify_stream_is_logged_with_its_status_and_claimed_tenant(service, speech, access):
    _, _, _, address = service
    target, _ = _speakers(speech)
    acme_key = KEYS[address]["acme"]  # its tenant is acme, the stream names bank
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(stream, address, call_requests("bank", "c1", target[0])[:3], acme_key)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # An abort sends the status before it raises through the interceptor: the blocking client, in
    # its own thread, may hear it a moment before the line is written.
    for _ in range(100):
        if access(VERIFY):
            break
        await asyncio.sleep(0.02)
    (line,) = access(VERIFY)
    assert line.code == "PERMISSION_DENIED" and line.tenant == "bank" and line.call_id == ""
    assert line.principal == key_id(acme_key)


@SQLITE
async def test_json_format_is_one_object_per_record_with_the_access_fields(service, access):
    channel, _, _, _ = service
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).ListCustomers(
        enrollment_pb2.ListCustomersRequest(tenant="acme"), timeout=30
    )
    (line,) = access(LIST)
    text = json_formatter().format(line)
    assert "\n" not in text
    doc = json.loads(text)
    assert doc["level"] == "INFO" and doc["logger"] == ACCESS_LOGGER and doc["event"] == "rpc"
    assert doc["method"] == LIST and doc["code"] == "OK" and doc["tenant"] == "acme"
    assert isinstance(doc["latency_ms"], float) and isinstance(doc["roles"], list)
    assert doc["authenticated"] is True and doc["call_id"] == "" and doc["peer"].startswith("ipv4:")
    assert doc["message"].startswith("rpc method=") and re.match(r"\d{4}-\d\d-\d\dT", doc["timestamp"])


@SQLITE
async def test_no_code_key_or_audio_reaches_any_log_line(svc, speech, caplog):
    """Every logger at DEBUG, both formats, through a call that steps up with a TOTP code, plus
    requests that put the API key and a forged log line where the service logs caller values."""
    channel, _, _, address, clock = svc
    caplog.set_level(logging.DEBUG)
    secret = await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    code = totp.generate(secret, clock.now)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    key = KEYS[address]["bank"]
    decisions = await asyncio.to_thread(
        stream, address, [*call_requests("bank", "alice", target[4]), _answer(wrong), _answer(code)]
    )
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, decisions[-1].reason
    token = decisions[-1].assertion.token
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    for tenant in (key, f"bank\nrpc method={LIST} code=OK principal=forged"):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ListCustomers(
                enrollment_pb2.ListCustomersRequest(tenant=tenant), metadata=bearer(key), timeout=30
            )
    await assurance_pb2_grpc.AssertionServiceStub(channel).ValidateAssertion(
        assurance_pb2.ValidateAssertionRequest(tenant="bank", token=token)
    )

    records = caplog.records
    assert [r for r in records if r.name == ACCESS_LOGGER and getattr(r, "method", "") == VERIFY]
    forged = [r for r in records if r.name == ACCESS_LOGGER and getattr(r, "tenant", "") == "<invalid>"]
    assert len(forged) == 2, "a tenant that is no identifier is not repeated"
    plain, as_json = logging.Formatter("%(name)s %(message)s"), json_formatter()
    secret_half = key[21:]  # ask_<16 hex id>_<secret>
    for r in records:
        doc = json.loads(as_json.format(r))
        doc.pop("timestamp")  # its microseconds are six digits too
        for text in (plain.format(r), json.dumps(doc)):
            assert secret_half not in text and key not in text, text
            assert token.split(".")[2] not in text, "no assertion token"
            for c in (code, wrong):
                assert not re.search(rf"(?<![0-9]){c}(?![0-9])", text), text
        assert not any(isinstance(a, bytes | bytearray) for a in (r.args or ())), "no audio"
        assert len(r.getMessage()) < 2000
    assert "\nrpc method=" not in caplog.text, "no forged line"


# --- metrics ----------------------------------------------------------------------------------


@SQLITE
async def test_a_passed_step_up_its_decisions_looks_and_fraud_judgements_are_counted(svc, speech):
    _, ctx, _, address, clock = svc
    secret = await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    good = totp.generate(secret, clock.now)
    decisions = await asyncio.to_thread(
        stream, address, [*call_requests("bank", "alice", target[4]), _answer(good)]
    )
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED
    assert _value(ctx, "authsvc_stepups_total", factor="totp", result="passed") == 1
    assert _value(ctx, "authsvc_stepups_total", factor="totp", result="failed") == 0
    decided = "authsvc_decisions_total"
    for outcome in ("pending", "step_up_required", "authenticated"):
        assert _value(ctx, decided, outcome=outcome, sector="finance", final="false") >= 1, outcome
    assert _value(ctx, decided, outcome="authenticated", sector="finance", final="true") == 1
    sent = sum(
        _value(ctx, decided, outcome=o, sector="finance", final=f)
        for o in ("pending", "step_up_required", "authenticated")
        for f in ("true", "false")
    )
    assert sent == len(decisions), "every decision the stream carried, rolling ones included"
    for stage in ("receive", "embed", "score", "decide", "total"):
        assert _value(ctx, "authsvc_look_seconds_count", stage=stage) >= 1, stage
    for d in ("replay", "fraudster"):
        judged = [_value(ctx, "authsvc_fraud_risks_total", detector=d, level=lv) for lv in ("low", "high")]
        assert sum(judged) >= 1, d
    assert _value(ctx, "authsvc_lockouts_total", kind="factor_locked") == 0


@SQLITE
async def test_wrong_codes_are_counted_and_the_lockout_they_cause_is_counted_once(svc, speech):
    _, ctx, _, address, _ = svc
    await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    wrong = [_answer("000000"), _answer("111111"), _answer("222222")]  # max_failures = 3
    await asyncio.to_thread(stream, address, [*call_requests("bank", "alice", target[4]), *wrong])
    assert _value(ctx, "authsvc_stepups_total", factor="totp", result="failed") == 2
    assert _value(ctx, "authsvc_stepups_total", factor="totp", result="locked_out") == 1
    assert _value(ctx, "authsvc_lockouts_total", kind="factor_locked") == 1
    assert _value(ctx, "authsvc_stepups_total", factor="totp", result="passed") == 0


@SQLITE
async def test_biometric_and_source_lockouts_are_counted_once_when_they_begin(service):
    _, ctx, _, _ = service
    policy = await ctx.policy_for("acme")
    await register_direct(ctx.store, "acme", "c1")
    for _ in range(policy.lockout.biometric_failures + 2):
        async with ctx.store.transaction() as tx:
            await tx.lock_customer("acme", "c1")
            await ctx.attempts.failed(policy, "acme", "c1", False, tx)
    assert _value(ctx, "authsvc_lockouts_total", kind="biometric_delayed") == 1
    for _ in range(policy.lockout.source_failures_per_hour + 3):
        ctx.throttle.failed(policy, "key_0123@ipv4:192.0.2.1")
    assert _value(ctx, "authsvc_lockouts_total", kind="source") == 1


async def test_store_latency_is_measured_per_operation(service):
    channel, ctx, _, _ = service
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).ListCustomers(
        enrollment_pb2.ListCustomersRequest(tenant="acme"), timeout=30
    )
    for operation in ("begin", "commit", "transaction", "get_credential", "list_customers"):
        assert _value(ctx, "authsvc_store_operation_duration_seconds_count", operation=operation) >= 1
    total = _value(ctx, "authsvc_store_operation_duration_seconds_sum", operation="transaction")
    assert 0 < total < 60


def test_every_metric_the_dashboard_queries_exists_in_the_registry():
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    used = {m for e in exprs for m in re.findall(r"\bauthsvc_[a-z0-9_]+", e)}
    known = Metrics().series_names()
    assert used <= known, f"not in the registry: {sorted(used - known)}"
    families = (
        "authsvc_rpc_requests",
        "authsvc_rpc_duration_seconds",
        "authsvc_verify_first_decision_seconds",
        "authsvc_decisions",
        "authsvc_look_seconds",
        "authsvc_stepups",
        "authsvc_lockouts",
        "authsvc_fraud_risks",
        "authsvc_bridge_connections",
        "authsvc_bridge_active_connections",
        "authsvc_store_operation_duration_seconds",
        "authsvc_embed_batch_size",
    )
    missing = [
        f for f in families if not any(re.fullmatch(rf"{f}(_total|_bucket|_sum|_count)?", u) for u in used)
    ]
    assert not missing, f"the dashboard misses {missing}"


def test_the_registry_check_catches_a_misspelt_metric():
    known = Metrics().series_names()
    assert "authsvc_rpc_requests_total" in known and "authsvc_decisions_total" in known
    assert "authsvc_rpc_request_total" not in known and "authsvc_decisions" not in known


# --- traces -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spans():
    """An SDK tracer provider recording into memory (the global one: OpenTelemetry sets it once)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@SQLITE
async def test_a_voice_look_is_traced_receive_embed_score_decide_without_biometric_data(
    service, speech, spans
):
    channel, _, _, address = service
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "acme", "cust-9", target[:4])
    spans.clear()
    decisions = await asyncio.to_thread(stream, address, call_requests("acme", "cust-9", target[4]))
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED
    done = spans.get_finished_spans()
    looks = [s for s in done if s.name == "authsvc.look"]
    assert looks, [s.name for s in done]
    first = looks[0]
    attrs = dict(first.attributes)
    assert attrs["authsvc.session_id"] == "call-1" and attrs["authsvc.look"] == 1
    assert attrs["authsvc.outcome"] == "authenticated" and attrs["authsvc.sector"] == "general"
    children = sorted(
        (s for s in done if s.parent is not None and s.parent.span_id == first.context.span_id),
        key=lambda s: s.start_time,
    )
    assert [s.name for s in children] == [
        "authsvc.receive",
        "authsvc.embed",
        "authsvc.score",
        "authsvc.decide",
    ]
    assert children[0].start_time == first.start_time and children[-1].end_time == first.end_time
    assert all(a.end_time == b.start_time for a, b in itertools.pairwise(children))
    for s in looks + children:
        values = [str(v) for v in dict(s.attributes or {}).values()]
        assert "cust-9" not in values, "no customer id"
        assert not any(k for k in (s.attributes or {}) if re.search("score|llr|threshold", k))


def test_serve_log_format_json_makes_every_root_handler_write_json():
    from authsvc.cli.serve import use_log_format

    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    kept = [(h, h.formatter) for h in root.handlers]  # pytest's own handlers are root's too
    try:
        use_log_format("json")
        record = logging.LogRecord("authsvc.x", logging.WARNING, __file__, 1, "store %s down", ("pg",), None)
        doc = json.loads(handler.format(record))
        assert doc["message"] == "store pg down" and doc["level"] == "WARNING"
        assert doc["logger"] == "authsvc.x"
    finally:
        root.removeHandler(handler)
        for h, formatter in kept:
            h.setFormatter(formatter)


def test_otel_without_an_exporter_package_refuses_naming_it():
    pytest.importorskip("opentelemetry.sdk")
    try:
        import opentelemetry.exporter.otlp  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("an OTLP exporter is installed: configure_otlp would install a global provider")
    from authsvc.tracing import configure_otlp

    with pytest.raises(RuntimeError, match="opentelemetry-exporter-otlp"):
        configure_otlp()
