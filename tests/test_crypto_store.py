"""Master key handling, envelope encryption, the template vault and the SQLite store."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from authsvc import crypto
from authsvc.errors import ConfigError, IntegrityError
from authsvc.store.base import Erasure, TemplateRow
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


# --- template vault ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "authsvc.sqlite3")
    yield s
    s.close()


def _master() -> crypto.MasterKey:
    return crypto.MasterKey(os.urandom(32))


def _put(
    vault: TemplateVault, customer: str, payload: bytes, digest: str = "", encoder: str = "ge2e"
) -> bool:
    return vault.put("acme", customer, "voice", encoder, "v1", digest or payload.hex(), payload, "label")


def test_vault_round_trips_templates_without_storing_plaintext(store):
    vault = TemplateVault(store, _master())
    payload = os.urandom(64)
    assert _put(vault, "alice", payload)
    (tpl,) = vault.load("acme", "alice", "voice")
    assert tpl.payload == payload and tpl.encoder_id == "ge2e" and tpl.label == "label"
    (row,) = store.templates("acme", "alice")
    assert payload not in row.blob
    assert vault.load("acme", "nobody", "voice") == []


def test_vault_row_copied_to_another_customer_fails_to_load(store):
    vault = TemplateVault(store, _master())
    _put(vault, "alice", b"alice's voiceprint")
    (row,) = store.templates("acme", "alice")
    store.add_template(TemplateRow(**{**row.__dict__, "customer_id": "bob"}))
    with pytest.raises(IntegrityError) as err:
        vault.load("acme", "bob", "voice")
    assert "acme/bob" in str(err.value)


def test_vault_with_another_master_key_names_both_key_ids(store):
    first, second = _master(), _master()
    _put(TemplateVault(store, first), "alice", b"voiceprint")
    with pytest.raises(ConfigError) as err:
        TemplateVault(store, second).load("acme", "alice", "voice")
    assert first.key_id in str(err.value) and second.key_id in str(err.value)
    # A write under the wrong key is refused the same way, and nothing is stored.
    with pytest.raises(ConfigError):
        _put(TemplateVault(store, second), "bob", b"other voiceprint")
    assert store.templates("acme", "bob") == []


def test_vault_keeps_one_data_key_per_tenant(store):
    master = _master()
    vault = TemplateVault(store, master)
    _put(vault, "alice", b"a")
    vault.put("globex", "alice", "voice", "ge2e", "v1", "d", b"b")
    acme, globex = store.get_data_key("acme"), store.get_data_key("globex")
    assert acme and globex and acme[0] == globex[0] == master.key_id and acme[1] != globex[1]
    # A second vault (service restart) finds the same data key and reads the old template.
    assert TemplateVault(store, master).load("acme", "alice", "voice")[0].payload == b"a"


def test_sample_digest_is_keyed_and_scoped(store):
    vault = TemplateVault(store, _master())
    d = vault.sample_digest("acme", "alice", "voice", b"pcm")
    assert d == vault.sample_digest("acme", "alice", "voice", b"pcm")
    assert d != vault.sample_digest("acme", "bob", "voice", b"pcm")
    # Keyed by the master key: someone holding only the database cannot confirm a recording.
    assert d != TemplateVault(store, _master()).sample_digest("acme", "alice", "voice", b"pcm")


# --- SQLite store -----------------------------------------------------------------------------


def _row(customer: str, digest: str, tenant: str = "acme", created_ms: int = 1) -> TemplateRow:
    return TemplateRow(
        tenant, customer, "voice", "ge2e", "v1", digest, "kid", b"blob-" + digest.encode(), created_ms
    )


def test_sqlite_store_uses_wal_journal(tmp_path: Path, store):
    other = sqlite3.connect(tmp_path / "authsvc.sqlite3")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_duplicate_digest_is_not_stored_twice(store):
    assert store.add_template(_row("alice", "d1")) is True
    assert store.add_template(_row("alice", "d1", created_ms=2)) is False
    assert [r.digest for r in store.templates("acme", "alice")] == ["d1"]
    # The same digest for another customer is a different sample.
    assert store.add_template(_row("bob", "d1")) is True


def test_delete_removes_templates_and_customer_and_returns_the_count(store):
    for d in ("d1", "d2", "d3"):
        store.add_template(_row("alice", d))
    store.add_template(_row("bob", "d1"))
    assert store.delete_customer("acme", "alice") == Erasure(templates=3, secrets=0)
    assert store.get_customer("acme", "alice") is None
    assert store.templates("acme", "alice") == []
    assert len(store.templates("acme", "bob")) == 1
    assert store.delete_customer("acme", "alice") is None


def test_unknown_customer_is_none(store):
    assert store.get_customer("acme", "nobody") is None
    assert store.delete_customer("acme", "nobody") is None
    assert store.get_data_key("acme") is None


def test_ensure_customer_keeps_the_first_creation_time(store):
    assert store.ensure_customer("acme", "alice", 100).created_ms == 100
    assert store.ensure_customer("acme", "alice", 200).created_ms == 100


def test_put_data_key_never_replaces_an_existing_one(store):
    assert store.put_data_key("acme", "k1", b"w1") == ("k1", b"w1")
    assert store.put_data_key("acme", "k2", b"w2") == ("k1", b"w1")


def test_list_customers_pages_in_id_order_per_tenant(store):
    ids = ["c-10", "c-02", "b", "c-01", "a-9"]
    for cid in ids:
        store.ensure_customer("acme", cid, 1)
    store.ensure_customer("globex", "a-0", 1)
    seen, after = [], ""
    while page := store.list_customers("acme", limit=2, after=after):
        assert len(page) <= 2
        seen += [c.customer_id for c in page]
        after = page[-1].customer_id
    assert seen == sorted(ids)


def test_failed_transaction_rolls_back_and_releases_the_lock(store):
    with pytest.raises(RuntimeError, match="boom"), store._tx() as cur:
        cur.execute("INSERT INTO customers (tenant, customer_id, created_ms) VALUES ('acme', 'ghost', 1)")
        cur.execute(
            "INSERT INTO templates (tenant, customer_id, modality, encoder_id, encoder_version, digest, "
            "key_id, blob, created_ms) VALUES ('acme', 'ghost', 'voice', 'ge2e', 'v1', 'd', 'k', x'00', 1)"
        )
        raise RuntimeError("boom")
    assert store.get_customer("acme", "ghost") is None
    assert store.templates("acme", "ghost") == []
    # The lock was released: the store is still usable.
    assert store.add_template(_row("alice", "d1"))


def test_constraint_violation_inside_a_write_leaves_nothing_behind(store):
    # A database error part-way through a write (a duplicate key) undoes the rows before it.
    with pytest.raises(sqlite3.IntegrityError), store._tx() as cur:
        cur.execute("INSERT INTO customers (tenant, customer_id, created_ms) VALUES ('acme', 'ghost', 1)")
        cur.execute("INSERT INTO customers (tenant, customer_id, created_ms) VALUES ('acme', 'ghost', 2)")
    assert store.get_customer("acme", "ghost") is None


def test_a_failed_commit_rolls_back_and_leaves_the_store_usable(store):
    # A COMMIT can fail by itself (here a deferred foreign-key check; in the field an I/O error).
    # The write must be undone and the connection left outside any transaction, or every
    # later call fails with "cannot start a transaction within a transaction".
    with pytest.raises(sqlite3.IntegrityError), store._tx() as cur:
        cur.execute("PRAGMA defer_foreign_keys=ON")
        cur.execute(
            "INSERT INTO templates (tenant, customer_id, modality, encoder_id, encoder_version, digest, "
            "key_id, blob, created_ms) VALUES ('acme', 'ghost', 'voice', 'ge2e', 'v1', 'd', 'k', x'00', 1)"
        )
    assert store.templates("acme", "ghost") == []
    assert store.add_template(_row("alice", "d1"))
    assert [r.digest for r in store.templates("acme", "alice")] == ["d1"]


def test_store_reopens_with_data_intact(tmp_path: Path):
    path = tmp_path / "db" / "authsvc.sqlite3"
    master = _master()
    first = SQLiteStore(path)
    TemplateVault(first, master).put("acme", "alice", "voice", "ge2e", "v1", "d1", b"voiceprint")
    first.close()
    again = SQLiteStore(path)
    try:
        assert again.get_customer("acme", "alice") is not None
        (tpl,) = TemplateVault(again, master).load("acme", "alice", "voice")
        assert tpl.payload == b"voiceprint"
    finally:
        again.close()


def test_store_refuses_a_newer_schema(tmp_path: Path):
    path = tmp_path / "authsvc.sqlite3"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteStore(path)
