"""`authsvc db migrate | status` and `authsvc keys rotate | rotate-master | new`: platform
operations on the store itself.

They open the store directly (the same `--store` / `$AUTHSVC_STORE`, data
directory and master key as `serve`), so an operator can migrate before a
rolling upgrade, rotate the assertion signing keys of every node at once, or
re-wrap the tenants' data keys under a new master key.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from authsvc.cli.client import (
    EXIT_ERROR,
    EXIT_NEGATIVE,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    add_yes_arg,
    confirm,
)
from authsvc.cli.output import emit
from authsvc.cli.serve import add_key_args, key_config
from authsvc.context import ServiceConfig, open_context_store
from authsvc.errors import ConfigError
from authsvc.store import migrations, open_store, store_spec
from authsvc.store.base import StoreUnavailable


def admin_credential(args: argparse.Namespace) -> int:
    """A new platform-admin key straight in the store, for an operator who lost theirs (whoever
    can run this can read the database and the master key already)."""
    from authsvc.audit import Auditor
    from authsvc.cli.identity import write_secret_file
    from authsvc.identity.credentials import Credentials
    from authsvc.identity.roles import PLATFORM_ADMIN

    if args.out.exists():  # checked first too: no key is minted that could not be written
        raise CliError(f"{args.out} exists; choose another file (keys are never overwritten)", EXIT_USAGE)

    async def go():
        store, master = await open_context_store(_config(args))
        try:
            credentials = Credentials(store, Auditor.with_master(store, master))
            return await credentials.create_api_key("", [PLATFORM_ADMIN], args.description, actor="operator")
        finally:
            await store.close()

    record, key = _run(go())
    write_secret_file(args.out, key)
    emit(
        args,
        {"credential_id": record.id, "key_file": str(args.out)},
        f"platform-admin credential {record.id} written to {args.out} (mode 0600)",
    )
    return 0


def new_key(args: argparse.Namespace) -> int:
    from authsvc import crypto

    key = crypto.new_key_file(args.path)
    kid = crypto.key_id_of(key)
    emit(
        args,
        {"key_id": kid, "key_file": str(args.path)},
        f"master key {kid} written to {args.path} (mode 0600); keep a backup",
    )
    return 0


def add_admin_commands(sub: argparse._SubParsersAction) -> None:
    from authsvc.cli.serve import default_data_dir

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="postgresql://... or sqlite:PATH (default as for `serve`)")
        p.add_argument("--data-dir", type=Path, default=None, help="as for `serve`")
        add_key_args(p)
        p.set_defaults(data_dir_default=default_data_dir)

    db = sub.add_parser("db", help="schema migrations of the store").add_subparsers(
        dest="action", required=True
    )
    p = db.add_parser("migrate", help="apply pending schema migrations")
    common(p)
    p.set_defaults(func=migrate)
    p = db.add_parser("status", help="the schema version of the store and of this build")
    common(p)
    p.set_defaults(func=status)

    keys = sub.add_parser("keys", help="service keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("rotate", help="rotate the assertion signing keys (every tenant's, or one)")
    p.add_argument("--tenant", default="", help="only this tenant's ring")
    p.add_argument(
        "--revoke",
        action="store_true",
        help="also stop the old keys verifying (after a suspected leak; live assertions then fail)",
    )
    add_yes_arg(p, "with --revoke: do not ask")
    common(p)
    p.set_defaults(func=rotate)
    p = keys.add_parser(
        "rotate-master", help="re-wrap every tenant data key under a new master key (online; docs/keys.md)"
    )
    p.add_argument("--new-key-file", type=Path, required=True, help="the new key (create it with `keys new`)")
    common(p)
    p.set_defaults(func=rotate_master)
    p = keys.add_parser(
        "admin-credential", help="mint a platform-admin API key directly in the store (a lost key)"
    )
    p.add_argument("--out", type=Path, required=True, help="new file for the key (mode 0600)")
    p.add_argument("--description", default="minted by keys admin-credential")
    common(p)
    p.set_defaults(func=admin_credential)
    p = keys.add_parser("new", help="write a new random master key to a new file (mode 0600)")
    p.add_argument("path", type=Path)
    p.set_defaults(func=new_key)


def _spec(args: argparse.Namespace) -> str:
    return store_spec(args.store, args.data_dir or args.data_dir_default())


def _run(coro):
    try:
        return asyncio.run(coro)
    except StoreUnavailable as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_ERROR) from None


def migrate(args: argparse.Namespace) -> int:
    async def go() -> tuple[str, list[int], int]:
        store = await open_store(_spec(args))
        try:
            return store.description, await store.migrate(), await store.schema_version()
        finally:
            await store.close()

    where, applied, version = _run(go())
    emit(
        args,
        {"store": where, "applied": applied, "schema_version": version},
        [
            f"{where}: applied {', '.join(map(str, applied))}" if applied else f"{where}: up to date",
            f"schema version {version}",
        ],
    )
    return 0


def status(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if spec.startswith("sqlite:") and not Path(spec.removeprefix("sqlite:")).exists():
        raise CliError(f"no store at {spec.removeprefix('sqlite:')}", EXIT_NOT_FOUND)

    async def go() -> dict:
        store = await open_store(spec)
        try:
            return {
                "store": store.description,
                "schema_version": await store.schema_version(),
                "latest": migrations.latest(store.dialect),
            }
        finally:
            await store.close()

    doc = _run(go())
    behind = doc["schema_version"] < doc["latest"]
    emit(
        args,
        doc,
        f"{doc['store']}: schema version {doc['schema_version']} (this build: {doc['latest']})"
        + ("; run `authsvc db migrate`" if behind else ""),
    )
    return 0


def _config(args: argparse.Namespace) -> ServiceConfig:
    # No migration on the side: a store older than this build is refused (`db migrate` first).
    return ServiceConfig(
        data_dir=args.data_dir or args.data_dir_default(), store=args.store, migrate=False, **key_config(args)
    )


def rotate(args: argparse.Namespace) -> int:
    from authsvc.trust import rotate_keys

    # --revoke ends every live assertion at once: destructive, so confirmed.
    if args.revoke and not confirm(
        args, "revoke the old assertion signing keys (live assertions stop verifying)"
    ):
        return EXIT_NEGATIVE

    async def go() -> dict[str, str]:
        store, master = await open_context_store(_config(args))
        try:
            if args.tenant:
                async with store.transaction() as tx:
                    if await tx.get_tenant(args.tenant) is None:
                        raise CliError(f"tenant {args.tenant!r} is not provisioned", EXIT_NOT_FOUND)
            return await rotate_keys(store, master, revoke=args.revoke, tenant=args.tenant)
        finally:
            await store.close()

    kids = _run(go())
    revoked = "; the old keys no longer verify" if args.revoke else ""
    emit(
        args,
        {"keys": [{"tenant": t, "key_id": k} for t, k in sorted(kids.items())], "revoked_old": args.revoke},
        [
            *(f"{tenant}: new assertion signing key {kid}" for tenant, kid in sorted(kids.items())),
            f"{len(kids)} tenant(s); every node signs with the new keys within a minute{revoked}",
        ],
    )
    return 0


def rotate_master(args: argparse.Namespace) -> int:
    from authsvc import crypto
    from authsvc.rekey import rotate_master as rewrap

    new_key = crypto.read_key_file(args.new_key_file)

    async def go():
        store, master = await open_context_store(_config(args))
        try:
            return await rewrap(store, master, new_key)
        finally:
            await store.close()

    done = _run(go())
    emit(
        args,
        {
            "rewrapped": done.rewrapped,
            "already": done.already,
            "old_key_ids": list(done.old_ids),
            "new_key_id": done.new_id,
        },
        f"{done.rewrapped} data key(s) re-wrapped from {', '.join(done.old_ids)} to {done.new_id} "
        f"({done.already} already were); no template was re-encrypted. Give every node "
        f"--master-key-file {args.new_key_file} and drop its previous key.",
    )
    return 0
