"""Erasure that erases: after DeleteCustomer nothing of the customer's is left in the SQLite files.

The deleted customer's template ciphertexts, factor secrets and labels are
read from the database before the deletion, then looked for, byte for byte,
in the raw database, -wal and -shm files after it. Another customer's
ciphertexts, still stored, are found by the same scan: it does look.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc, enrollment_pb2, enrollment_pb2_grpc
from tests.principals import register
from tests.wire import enroll_request

# These tests read SQLite's files; PostgreSQL's side of erasure is in the README.
ON_SQLITE = pytest.mark.parametrize("service_backend", ["sqlite"])

LABEL = "alice-2026-11-30-branch-recording.wav"


def _sealed_state(db_path: Path, customer: str) -> list[bytes]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [
            bytes(b)
            for (b,) in db.execute("SELECT blob FROM customer_state WHERE customer_id=?", (customer,))
        ]
    finally:
        db.close()


def _sealed(db_path: Path, customer: str) -> list[bytes]:
    """Every ciphertext and label of the customer, read straight from the file."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        blobs = [
            bytes(b) for (b,) in db.execute("SELECT blob FROM templates WHERE customer_id=?", (customer,))
        ]
        blobs += [
            bytes(b)
            for (b,) in db.execute("SELECT blob FROM customer_state WHERE customer_id=?", (customer,))
        ]
        labels = [
            lab.encode()
            for (lab,) in db.execute("SELECT label FROM templates WHERE customer_id=?", (customer,))
            if lab
        ]
    finally:
        db.close()
    return blobs + labels


def _raw(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))


def _found(needle: bytes, haystack: bytes) -> bool:
    # Any 24-byte window: a ciphertext split across pages or partly overwritten still counts.
    step = 24
    return any(needle[i : i + step] in haystack for i in range(0, max(1, len(needle) - step + 1), 8))


@ON_SQLITE
async def test_deleted_customer_leaves_no_ciphertext_secret_or_label_in_db_wal_or_shm(service, speech):
    channel, _, data_dir, _ = service
    db_path = data_dir / "authsvc.sqlite3"
    names = sorted(speech)
    enroll = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await register(channel, "acme", "alice")
    await register(channel, "acme", "bob")
    for i, u in enumerate(speech[names[0]][:3]):
        await enroll.EnrollVoice(enroll_request("acme", "alice", u, f"{LABEL}-{i}"), timeout=60)
    for u in speech[names[1]][:2]:
        await enroll.EnrollVoice(enroll_request("acme", "bob", u, "bob.wav"), timeout=60)
    factors = assurance_pb2_grpc.StepUpServiceStub(channel)
    await factors.EnrollTotp(assurance_pb2.EnrollTotpRequest(tenant="acme", customer_id="alice"))
    await factors.SetCodeDestination(
        assurance_pb2.SetCodeDestinationRequest(
            tenant="acme", customer_id="alice", destination="+447700900123"
        )
    )
    alice, bob = _sealed(db_path, "alice"), _sealed(db_path, "bob")
    # Voice templates and their replay fingerprints; TOTP secret, destination, enrollment marker; labels.
    assert len(alice) == 3 + 3 + 3 + 3
    before = _raw(db_path)
    assert all(_found(s, before) for s in alice + bob), "the scan must find stored rows"
    assert LABEL.encode() not in before, "labels are stored sealed, never in clear"

    reply = await enroll.DeleteCustomer(
        enrollment_pb2.DeleteCustomerRequest(tenant="acme", customer_id="alice")
    )
    assert (reply.templates_deleted, reply.secrets_deleted) == (3, 2)

    after = _raw(db_path)
    left = [s[:12].hex() for s in alice if _found(s, after)]
    assert not left, f"deleted ciphertexts or labels still in the files: {left}"
    assert all(_found(s, after) for s in bob), "the other customer's rows must survive"
    wal = Path(f"{db_path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL is checkpointed and truncated"


@ON_SQLITE
async def test_opting_out_leaves_no_template_or_label_in_the_files(service, speech):
    channel, _, data_dir, _ = service
    db_path = data_dir / "authsvc.sqlite3"
    enroll = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await register(channel, "acme", "olga")
    for i, u in enumerate(speech[sorted(speech)[0]][:2]):
        await enroll.EnrollVoice(enroll_request("acme", "olga", u, f"{LABEL}-olga-{i}"), timeout=60)
    # Its templates and labels (the enrollment marker in customer_state stays: it is no template).
    marker = _sealed_state(db_path, "olga")
    sealed = [s for s in _sealed(db_path, "olga") if s not in marker]
    # Two voice templates, their two fingerprints, two labels.
    assert len(sealed) == 6 and all(_found(s, _raw(db_path)) for s in sealed)
    await enroll.RegisterCustomer(
        enrollment_pb2.RegisterCustomerRequest(
            tenant="acme",
            customer_id="olga",
            opt_out_biometrics=True,
            consent_text_version="c-2",
            confirm_template_removal=True,
        )
    )
    after = _raw(db_path)
    assert not [s[:12].hex() for s in sealed if _found(s, after)], "an opt-out erases like a deletion"


async def test_an_erasure_blocked_by_another_reader_is_scrubbed_once_the_reader_is_gone(
    tmp_path, monkeypatch
):
    from authsvc import crypto
    from authsvc.store import sqlite as sqlite_store
    from authsvc.templates import TemplateVault

    monkeypatch.setattr(sqlite_store, "SCRUB_RETRY_S", 0.0)
    db_path = tmp_path / "authsvc.sqlite3"
    store = await sqlite_store.SQLiteStore.open(db_path)
    await store.migrate()
    vault = TemplateVault(store, crypto.MasterKey(b"k" * 32))
    try:
        await vault.put("acme", "alice", "voice", "ge2e", "v1", "d1", b"x" * 1024, LABEL)
        await vault.put("acme", "bob", "voice", "ge2e", "v1", "d1", b"y" * 1024)
        alice = _sealed(db_path, "alice")
        reader = sqlite3.connect(db_path)  # another process's read snapshot pins the WAL
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM templates").fetchone()
        async with store.transaction() as tx:
            await tx.delete_customer("acme", "alice")
        assert any(_found(s, _raw(db_path)) for s in alice), "the reader blocks the checkpoint"
        reader.close()
        async with store.transaction() as tx:  # the next commit retries the scrub
            await tx.append_audit(
                __import__("authsvc.store", fromlist=["AuditEvent"]).AuditEvent(
                    "acme", 1, "op", "x", "bob", "ok"
                )
            )
        assert not [s[:12].hex() for s in alice if _found(s, _raw(db_path))]
    finally:
        await store.close()
