"""The identity boundary's behaviour: evidence by role, locked sessions, provisioned tenants and
fail-closed policies, mutual-TLS identities, revocation and expiry, the audit chain, refusal
summaries and the credential API's own limits."""

from __future__ import annotations

import asyncio
import datetime
import logging

import grpc
import pytest

from authsvc.api.v1 import enrollment_pb2, identity_pb2
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.identity import roles
from tests.principals import key_for, register
from tests.test_identity import call, invoke, reason_of, refusals
from tests.wire import call_requests, enroll_request, stream

P = "/authsvc.v1."


def _speakers(speech):
    names = sorted(speech)
    return speech[names[0]], speech[names[1]]


async def _enrolled(channel, speech, tenant="shop", customer="carol"):
    from authsvc.api.v1 import enrollment_pb2_grpc

    await register(channel, tenant, customer)
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    target, other = _speakers(speech)
    for u in target[:4]:
        await stub.EnrollVoice(enroll_request(tenant, customer, u), timeout=60)
    return target, other


async def test_a_telephony_principal_gets_outcomes_never_scores_llrs_or_thresholds(service, speech):
    channel, ctx, _, address = service
    target, other = await _enrolled(channel, speech)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY)
    scored = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    # Two recordings of each speaker: the same one played twice would be a replay.
    for utterance, again in ((target[4], target[5]), (other[0], other[1])):
        # Each call on its own (another call's failures would lock carol out in between).
        await ctx.factors.unlock("shop", "carol", "test")
        plain = await asyncio.to_thread(stream, address, call_requests("shop", "carol", utterance), telephony)
        await ctx.factors.unlock("shop", "carol", "test")
        full = await asyncio.to_thread(stream, address, call_requests("shop", "carol", again), scored)
        assert plain[-1].outcome == full[-1].outcome
        for d in plain:
            assert not d.evidence and d.fused_llr == 0 and d.fused_threshold_llr == 0, d
            assert "LLR" not in d.reason and "score" not in d.reason, d.reason
        assert plain[-1].net_speech_seconds > 0 and plain[-1].required_net_speech_seconds > 0
        assert full[-1].evidence and full[-1].evidence[0].threshold != 0, "the evidence grant sees scores"
    assert plain[-1].outcome == V.OUTCOME_REJECTED
    # Decisions and assertions are audited with the principal that asked, never "service".
    events = await ctx.auditor.list("shop", 1000, customer_id="carol")
    actors = {e.actor for e in events if e.action in ("decision", "assertion.issue")}
    assert actors == {f"key_{telephony.split('_')[1]}", f"key_{scored.split('_')[1]}"}, actors


async def test_a_locked_out_session_computes_no_score(service, speech, monkeypatch):
    channel, ctx, _, address = service
    target, _ = await _enrolled(channel, speech)
    policy = await ctx.policy_for("shop")
    for _ in range(policy.lockout.biometric_failures):
        async with ctx.store.transaction() as tx:
            await tx.lock_customer("shop", "carol")
            await ctx.attempts.failed(policy, "shop", "carol", False, tx)
    embedded = []
    real = ctx.runner.embed

    async def counting(*args, **kwargs):
        embedded.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(ctx.runner, "embed", counting)
    scored = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "carol", target[4]), scored)
    assert {d.outcome for d in decisions} == {V.OUTCOME_REJECTED}
    assert all(not d.evidence and d.retry_after_seconds > 0 for d in decisions)
    assert not embedded, "a locked-out call is never embedded, so it cannot probe the matcher"


async def test_an_unknown_tenant_is_refused(service):
    _, ctx, _, address = service
    admin = await key_for(ctx, "", roles.PLATFORM_ADMIN)
    request = identity_pb2.CreateApiKeyRequest(tenant="nosuch", roles=[roles.TELEPHONY])
    err = await asyncio.to_thread(call, address, f"{P}CredentialService/CreateApiKey", request, admin)
    assert err is not None and err.code() == grpc.StatusCode.NOT_FOUND
    # A tenant nobody provisioned cannot be reached: no principal of it exists, and no other
    # tenant's principal is granted it.
    key = await key_for(ctx, "acme", roles.ENROLLMENT)
    get = enrollment_pb2.GetCustomerRequest(tenant="nosuch", customer_id="x")
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", get, key)
    assert err is not None and reason_of(err) == "TENANT_NOT_GRANTED"
    with pytest.raises(Exception, match="not provisioned"):
        await ctx.policy_for("nosuch")


