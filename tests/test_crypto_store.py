"""Master key handling, envelope encryption, the template vault and the stores (both backends)."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from authsvc import crypto
from authsvc.errors import ConfigError, IntegrityError
from authsvc.store import migrations, open_store
from authsvc.store.base import AuditEvent, Erasure, Secret, TemplateRow
from authsvc.store.sqlite import SQLiteStore
from authsvc.templates import TemplateVault

NO_ENV: dict[str, str] = {}


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# --- master key -------------------------------------------------------------------------------


def test_key_file_is_created_with_mode_0600_and_reused(tmp_path: Path):
    first = crypto.load_master_key(tmp_path, NO_ENV)
    path = tmp_path / crypto.KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.key) == 32
    again = crypto.load_master_key(tmp_path, NO_ENV)
    assert again == first
    assert again.key_id == first.key_id


def test_key_file_is_created_in_a_missing_data_dir(tmp_path: Path):
    crypto.load_master_key(tmp_path / "a" / "b", NO_ENV)
    assert (tmp_path / "a" / "b" / crypto.KEY_FILE_NAME).is_file()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_group_or_others_is_refused(tmp_path: Path, mode):
    crypto.load_master_key(tmp_path, NO_ENV)
    path = tmp_path / crypto.KEY_FILE_NAME
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as err:
        crypto.load_master_key(tmp_path, NO_ENV)
    assert str(path) in str(err.value) and "chmod 600" in str(err.value)


def test_master_key_env_wins_over_the_key_file(tmp_path: Path):
    from_file = crypto.load_master_key(tmp_path, NO_ENV)
    env_key = os.urandom(32)
    from_env = crypto.load_master_key(tmp_path, {crypto.MASTER_KEY_ENV: _b64(env_key)})
    assert from_env.key == env_key
    assert from_env.key_id != from_file.key_id


def test_master_key_env_does_not_create_a_key_file(tmp_path: Path):
    crypto.load_master_key(tmp_path, {crypto.MASTER_KEY_ENV: _b64(os.urandom(32))})
    assert not (tmp_path / crypto.KEY_FILE_NAME).exists()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not base64 at all!", "not valid base64"),
        (_b64(os.urandom(16)), "must be 32 bytes"),
        (_b64(os.urandom(33)), "must be 32 bytes"),
    ],
    ids=["bad-base64", "16-bytes", "33-bytes"],
)
def test_bad_master_key_env_is_a_config_error(tmp_path: Path, value, words):
    with pytest.raises(ConfigError) as err:
        crypto.load_master_key(tmp_path, {crypto.MASTER_KEY_ENV: value})
    assert crypto.MASTER_KEY_ENV in str(err.value) and words in str(err.value)


def test_a_missing_key_file_is_never_replaced_while_sealed_data_exists(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        crypto.load_master_key(tmp_path, NO_ENV, sealed=True, sealed_by={"abc123"}, where="sqlite:db")
    text = str(err.value)
    assert "missing" in text and "abc123" in text and "sqlite:db" in text and "backup" in text
    assert crypto.MASTER_KEY_ENV in text
    assert not (tmp_path / crypto.KEY_FILE_NAME).exists(), "no new key may be written over sealed data"


def test_a_key_that_did_not_seal_the_stored_data_is_refused_at_start(tmp_path: Path):
    key = crypto.load_master_key(tmp_path, NO_ENV)
    with pytest.raises(ConfigError) as err:
        crypto.load_master_key(tmp_path, NO_ENV, sealed=True, sealed_by={"0" * 16}, where="pg")
    assert key.key_id in str(err.value) and "0" * 16 in str(err.value)
    env = {crypto.MASTER_KEY_ENV: _b64(os.urandom(32))}
    with pytest.raises(ConfigError):
        crypto.load_master_key(tmp_path, env, sealed=True, sealed_by={key.key_id}, where="pg")
    assert crypto.load_master_key(tmp_path, NO_ENV, sealed=True, sealed_by={key.key_id}) == key


def test_corrupt_key_file_is_a_config_error_naming_the_file(tmp_path: Path):
    path = tmp_path / crypto.KEY_FILE_NAME
    path.write_text(_b64(os.urandom(20)) + "\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as err:
        crypto.load_master_key(tmp_path, NO_ENV)
    assert str(path) in str(err.value)


# --- seal / open ------------------------------------------------------------------------------

AAD = crypto.template_aad("acme", "alice", "voice", "ge2e", "v1")


def test_seal_then_open_round_trips_with_a_fresh_nonce():
    key = crypto.new_data_key()
    a = crypto.seal(key, b"template bytes", AAD)
    b = crypto.seal(key, b"template bytes", AAD)
    assert a != b, "every message needs a fresh nonce"
    assert b"template bytes" not in a
    assert crypto.open_sealed(key, a, AAD, "t") == b"template bytes"
    assert crypto.open_sealed(key, b, AAD, "t") == b"template bytes"


@pytest.mark.parametrize("index", [0, 5, 20, -1], ids=["format", "nonce", "body", "tag"])
def test_a_tampered_byte_fails_authentication(index):
    key = crypto.new_data_key()
    blob = bytearray(crypto.seal(key, b"template bytes", AAD))
    blob[index] ^= 0x01
    with pytest.raises(IntegrityError) as err:
        crypto.open_sealed(key, bytes(blob), AAD, "template of acme/alice")
    assert "template of acme/alice" in str(err.value)


def test_truncated_blob_is_an_integrity_error():
    key = crypto.new_data_key()
    with pytest.raises(IntegrityError):
        crypto.open_sealed(key, crypto.seal(key, b"x", AAD)[:12], AAD, "t")


@pytest.mark.parametrize(
    "other",
    [
        crypto.template_aad("acme", "bob", "voice", "ge2e", "v1"),
        crypto.template_aad("globex", "alice", "voice", "ge2e", "v1"),
        crypto.template_aad("acme", "alice", "voice", "ecapa", "v1"),
        crypto.template_aad("acme", "alice", "voice", "ge2e", "v2"),
        crypto.template_aad("acme", "alice", "keystroke", "ge2e", "v1"),
    ],
    ids=["other-customer", "other-tenant", "other-encoder", "other-version", "other-modality"],
)
def test_ciphertext_moved_to_another_record_fails_authentication(other):
    key = crypto.new_data_key()
    blob = crypto.seal(key, b"template bytes", AAD)
    with pytest.raises(IntegrityError):
        crypto.open_sealed(key, blob, other, "t")


def test_aad_fields_cannot_be_shifted_across_boundaries():
    assert crypto.template_aad("ab", "c", "voice", "e", "v") != crypto.template_aad(
        "a", "bc", "voice", "e", "v"
    )


def test_wrong_key_fails_authentication():
    blob = crypto.seal(crypto.new_data_key(), b"template bytes", AAD)
    with pytest.raises(IntegrityError):
        crypto.open_sealed(crypto.new_data_key(), blob, AAD, "t")


# --- template vault (both backends) ----------------------------------------------------------


def _master() -> crypto.MasterKey:
    return crypto.MasterKey(os.urandom(32))


async def _put(
    vault: TemplateVault, customer: str, payload: bytes, digest: str = "", encoder: str = "ge2e"
) -> bool:
    return await vault.put(
        "acme", customer, "voice", encoder, "v1", digest or payload.hex(), payload, "label"
    )


async def _templates(store, tenant: str, customer: str):
    async with store.transaction() as tx:
        return await tx.templates(tenant, customer)


async def test_vault_round_trips_templates_without_storing_plaintext(store):
    vault = TemplateVault(store, _master())
    payload = os.urandom(64)
    assert await _put(vault, "alice", payload)
    (tpl,) = await vault.load("acme", "alice", "voice")
    assert tpl.payload == payload and tpl.encoder_id == "ge2e" and tpl.label == "label"
    (row,) = await _templates(store, "acme", "alice")
    assert payload not in row.blob
    # The label (an operator's file name, which may name the person) is sealed too.
    assert "label" not in row.label and row.label.startswith("sealed:")
    assert await vault.load("acme", "nobody", "voice") == []


async def test_vault_row_copied_to_another_customer_fails_to_load(store):
    vault = TemplateVault(store, _master())
    await _put(vault, "alice", b"alice's voiceprint")
    (row,) = await _templates(store, "acme", "alice")
    async with store.transaction() as tx:
        await tx.add_template(TemplateRow(**{**row.__dict__, "customer_id": "bob"}))
    with pytest.raises(IntegrityError) as err:
        await vault.load("acme", "bob", "voice")
    assert "acme/bob" in str(err.value)


async def test_vault_with_another_master_key_names_both_key_ids(store):
    first, second = _master(), _master()
    await _put(TemplateVault(store, first), "alice", b"voiceprint")
    with pytest.raises(ConfigError) as err:
        await TemplateVault(store, second).load("acme", "alice", "voice")
    assert first.key_id in str(err.value) and second.key_id in str(err.value)
    # A write under the wrong key is refused the same way, and nothing is stored.
    with pytest.raises(ConfigError):
        await _put(TemplateVault(store, second), "bob", b"other voiceprint")
    assert await _templates(store, "acme", "bob") == []


async def test_vault_keeps_one_data_key_per_tenant(store):
    master = _master()
    vault = TemplateVault(store, master)
    await _put(vault, "alice", b"a")
    await vault.put("globex", "alice", "voice", "ge2e", "v1", "d", b"b")
    async with store.transaction() as tx:
        acme, globex = await tx.get_data_key("acme"), await tx.get_data_key("globex")
        assert await tx.master_key_ids() == {master.key_id} and await tx.has_sealed_data()
    assert acme and globex and acme[0] == globex[0] == master.key_id and acme[1] != globex[1]
    # A second vault (service restart, or another node) finds the same data key.
    assert (await TemplateVault(store, master).load("acme", "alice", "voice"))[0].payload == b"a"


async def test_a_data_key_made_in_a_rolled_back_unit_of_work_is_not_kept(store):
    master = _master()
    vault = TemplateVault(store, master)
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await vault.put("acme", "alice", "voice", "ge2e", "v1", "d1", b"first", tx=tx)
            raise RuntimeError("boom")
    async with store.transaction() as tx:
        assert await tx.get_data_key("acme") is None
    # The next write makes (and stores) a key of its own, and what it seals opens.
    await vault.put("acme", "alice", "voice", "ge2e", "v1", "d1", b"second")
    assert [t.payload for t in await TemplateVault(store, master).load("acme", "alice", "voice")] == [
        b"second"
    ]


async def test_vaults_of_two_nodes_agree_on_a_tenant_key_made_concurrently(store):
    master = _master()
    a, b = TemplateVault(store, master), TemplateVault(store, master)
    await asyncio.gather(
        *(v.put("acme", f"c{i}", "voice", "ge2e", "v1", "d", b"x%d" % i) for i, v in enumerate([a, b] * 4))
    )
    for i in range(8):
        assert (await a.load("acme", f"c{i}", "voice"))[0].payload == b"x%d" % i


def test_sample_digest_is_keyed_and_scoped():
    store = None  # the digest needs no store
    vault = TemplateVault(store, _master())  # type: ignore[arg-type]
    d = vault.sample_digest("acme", "alice", "voice", b"pcm")
    assert d == vault.sample_digest("acme", "alice", "voice", b"pcm")
    assert d != vault.sample_digest("acme", "bob", "voice", b"pcm")
    # Keyed by the master key: someone holding only the database cannot confirm a recording.
    assert d != TemplateVault(store, _master()).sample_digest("acme", "alice", "voice", b"pcm")  # type: ignore[arg-type]


# --- the store (both backends) ----------------------------------------------------------------


def _row(customer: str, digest: str, tenant: str = "acme", created_ms: int = 1) -> TemplateRow:
    return TemplateRow(
        tenant, customer, "voice", "ge2e", "v1", digest, "kid", b"blob-" + digest.encode(), created_ms
    )


async def test_duplicate_digest_is_not_stored_twice(store):
    async with store.transaction() as tx:
        assert await tx.add_template(_row("alice", "d1")) is True
        assert await tx.add_template(_row("alice", "d1", created_ms=2)) is False
        assert [r.digest for r in await tx.templates("acme", "alice")] == ["d1"]
        # The same digest for another customer is a different sample.
        assert await tx.add_template(_row("bob", "d1")) is True


async def test_delete_removes_templates_state_and_customer_and_returns_the_counts(store):
    async with store.transaction() as tx:
        for d in ("d1", "d2", "d3"):
            await tx.add_template(_row("alice", d))
        await tx.put_state("acme", "alice", "factor.totp", b"sealed", 1)
        await tx.add_template(_row("bob", "d1"))
    async with store.transaction() as tx:
        assert await tx.delete_customer("acme", "alice") == Erasure(templates=3, secrets=1)
    async with store.transaction() as tx:
        assert await tx.get_customer("acme", "alice") is None
        assert await tx.templates("acme", "alice") == []
        assert await tx.state_names("acme", "alice") == []
        assert len(await tx.templates("acme", "bob")) == 1
        assert await tx.delete_customer("acme", "alice") is None


async def test_unknown_customer_is_none(store):
    async with store.transaction() as tx:
        assert await tx.get_customer("acme", "nobody") is None
        assert await tx.lock_customer("acme", "nobody") is None
        assert await tx.delete_customer("acme", "nobody") is None
        assert await tx.get_data_key("acme") is None
        assert not await tx.has_sealed_data() and await tx.master_key_ids() == set()


async def test_ensure_customer_keeps_the_first_creation_time(store):
    async with store.transaction() as tx:
        assert (await tx.ensure_customer("acme", "alice", 100)).created_ms == 100
        assert (await tx.ensure_customer("acme", "alice", 200)).created_ms == 100


async def test_put_data_key_never_replaces_an_existing_one(store):
    async with store.transaction() as tx:
        assert await tx.put_data_key("acme", "k1", b"w1") == ("k1", b"w1")
        assert await tx.put_data_key("acme", "k2", b"w2") == ("k1", b"w1")


async def test_list_customers_pages_in_id_order_per_tenant(store):
    ids = ["c-10", "c-02", "b", "c-01", "a-9"]
    async with store.transaction() as tx:
        for cid in ids:
            await tx.ensure_customer("acme", cid, 1)
        await tx.ensure_customer("globex", "a-0", 1)
    seen, after = [], ""
    while True:
        async with store.transaction() as tx:
            page = await tx.list_customers("acme", limit=2, after=after)
        if not page:
            break
        assert len(page) <= 2
        seen += [c.customer_id for c in page]
        after = page[-1].customer_id
    assert seen == sorted(ids)


async def test_registration_choices_round_trip(store):
    async with store.transaction() as tx:
        rec = await tx.set_choices("acme", "alice", ["voice", "totp"], False, "v7", 123)
    assert rec.methods == ("totp", "voice") and rec.registered and not rec.opted_out
    assert rec.consent_version == "v7" and rec.consent_ms == 123


async def test_secrets_change_only_by_compare_and_swap(store):
    async with store.transaction() as tx:
        assert await tx.put_secret("ring", b"v1", expected_version=0)
        assert not await tx.put_secret("ring", b"other", expected_version=0), "only the first create wins"
        assert await tx.get_secret("ring") == Secret(b"v1", 1)
        assert await tx.put_secret("ring", b"v2", expected_version=1)
        assert not await tx.put_secret("ring", b"stale", expected_version=1), "a stale version loses"
        assert await tx.get_secret("ring", for_update=True) == Secret(b"v2", 2)


async def test_assertion_uses_stop_at_the_limit_and_expired_ids_are_forgotten(store):
    async with store.transaction() as tx:
        assert [await tx.use_assertion("j1", "acme", 2, 1000, 10) for _ in range(3)] == [True, True, False]
        # After expiry the id is forgotten (it could not validate any more anyway), by the
        # purge that one use in PURGE_EVERY runs (chosen by its id).
        purging = next(f"j{i}" for i in range(2, 10_000) if _purges(f"j{i}"))
        assert await tx.use_assertion(purging, "acme", 1, 2000, 1500)
        assert await tx.use_assertion("j1", "acme", 2, 3000, 1500)


def _purges(jti: str) -> bool:
    import hashlib

    from authsvc.store.sql import PURGE_EVERY

    return int(hashlib.sha256(jti.encode()).hexdigest()[:8], 16) % PURGE_EVERY == 0


async def test_audit_pages_newest_first_per_tenant_and_customer(store):
    async with store.transaction() as tx:
        for i in range(5):
            await tx.append_audit(AuditEvent("acme", i, "op", "enroll", f"c{i % 2}", "ok", {"i": i}))
        await tx.append_audit(AuditEvent("globex", 9, "op", "enroll", "c0", "ok"))
    async with store.transaction() as tx:
        events = await tx.list_audit("acme", 10)
        assert [e.details["i"] for e in events] == [4, 3, 2, 1, 0]
        older = await tx.list_audit("acme", 2, before_id=events[1].id)
        assert [e.details["i"] for e in older] == [2, 1]
        assert [e.details["i"] for e in await tx.list_audit("acme", 10, customer_id="c1")] == [3, 1]


async def test_a_failed_unit_of_work_rolls_back_and_leaves_the_store_usable(store):
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await tx.add_template(_row("ghost", "d"))
            await tx.append_audit(AuditEvent("acme", 1, "op", "enroll.voice", "ghost", "added"))
            raise RuntimeError("boom")
    async with store.transaction() as tx:
        assert await tx.get_customer("acme", "ghost") is None
        assert await tx.templates("acme", "ghost") == []
        assert await tx.list_audit("acme", 10) == []
    async with store.transaction() as tx:
        assert await tx.add_template(_row("alice", "d1"))


async def test_a_cancelled_unit_of_work_rolls_back_and_releases_the_store(store):
    # A gRPC client that hangs up cancels its handler mid-transaction.
    started = asyncio.Event()

    async def hung_up() -> None:
        async with store.transaction() as tx:
            await tx.add_template(_row("ghost", "d"))
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(hung_up())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with store.transaction() as tx:
        assert await tx.get_customer("acme", "ghost") is None
        assert await tx.add_template(_row("alice", "d1"))
    # Cancelled while waiting for the store (on SQLite another unit of work holds it): no harm.
    async with store.transaction() as tx:
        waiting = asyncio.create_task(_templates(store, "acme", "alice"))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await tx.add_template(_row("alice", "d2"))
    await asyncio.gather(waiting, return_exceptions=True)
    assert [r.digest for r in await _templates(store, "acme", "alice")] == ["d1", "d2"]


async def test_a_nested_unit_of_work_fails_loudly_instead_of_waiting_for_itself(tmp_path: Path):
    store = await SQLiteStore.open(tmp_path / "authsvc.sqlite3")
    await store.migrate()
    try:
        async with store.transaction():
            with pytest.raises(RuntimeError, match="already open in this task"):
                async with asyncio.timeout(5):  # in this task (wait_for would start another)
                    await store.transaction().__aenter__()
        async with store.transaction() as tx:  # and the store is fine afterwards
            assert await tx.get_customer("acme", "x") is None
    finally:
        await store.close()


async def test_concurrent_units_of_work_on_one_customer_do_not_lose_updates(store):
    # Read-modify-write of a counter under lock_customer: 20 concurrent increments, none lost.
    async with store.transaction() as tx:
        await tx.put_state("acme", "alice", "n", b"0", 1)

    async def bump() -> None:
        async with store.transaction() as tx:
            await tx.lock_customer("acme", "alice")
            n = int(await tx.get_state("acme", "alice", "n"))
            await asyncio.sleep(0.001)  # widen the race window
            await tx.put_state("acme", "alice", "n", str(n + 1).encode(), 2)

    await asyncio.gather(*(bump() for _ in range(20)))
    async with store.transaction() as tx:
        assert await tx.get_state("acme", "alice", "n") == b"20"


async def test_migrating_twice_applies_nothing_the_second_time(store):
    assert await store.migrate() == []
    assert await store.schema_version() == migrations.latest(store.dialect)


# --- SQLite specifics -------------------------------------------------------------------------


async def test_sqlite_store_uses_wal_journal_and_owner_only_files(tmp_path: Path):
    path = tmp_path / "existing-dir" / "authsvc.sqlite3"
    path.parent.mkdir(mode=0o755)  # a data directory that already existed, world-readable
    store = await SQLiteStore.open(path)
    await store.migrate()
    async with store.transaction() as tx:
        await tx.add_template(_row("alice", "d1"))
    try:
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()
        files = list(path.parent.iterdir())
        assert {p.name for p in files} >= {"authsvc.sqlite3", "authsvc.sqlite3-wal", "authsvc.sqlite3-shm"}
        for p in files:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    finally:
        await store.close()


async def test_an_existing_world_readable_store_file_is_tightened(tmp_path: Path):
    path = tmp_path / "authsvc.sqlite3"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    store = await SQLiteStore.open(path)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_failed_commit_rolls_back_and_leaves_the_store_usable(tmp_path: Path):
    # A COMMIT can fail by itself (here a deferred foreign-key check; in the field an I/O error).
    # The write must be undone and the connection left outside any transaction, or every
    # later call fails with "cannot start a transaction within a transaction".
    store = await open_store(f"sqlite:{tmp_path / 'db.sqlite3'}")
    await store.migrate()
    try:
        with pytest.raises(sqlite3.IntegrityError):
            async with store.transaction() as tx:
                await tx._count("PRAGMA defer_foreign_keys=ON")
                await tx._count(
                    "INSERT INTO templates (tenant, customer_id, modality, encoder_id, encoder_version, "
                    "digest, key_id, blob, created_ms) VALUES ('acme', 'ghost', 'voice', 'ge2e', 'v1', 'd', "
                    "'k', x'00', 1)"
                )
        async with store.transaction() as tx:
            assert await tx.templates("acme", "ghost") == []
            assert await tx.add_template(_row("alice", "d1"))
    finally:
        await store.close()


async def test_a_unit_of_work_cancelled_while_its_begin_waits_leaves_no_transaction_open(tmp_path: Path):
    store = await SQLiteStore.open(tmp_path / "authsvc.sqlite3")
    await store.migrate()
    try:
        # Keep the store's thread busy, so the next BEGIN waits in its queue, and cancel there.
        busy = asyncio.get_running_loop().run_in_executor(store._executor, time.sleep, 0.2)

        async def unit() -> None:
            async with store.transaction() as tx:
                await tx.add_template(_row("ghost", "d"))

        task = asyncio.create_task(unit())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, busy, return_exceptions=True)
        async with store.transaction() as tx:  # "cannot start a transaction within a transaction"?
            assert await tx.add_template(_row("alice", "d1"))
        async with store.transaction() as tx:
            assert [r.digest for r in await tx.templates("acme", "alice")] == ["d1"]
            assert await tx.get_customer("acme", "ghost") is None
    finally:
        await store.close()


async def test_store_reopens_with_data_intact(tmp_path: Path):
    spec = f"sqlite:{tmp_path / 'db' / 'authsvc.sqlite3'}"
    master = _master()
    first = await open_store(spec)
    await first.migrate()
    await TemplateVault(first, master).put("acme", "alice", "voice", "ge2e", "v1", "d1", b"voiceprint")
    await first.close()
    again = await open_store(spec)
    try:
        assert await again.migrate() == []
        (tpl,) = await TemplateVault(again, master).load("acme", "alice", "voice")
        assert tpl.payload == b"voiceprint"
    finally:
        await again.close()


async def test_store_refuses_a_newer_schema(tmp_path: Path):
    path = tmp_path / "authsvc.sqlite3"
    store = await open_store(f"sqlite:{path}")
    await store.migrate()
    await store.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    db.close()
    store = await open_store(f"sqlite:{path}")
    try:
        with pytest.raises(ConfigError, match="newer"):
            await store.migrate()
    finally:
        await store.close()
