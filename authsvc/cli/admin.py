"""`authsvc db migrate | status` and `authsvc keys rotate`: platform operations on the store itself.

They open the store directly (the same `--store` / `$AUTHSVC_STORE` and data
directory as `serve`), so an operator can migrate before a rolling upgrade
or rotate the assertion signing keys of every node at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from authsvc.cli.client import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, CliError
from authsvc.context import ServiceConfig, open_context_store
from authsvc.errors import ConfigError
from authsvc.store import migrations, open_store, store_spec
from authsvc.store.base import StoreUnavailable


def add_admin_commands(sub: argparse._SubParsersAction) -> None:
    from authsvc.cli.serve import default_data_dir

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="postgresql://... or sqlite:PATH (default as for `serve`)")
        p.add_argument("--data-dir", type=Path, default=None, help="as for `serve`")
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
    p = keys.add_parser("rotate", help="rotate the assertion signing key of every node sharing the store")
    p.add_argument(
        "--revoke",
        action="store_true",
        help="also stop the old keys verifying (after a suspected leak; live assertions then fail)",
    )
    common(p)
    p.set_defaults(func=rotate)


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
    print(f"{where}: applied {', '.join(map(str, applied))}" if applied else f"{where}: up to date")
    print(f"schema version {version}")
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

    print(json.dumps(_run(go())))
    return 0


def rotate(args: argparse.Namespace) -> int:
    from authsvc.trust import rotate_keys

    async def go() -> str:
        # No migration on the side: a store older than this build is refused (`db migrate` first).
        config = ServiceConfig(
            data_dir=args.data_dir or args.data_dir_default(), store=args.store, migrate=False
        )
        store, master = await open_context_store(config)
        try:
            return await rotate_keys(store, master, revoke=args.revoke)
        finally:
            await store.close()

    kid = _run(go())
    revoked = "; the old keys no longer verify" if args.revoke else ""
    print(f"new assertion signing key {kid}; every node signs with it within a minute{revoked}")
    return 0