async def test_a_finance_tenant_whose_policy_file_goes_missing_fails_closed(service, speech, caplog):
    _, ctx, data_dir, address = service
    await ctx.tenants.create("fin", "finance", "test")
    key = await key_for(ctx, "fin", roles.TELEPHONY, roles.ENROLLMENT)
    policies = data_dir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "fin.toml").write_text('sector = "finance"\n')
    register_request = enrollment_pb2.RegisterCustomerRequest(
        tenant="fin", customer_id="x", consent_text_version="v1"
    )
    assert (
        await asyncio.to_thread(
            call, address, f"{P}EnrollmentService/RegisterCustomer", register_request, key
        )
        is None
    )
    for broken in (
        None,
        'sector = "general"\n',
        "sector = [\n",
        'sector = "finance"\n[voice]\ntarget_far = 0.05\n',
    ):
        if broken is None:
            (policies / "fin.toml").unlink()
        else:
            (policies / "fin.toml").write_text(broken)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="authsvc.context"):
            err = await asyncio.to_thread(
                call,
                address,
                f"{P}VerificationService/Verify",
                call_requests("fin", "x", _speakers(speech)[0][0])[0],
                key,
            )
        assert err is not None and err.code() == grpc.StatusCode.FAILED_PRECONDITION, broken
        assert reason_of(err) == "POLICY_UNUSABLE"
        assert str(data_dir) not in err.details(), "the caller is not told where the service keeps files"
        assert any(r.levelno == logging.ERROR and "fails closed" in r.getMessage() for r in caplog.records)
        err = await asyncio.to_thread(
            call, address, f"{P}EnrollmentService/RegisterCustomer", register_request, key
        )
        assert err is not None and reason_of(err) == "POLICY_UNUSABLE", "enrollment fails closed too"
    assert "POLICY_UNUSABLE" in {e.outcome for e in await refusals(ctx, "fin")}
    # A general tenant without a file gets the general preset, as before.
    assert (await ctx.policy_for("shop")).sector == "general"


async def test_a_revoked_or_expired_key_is_refused_from_the_next_request_on(service, monkeypatch):
    _, ctx, _, address = service
    admin = await key_for(ctx, "acme", roles.TENANT_ADMIN)
    created = await asyncio.to_thread(
        invoke,
        address,
        f"{P}CredentialService/CreateApiKey",
        identity_pb2.CreateApiKeyRequest(tenant="acme", roles=[roles.ENROLLMENT], description="ivr"),
        admin,
    )
    key, cid = created.api_key, created.credential.id
    get = enrollment_pb2.ListCustomersRequest(tenant="acme")
    assert await asyncio.to_thread(call, address, f"{P}EnrollmentService/ListCustomers", get, admin) is None
    probe = enrollment_pb2.GetCustomerRequest(tenant="acme", customer_id="nobody")
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", probe, key)
    assert err.code() == grpc.StatusCode.NOT_FOUND, "the key works: the customer does not exist"
    listed = await asyncio.to_thread(
        invoke,
        address,
        f"{P}CredentialService/ListCredentials",
        identity_pb2.ListCredentialsRequest(tenant="acme"),
        admin,
    )
    mine = next(c for c in listed.credentials if c.id == cid)
    assert mine.last_used_unix_ms > 0 and mine.description == "ivr" and roles.ENROLLMENT in mine.roles
    revoke = identity_pb2.RevokeCredentialRequest(tenant="acme", credential_id=cid)
    assert (
        await asyncio.to_thread(invoke, address, f"{P}CredentialService/RevokeCredential", revoke, admin)
    ).revoked_unix_ms
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", probe, key)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and reason_of(err) == "CREDENTIAL_REVOKED"

    expiring = await key_for(
        ctx, "acme", roles.ENROLLMENT, expires_ms=int((__import__("time").time() + 3600) * 1000)
    )
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", probe, expiring)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    import authsvc.identity.credentials as credentials

    later = credentials._now_ms() + 3_600_001
    monkeypatch.setattr(credentials, "_now_ms", lambda: later)
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", probe, expiring)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and reason_of(err) == "CREDENTIAL_EXPIRED"


