"""The master key: where it comes from (a file outside the data directory, a `python:` provider)
and its online rotation, which re-wraps data keys and leaves every template readable."""

from __future__ import annotations

import base64
import os
import sys
import textwrap

import pytest

from authsvc import crypto
from authsvc.audio.codecs import Encoding, encode
from authsvc.audit import Auditor
from authsvc.context import ServiceConfig, build_context
from authsvc.enrollment import enroll_voice
from authsvc.errors import ConfigError
from authsvc.rekey import rotate_master
from tests.principals import ALL_METHODS, ensure_tenant, register_direct

TENANTS = ("acme", "globex")


async def _node(tmp_path, name, spec, ge2e, **keys):
    config = ServiceConfig(data_dir=tmp_path / name, store=spec, warm_up=False, **keys)
    return await build_context(config, encoder=ge2e)


async def test_rotating_the_master_key_online_keeps_every_template_readable(
    tmp_path, store_spec, ge2e, speech
):
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    crypto.new_key_file(old_file)
    crypto.new_key_file(new_file)
    voice = speech[sorted(speech)[0]]
    pcm = encode(voice[0], Encoding.PCM16_LE)

    a = await _node(tmp_path, "a", store_spec, ge2e, master_key_file=old_file)
    try:
        assert not (tmp_path / "a" / "master.key").exists(), "a key file elsewhere: none in the data dir"
        before = {}
        for tenant in TENANTS:
            await ensure_tenant(a, tenant)
            await register_direct(a.store, tenant, "c1", ALL_METHODS)
            await enroll_voice(a, tenant, "c1", Encoding.PCM16_LE, 16000, pcm, "first.wav", "test")
            await a.factors.set_destination(
                tenant, "c1", "+4930000001", "test", policy=await a.policy_for(tenant)
            )
            before[tenant] = [t.payload for t in await a.vault.load(tenant, "c1", None)]
            policy = await a.policy_for(tenant)
            issued = await a.trust.issue(policy, "c1", ("voice",), "AAL1", "voice")
            before[tenant + "/token"] = issued.token
        async with a.store.transaction() as tx:
            assert await tx.master_key_ids() == {crypto.key_id_of(crypto.read_key_file(old_file))}
    finally:
        await a.close()

    # Step 1: nodes get the new key, and the old one as previous; they serve as before.
    b = await _node(
        tmp_path, "b", store_spec, ge2e, master_key_file=new_file, previous_master_key_file=old_file
    )
    try:
        assert [t.payload for t in await b.vault.load("acme", "c1", None)] == before["acme"]
        # Step 2: the rotation, while node b runs.
        old = crypto.MasterKey(crypto.read_key_file(old_file))
        done = await rotate_master(b.store, old, crypto.read_key_file(new_file))
        assert done.rewrapped == len(TENANTS) + 1 and done.already == 0  # + the platform's key
        assert [t.payload for t in await b.vault.load("globex", "c1", None)] == before["globex"]
    finally:
        await b.close()

    # Step 3: the new key alone opens everything; templates were not re-encrypted.
    c = await _node(tmp_path, "c", store_spec, ge2e, master_key_file=new_file)
    try:
        for tenant in TENANTS:
            assert [t.payload for t in await c.vault.load(tenant, "c1", None)] == before[tenant]
            assert await c.vault.load_state(tenant, "c1", "factor.code_destination") == b"+4930000001"
            claims = await c.trust.validate(await c.policy_for(tenant), before[tenant + "/token"], "chat")
            assert claims.customer_id == "c1", "per-tenant signing keys live under data keys: untouched"
            again = await enroll_voice(c, tenant, "c1", Encoding.PCM16_LE, 16000, pcm, "", "test")
            assert not again.added, "sample digests still recognise an enrolled sample"
            assert (await c.auditor.verify(tenant)).intact, "the audit chain still verifies"
        async with c.store.transaction() as tx:
            assert await tx.master_key_ids() == {crypto.key_id_of(crypto.read_key_file(new_file))}
        events = await Auditor(c.store, c.vault).list("", 100)
        assert any(e.action == "keys.rotate_master" and e.details["rewrapped"] == 3 for e in events)
    finally:
        await c.close()

    # The old key alone no longer opens the store, and says so at start.
    with pytest.raises(ConfigError, match="is not the key that sealed"):
        await _node(tmp_path, "d", store_spec, ge2e, master_key_file=old_file)


async def test_a_python_key_provider_supplies_the_master_key(tmp_path, store_spec, ge2e, monkeypatch):
    key = os.urandom(32)
    package = tmp_path / "kms_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            f"""
            import base64

            class Provider:
                def load(self) -> bytes:
                    return base64.b64decode({base64.b64encode(key).decode()!r})

            class Broken:
                def load(self):
                    return b"short"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ctx = await _node(tmp_path, "a", store_spec, ge2e, master_key_provider="python:kms_plugin:Provider")
    try:
        await ensure_tenant(ctx, "acme")
        await register_direct(ctx.store, "acme", "c1", ALL_METHODS)
        await ctx.factors.set_destination("acme", "c1", "+4930000001", "test")
        async with ctx.store.transaction() as tx:
            assert await tx.master_key_ids() == {crypto.key_id_of(key)}
        assert not (tmp_path / "a" / "master.key").exists()
    finally:
        await ctx.close()
    with pytest.raises(ConfigError, match="must return 32 bytes"):
        await _node(tmp_path, "b", store_spec, ge2e, master_key_provider="python:kms_plugin:Broken")
    with pytest.raises(ConfigError, match="cannot import"):
        await _node(tmp_path, "c", store_spec, ge2e, master_key_provider="python:no_such_kms:Provider")
    sys.modules.pop("kms_plugin", None)


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "master.key"
    crypto.new_key_file(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        crypto.read_key_file(path)
    with pytest.raises(ConfigError, match="never overwritten"):
        crypto.new_key_file(path)
