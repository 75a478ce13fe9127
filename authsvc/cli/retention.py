"""`authsvc customers expire`: the tenant's retention rule run now (the service also runs it on
its own every --retention-interval-s). Customers inactive longer than the policy's
retention_days lose every biometric template; `--dry-run` lists who would, erasing nothing."""

from __future__ import annotations

import argparse

from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.cli.client import EXIT_NEGATIVE, EXIT_OK, add_client_args, add_yes_arg, channel, confirm
from authsvc.cli.output import emit, iso, table, when

MAX_LIMIT = 10000  # the service's own ceiling per call


def expire(args: argparse.Namespace) -> int:
    if not args.dry_run and not confirm(
        args, f"erase the biometric templates of {args.tenant}'s customers past their retention period"
    ):
        return EXIT_NEGATIVE
    found, reply = [], None
    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        # A dry run lists one page (nothing changes, so the next page would be the same); an
        # expiry goes on until no one is left, each call erasing up to `limit`.
        while True:
            reply = stub.ExpireCustomers(
                enrollment_pb2.ExpireCustomersRequest(
                    tenant=args.tenant, dry_run=args.dry_run, limit=args.limit
                ),
                timeout=args.timeout,
            )
            found += reply.customers
            if args.dry_run or not reply.more or not reply.customers:
                break
    verb = "would expire" if args.dry_run else "expired"
    rows = [[c.customer_id, when(c.last_active_unix_ms), str(c.templates)] for c in found]
    more = " (more remain: run again)" if args.dry_run and reply.more else ""
    emit(
        args,
        {
            "tenant": args.tenant,
            "dry_run": args.dry_run,
            "retention_days": reply.retention_days,
            "cutoff": iso(reply.cutoff_unix_ms),
            "customers": [
                {
                    "customer_id": c.customer_id,
                    "last_active": iso(c.last_active_unix_ms),
                    "templates": c.templates,
                }
                for c in found
            ],
            "more": bool(args.dry_run and reply.more),
        },
        [
            f"{args.tenant}: {verb} {len(found)} customer(s) inactive since before "
            f"{when(reply.cutoff_unix_ms)} (retention_days {reply.retention_days}){more}",
            *(table(["CUSTOMER", "LAST ACTIVE", "TEMPLATES"], rows) if rows else []),
        ],
    )
    return EXIT_OK


def add_retention_commands(customers: argparse._SubParsersAction) -> None:
    p = customers.add_parser(
        "expire", help="erase the templates of customers inactive past the policy's retention_days"
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--dry-run", action="store_true", help="list who would expire; erase nothing")
    p.add_argument(
        "--limit",
        type=_limit,
        default=1000,
        help=f"customers per call to the service (1..{MAX_LIMIT}, default 1000)",
    )
    add_yes_arg(p)
    add_client_args(p)
    p.set_defaults(func=expire)


def _limit(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_LIMIT}")
    return n