async def test_a_tenant_admin_manages_only_its_own_tenants_credentials_and_never_platform_ones(service):
    _, ctx, _, address = service
    admin = await key_for(ctx, "acme", roles.TENANT_ADMIN)
    create = f"{P}CredentialService/CreateApiKey"
    for request, code in (
        (
            identity_pb2.CreateApiKeyRequest(tenant="acme", roles=[roles.PLATFORM_ADMIN]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            identity_pb2.CreateApiKeyRequest(tenant="", roles=[roles.PLATFORM_ADMIN]),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            identity_pb2.CreateApiKeyRequest(tenant="globex", roles=[roles.TELEPHONY]),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (identity_pb2.CreateApiKeyRequest(tenant="acme", roles=["root"]), grpc.StatusCode.INVALID_ARGUMENT),
        (identity_pb2.CreateApiKeyRequest(tenant="acme", roles=[]), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        err = await asyncio.to_thread(call, address, create, request, admin)
        assert err is not None and err.code() == code, (request, err)
    other = await key_for(ctx, "globex", roles.TENANT_ADMIN)
    theirs = (await ctx.credentials.list("globex"))[0].id
    revoke = identity_pb2.RevokeCredentialRequest(tenant="acme", credential_id=theirs)
    err = await asyncio.to_thread(call, address, f"{P}CredentialService/RevokeCredential", revoke, admin)
    assert err.code() == grpc.StatusCode.NOT_FOUND, "another tenant's credential is not even disclosed"
    listed = await asyncio.to_thread(
        invoke,
        address,
        f"{P}CredentialService/ListCredentials",
        identity_pb2.ListCredentialsRequest(tenant="acme"),
        admin,
    )
    assert listed.credentials and all(c.tenant == "acme" for c in listed.credentials)
    assert other not in str(listed) and "secret" not in str(listed)
    async with ctx.store.transaction() as tx:
        stored = await tx.list_credentials("acme")
    assert all(
        len(r.secret_hash) == 64 and r.secret_hash not in str(listed) for r in stored if r.kind == "api_key"
    )


async def test_repeated_refusals_from_one_source_are_summarised_not_one_row_each(service):
    _, ctx, _, address = service
    get = enrollment_pb2.GetCustomerRequest(tenant="acme", customer_id="x")
    for _ in range(25):
        err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", get, None)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    rows = await refusals(ctx, "")  # anonymous: the platform's trail
    assert len(rows) == 2, rows
    first, summary = sorted(rows, key=lambda e: e.id)
    assert first.action == "request.refused" and summary.action == "request.refused.repeated"
    assert summary.details["count"] == 24 and summary.outcome == "CREDENTIAL_MISSING"


async def test_audit_verify_detects_a_row_deleted_edited_or_cut_off_in_the_database(service):
    _, ctx, _, address = service
    for i in range(6):
        await ctx.auditor.record("acme", "test.event", f"c-{i}", "ok", actor="test", n=i)
    admin = await key_for(ctx, "acme", roles.TENANT_ADMIN)
    verify = f"{P}AuditService/VerifyAuditChain"
    request = __import__("authsvc.api.v1.assurance_pb2", fromlist=["x"]).VerifyAuditChainRequest(
        tenant="acme"
    )
    ok = await asyncio.to_thread(invoke, address, verify, request, admin)
    assert ok.intact and ok.rows_checked >= 6 and len(ok.head_hash) == 64
    async with ctx.store.transaction() as tx:
        ids = [e.id for e in await tx.list_audit("acme", 1000) if e.action == "test.event"]
    middle = sorted(ids)[2]

    async def tamper(sql: str, *args) -> None:
        async with ctx.store.transaction() as tx:
            await tx._count(sql, args)  # straight to the database, as an intruder with its password

    await tamper("UPDATE audit SET outcome='denied' WHERE id=?", middle)
    bad = await asyncio.to_thread(invoke, address, verify, request, admin)
    assert not bad.intact and bad.first_bad_id == middle and "edited" in bad.problem
    await tamper("UPDATE audit SET outcome='ok' WHERE id=?", middle)
    assert (await ctx.auditor.verify("acme")).intact, "restored, the chain holds again"
    await tamper("DELETE FROM audit WHERE id=?", middle)
    bad = await ctx.auditor.verify("acme")
    assert not bad.intact and bad.first_bad_id > middle and "missing" in bad.problem
    async with ctx.store.transaction() as tx:
        await tx._count("DELETE FROM audit WHERE tenant='acme' AND id<=?", (middle,))
    assert not (await ctx.auditor.verify("acme")).intact, "removing the head of the chain is seen too"


async def _ids(ctx) -> list[int]:
    async with ctx.store.transaction() as tx:
        return [e.id for e in await tx.list_audit("acme", 1000)]


async def test_cutting_off_the_newest_audit_rows_is_detected(service):
    _, ctx, _, _ = service
    for i in range(3):
        await ctx.auditor.record("acme", "test.event", "c", "ok", actor="test", n=i)
    newest = max(await _ids(ctx))
    async with ctx.store.transaction() as tx:
        await tx._count("DELETE FROM audit WHERE id=?", (newest,))
    result = await ctx.auditor.verify("acme")
    assert not result.intact and "removed" in result.problem


def _pki(tmp_path):
    """A CA, a server certificate for localhost and client certificates with SAN URIs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def pem_key(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(name: str, sans: list) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    server = issue("localhost", [x509.DNSName("localhost")])
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "server.pem").write_bytes(server[0])
    (tmp_path / "server.key").write_bytes(server[1])
    clients = {
        "acme-ivr": issue("acme ivr", [x509.UniformResourceIdentifier("spiffe://acme.example/ivr")]),
        "unmapped": issue("stranger", [x509.UniformResourceIdentifier("spiffe://elsewhere/x")]),
    }
    return ca_pem, clients


async def test_an_mtls_identity_mapped_to_tenant_a_cannot_touch_tenant_b(tmp_path, ge2e):
    from authsvc.context import ServiceConfig, build_context
    from authsvc.server.app import AuthServer, TlsFiles

    ca_pem, clients = _pki(tmp_path)
    ctx = await build_context(ServiceConfig(data_dir=tmp_path / "data"), encoder=ge2e)
    server = AuthServer(
        ctx, "127.0.0.1:0", TlsFiles(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    )
    await server.start()
    address = f"127.0.0.1:{server.port}"
    try:
        for t in ("acme", "globex"):
            await ctx.tenants.create(t, "general", "test")
        await ctx.credentials.map_certificate(
            "acme", "spiffe://acme.example/ivr", [roles.ENROLLMENT], "ivr", 0, "test"
        )

        def get(client: str, tenant: str):
            cert, key = clients[client]
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca_pem, private_key=key, certificate_chain=cert
            )
            options = [("grpc.ssl_target_name_override", "localhost")]
            from authsvc.api.v1 import enrollment_pb2_grpc

            with grpc.secure_channel(address, creds, options=options) as ch:
                try:
                    enrollment_pb2_grpc.EnrollmentServiceStub(ch).GetCustomer(
                        enrollment_pb2.GetCustomerRequest(tenant=tenant, customer_id="nobody"), timeout=30
                    )
                except grpc.RpcError as err:
                    return err
            return None

        mine = await asyncio.to_thread(get, "acme-ivr", "acme")
        assert mine.code() == grpc.StatusCode.NOT_FOUND, "the mapped identity acts in its tenant"
        theirs = await asyncio.to_thread(get, "acme-ivr", "globex")
        assert (
            theirs.code() == grpc.StatusCode.PERMISSION_DENIED and reason_of(theirs) == "TENANT_NOT_GRANTED"
        )
        stranger = await asyncio.to_thread(get, "unmapped", "acme")
        assert (
            stranger.code() == grpc.StatusCode.UNAUTHENTICATED
            and reason_of(stranger) == "CERTIFICATE_NOT_MAPPED"
        )
        refused = {e.outcome for t in ("", "acme", "globex") for e in await refusals(ctx, t)}
        assert {"TENANT_NOT_GRANTED", "CERTIFICATE_NOT_MAPPED"} <= refused
        # A certificate of the CA is no longer a super-user: revoking its mapping locks it out.
        (cred,) = [c for c in await ctx.credentials.list("acme") if c.kind == "certificate"]
        await ctx.credentials.revoke("acme", cred.id, "test")
        assert (await asyncio.to_thread(get, "acme-ivr", "acme")).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(grace_s=0.5)


async def test_a_tenant_recorded_general_is_raised_for_good_to_its_policy_files_sector(tmp_path, ge2e):
    from authsvc.context import ServiceConfig, build_context
    from authsvc.errors import ConfigError

    config = ServiceConfig(data_dir=tmp_path / "data", warm_up=False)
    ctx = await build_context(config, encoder=ge2e)
    await ctx.tenants.create("old-bank", "general", "migration")  # as migration 0003 records them
    await ctx.close()
    policies = tmp_path / "data" / "policies"
    policies.mkdir()
    (policies / "old-bank.toml").write_text('sector = "finance"\n')
    ctx = await build_context(config, encoder=ge2e)
    try:
        assert (await ctx.tenants.get("old-bank")).sector == "finance"
        (policies / "old-bank.toml").unlink()
        with pytest.raises(ConfigError, match="may not lower the sector"):
            await ctx.policy_for("old-bank")
        assert any(e.action == "tenant.sector" for e in await ctx.auditor.list("old-bank", 10))
    finally:
        await ctx.close()


async def test_a_failed_audit_write_fails_the_change_it_belongs_to(service, monkeypatch):
    _, ctx, _, address = service
    from authsvc.store.base import StoreUnavailable

    real = ctx.auditor.record

    async def failing(tenant, action, *args, **kwargs):
        if action == "register":
            raise StoreUnavailable("the audit table is full")
        return await real(tenant, action, *args, **kwargs)

    monkeypatch.setattr(ctx.auditor, "record", failing)
    key = await key_for(ctx, "acme", roles.ENROLLMENT)
    request = enrollment_pb2.RegisterCustomerRequest(
        tenant="acme", customer_id="newcomer", consent_text_version="v1"
    )
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/RegisterCustomer", request, key)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    async with ctx.store.transaction() as tx:
        assert await tx.get_customer("acme", "newcomer") is None, "no change without its audit row"
