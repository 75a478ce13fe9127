"""Schema migrations: a store written by authsvc 0.1 upgrades in place and every row still opens."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from authsvc import crypto
from authsvc.audit import Auditor
from authsvc.context import ServiceConfig, open_context_store
from authsvc.factors import Factors
from authsvc.stepup.lockout import LockoutState
from authsvc.stepup.senders import load_sender
from authsvc.store import migrations
from authsvc.templates import TemplateVault
from authsvc.trust import AssertionAuthority

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = FIXTURES / "authsvc-0.1.sqlite3"  # made by tests/fixtures' manifest "made_by"
MANIFEST = json.loads((FIXTURES / "authsvc-0.1.json").read_text())


@pytest.fixture
async def upgraded(tmp_path: Path, monkeypatch):
    """The 0.1 file in a data directory, opened as `authsvc serve` opens it (migrations on start)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(LEGACY, data_dir / "authsvc.sqlite3")
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, MANIFEST["master_key_b64"])
    store, master = await open_context_store(ServiceConfig(data_dir=data_dir))
    yield store, master, data_dir
    await store.close()


def test_the_fixture_is_a_file_of_the_old_schema():
    db = sqlite3.connect(f"file:{LEGACY}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "schema_migrations" not in tables and "meta" in tables
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        cols = [r[1] for r in db.execute("PRAGMA table_info(service_secrets)")]
        assert cols == ["name", "blob"]
    finally:
        db.close()


async def test_every_row_of_a_0_1_store_survives_the_upgrade_and_still_decrypts(upgraded):
    store, master, _ = upgraded
    assert await store.schema_version() == migrations.latest("sqlite")
    vault = TemplateVault(store, master)
    auditor = Auditor.with_master(store, master)
    factors = Factors(vault, load_sender("log"), auditor)
    for key, expected in MANIFEST["customers"].items():
        tenant, cid = key.split("/")
        async with store.transaction() as tx:
            record = await tx.get_customer(tenant, cid)
            names = await tx.state_names(tenant, cid)
        assert record is not None and record.registered and record.consent_version == "consent-2026-11"
        assert set(record.methods) == {"voice", "typing", "totp"}
        voice = await vault.load(tenant, cid, "voice")
        assert [t.payload for t in voice] == [
            hashlib.sha256(f"{tenant}/{cid}/{i}".encode()).digest() * 32 for i in range(expected["voice"])
        ]
        assert [t.label for t in voice] == [f"call-{i}.wav" for i in range(expected["voice"])]
        (profile,) = await vault.load(tenant, cid, "keystroke_fixed/pin")
        assert profile.payload.decode() == expected["keystroke"]
        assert sorted(names) == expected["state"]
        doc = json.loads(await vault.load_state(tenant, cid, "factor.totp"))
        secret = base64.b32encode(base64.b64decode(doc["secret"])).decode().rstrip("=")
        assert secret == expected["totp_uri_secret"]
        destination = await vault.load_state(tenant, cid, "factor.code_destination")
        assert destination.decode() == expected["destination"]
        assert LockoutState.from_bytes(await vault.load_state(tenant, cid, "lockout")).failures == 1
        assert await factors.active(tenant, cid) == ("one_time_code",)  # TOTP was never confirmed
    for tenant, count in MANIFEST["audit"].items():
        async with store.transaction() as tx:
            assert len(await tx.list_audit(tenant, 1000)) == count
    # The sealed key ring of 0.1 opens and, kept to verify what it signed, signs nothing new.
    trust = await AssertionAuthority.open(store, master, auditor)
    assert trust.legacy is not None and MANIFEST["assertion_kid"] in trust.legacy.kids()
    assert MANIFEST["assertion_kid"] not in (await trust.ring_of(tenant)).kids()


async def test_an_upgraded_file_is_refused_by_a_build_that_predates_it(upgraded):
    _, _, data_dir = upgraded
    db = sqlite3.connect(data_dir / "authsvc.sqlite3")
    try:
        # authsvc 0.1 refuses a file whose meta.schema_version is above 1.
        (value,) = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert int(value) == migrations.latest("sqlite") > 1
        applied = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert applied == list(range(1, migrations.latest("sqlite") + 1))
    finally:
        db.close()


async def test_serving_without_migrating_refuses_an_old_schema(tmp_path: Path, monkeypatch):
    from authsvc.errors import ConfigError

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(LEGACY, data_dir / "authsvc.sqlite3")
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, MANIFEST["master_key_b64"])
    with pytest.raises(ConfigError, match="authsvc db migrate"):
        await open_context_store(ServiceConfig(data_dir=data_dir, migrate=False))


def test_both_backends_have_the_same_numbered_steps():
    sqlite, postgres = migrations.load("sqlite"), migrations.load("postgresql")
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgres]


async def test_an_upgrade_seals_the_labels_0_1_kept_in_clear_and_keeps_its_digests(upgraded):
    store, master, _ = upgraded
    vault = TemplateVault(store, master)
    digest = vault.sample_digest("acme", "c", "voice", b"sample")
    async with store.transaction() as tx:
        assert await tx.clear_labels(), "the 0.1 fixture holds labels in clear"
    await vault.ready()
    async with store.transaction() as tx:
        assert await tx.clear_labels() == []
    assert vault.sample_digest("acme", "c", "voice", b"sample") == digest, "stored digests stay valid"
    for key, expected in MANIFEST["customers"].items():
        tenant, cid = key.split("/")
        voice = await vault.load(tenant, cid, "voice")
        assert [t.label for t in voice] == [f"call-{i}.wav" for i in range(expected["voice"])]
