"""`authsvc db migrate | status` and `authsvc keys rotate`, as an operator runs them (real processes)."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from pathlib import Path

from authsvc import crypto
from authsvc.audit import Auditor
from authsvc.store import migrations, open_store
from authsvc.store.base import TenantRecord
from authsvc.trust import AssertionAuthority
from tests.nodes import new_master_key, run_cli


def test_db_migrate_applies_every_step_once_and_status_reports_it(store_spec: str, backend: str):
    first = run_cli("db", "migrate", "--store", store_spec)
    assert first.returncode == 0, first.stderr
    latest = migrations.latest(backend)
    assert f"applied {', '.join(str(v) for v in range(1, latest + 1))}" in first.stdout
    again = run_cli("db", "migrate", "--store", store_spec)
    assert again.returncode == 0 and "up to date" in again.stdout
    status = run_cli("db", "status", "--store", store_spec, "--output", "json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["schema_version"] == doc["latest"] == latest
    assert "password" not in status.stdout


async def test_keys_rotate_gives_every_node_a_new_signing_key(tmp_path: Path):
    spec = f"sqlite:{tmp_path / 'authsvc.sqlite3'}"
    key = new_master_key()
    master = crypto.MasterKey(base64.b64decode(key))
    store = await open_store(spec)
    await store.migrate()
    async with store.transaction() as tx:
        for name in ("acme", "globex"):
            await tx.create_tenant(TenantRecord(name, "general", 0, "test"))
    authority = await AssertionAuthority.open(store, master, Auditor.with_master(store, master))
    before = {t: (await authority.ring_of(t)).active_kid for t in ("acme", "globex")}
    await store.close()

    result = run_cli(
        "keys", "rotate", "--store", spec, "--data-dir", str(tmp_path), env={crypto.MASTER_KEY_ENV: key}
    )
    assert result.returncode == 0, result.stderr
    kids = dict(re.findall(r"(\S+): new assertion signing key (\S+)", result.stdout))
    assert set(kids) == {"acme", "globex"} and kids["acme"] != kids["globex"], "a ring per tenant"
    store = await open_store(spec)
    try:
        authority = await AssertionAuthority.open(store, master, Auditor.with_master(store, master))
        for tenant, kid in kids.items():
            ring = await authority.ring_of(tenant)
            assert ring.active_kid == kid != before[tenant] and before[tenant] in ring.kids(), (
                "old keys verify"
            )
            async with store.transaction() as tx:
                (event,) = [e for e in await tx.list_audit(tenant, 10) if e.action == "keys.rotate"]
            assert event.details == {"kid": kid} and event.actor == "operator"
    finally:
        await store.close()
    kid = kids["acme"]
    # After a suspected leak: --revoke leaves only the new key in the ring.
    revoked = run_cli(
        "keys",
        "rotate",
        "--revoke",
        "--yes",
        "--store",
        spec,
        "--data-dir",
        str(tmp_path),
        env={crypto.MASTER_KEY_ENV: key},
    )
    assert revoked.returncode == 0 and "no longer verify" in revoked.stdout, revoked.stderr
    store = await open_store(spec)
    try:
        authority = await AssertionAuthority.open(store, master, Auditor.with_master(store, master))
        ring = await authority.ring_of("acme")
        assert ring.kids() == [ring.active_kid] and kid not in ring.kids()
    finally:
        await store.close()


def test_keys_rotate_with_the_wrong_master_key_is_refused(tmp_path: Path):
    spec = f"sqlite:{tmp_path / 'authsvc.sqlite3'}"
    key = {crypto.MASTER_KEY_ENV: new_master_key()}
    unmigrated = run_cli("keys", "rotate", "--store", spec, "--data-dir", str(tmp_path), env=key)
    assert unmigrated.returncode != 0 and "authsvc db migrate" in unmigrated.stderr, (
        "no migration on the side"
    )
    assert run_cli("db", "migrate", "--store", spec).returncode == 0
    sqlite3.connect(tmp_path / "authsvc.sqlite3").execute(
        "INSERT INTO tenants VALUES ('acme', 'general', 0, 'test')"
    ).connection.commit()
    assert run_cli("keys", "rotate", "--store", spec, "--data-dir", str(tmp_path), env=key).returncode == 0
    other = {crypto.MASTER_KEY_ENV: new_master_key()}
    result = run_cli("keys", "rotate", "--store", spec, "--data-dir", str(tmp_path), env=other)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    # The rotation sealed acme's ring under the first master key: the other key is named.
    assert "is not the key that sealed the data" in result.stderr, result.stderr


def test_db_status_of_a_missing_sqlite_file_is_not_found_and_creates_nothing(tmp_path: Path):
    path = tmp_path / "typo" / "authsvc.sqlite3"
    result = run_cli("db", "status", "--store", f"sqlite:{path}")
    assert result.returncode == 4 and "no store at" in result.stderr
    assert not path.parent.exists()


async def test_a_lost_platform_admin_key_is_replaced_offline_and_never_overwritten(tmp_path: Path):
    from authsvc.identity.credentials import Credentials

    spec = f"sqlite:{tmp_path / 'authsvc.sqlite3'}"
    key = new_master_key()
    env = {crypto.MASTER_KEY_ENV: key}
    assert run_cli("db", "migrate", "--store", spec).returncode == 0
    out = tmp_path / "recovered.key"
    made = run_cli(
        "keys", "admin-credential", "--out", str(out), "--store", spec, "--data-dir", str(tmp_path), env=env
    )
    assert made.returncode == 0, made.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    again = run_cli(
        "keys", "admin-credential", "--out", str(out), "--store", spec, "--data-dir", str(tmp_path), env=env
    )
    assert again.returncode == 2 and "exists" in again.stderr
    store = await open_store(spec)
    try:
        master = crypto.MasterKey(base64.b64decode(key))
        principal = await Credentials(store, Auditor.with_master(store, master)).authenticate_key(
            out.read_text().strip(), "test"
        )
        assert principal.platform and principal.tenant == ""
    finally:
        await store.close()


async def test_the_first_start_key_file_is_replaced_when_it_opens_nothing_in_this_store(tmp_path: Path, ge2e):
    from authsvc.cli.serve import _first_start
    from authsvc.context import ServiceConfig, build_context

    path = tmp_path / "admin.credential"
    path.write_text("ask_0123456789abcdef_" + "A" * 43 + "\n")  # left from a store since deleted
    ctx = await build_context(ServiceConfig(data_dir=tmp_path / "data", warm_up=False), encoder=ge2e)
    try:
        await _first_start(ctx, path)
        key = path.read_text().strip()
        assert not key.endswith("A" * 43) and path.stat().st_mode & 0o777 == 0o600
        assert (await ctx.credentials.authenticate_key(key, "test")).platform
        await _first_start(ctx, path)
        assert path.read_text().strip() == key, "a store with a live platform key gets no new one"
    finally:
        await ctx.close()
