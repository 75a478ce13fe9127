"""`authsvc audit list | verify`: a tenant's audit trail, filtered by customer, action family,
outcome and time (`--since 24h`, `--until 2026-11-30T12:00Z`), and its hash chain checked."""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime

from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc
from authsvc.cli.client import EXIT_NEGATIVE, EXIT_OK, add_client_args, channel, fail
from authsvc.cli.output import audit_doc, emit, table, when

PAGE = 1000
MAX_EVENTS = 100_000
_AGO = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}")


def time_arg(value: str) -> int:
    """A point in time, in ms since the epoch: ISO-8601 (`2026-11-30`, `2026-11-30T12:00Z`,
    `2026-11-30T12:00:00+01:00`; no zone means UTC) or a time ago (`90s`, `30m`, `24h`, `7d`, `2w`)."""
    text = value.strip()
    ago = _AGO.fullmatch(text)
    if ago:
        return int((time.time() - int(ago.group(1)) * _UNIT_S[ago.group(2)]) * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither ISO-8601 (2026-11-30T12:00Z) nor a time ago (24h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is before 1970")
    return ms


def name_arg(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: dotted names of letters, digits, _ and - (e.g. enroll.voice)"
        )
    return value


def limit_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 1 <= n <= MAX_EVENTS:
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_EVENTS}")
    return n


def list_events(args: argparse.Namespace) -> int:
    events: list = []
    with channel(args) as ch:
        stub = assurance_pb2_grpc.AuditServiceStub(ch)
        token = ""
        while len(events) < args.limit:
            page = stub.ListAuditEvents(
                assurance_pb2.ListAuditEventsRequest(
                    tenant=args.tenant,
                    customer_id=args.customer,
                    action=args.action or "",
                    outcome=args.outcome or "",
                    since_unix_ms=args.since or 0,
                    until_unix_ms=args.until or 0,
                    page_size=min(PAGE, args.limit - len(events)),
                    page_token=token,
                ),
                timeout=args.timeout,
            )
            events += page.events
            token = page.next_page_token
            if not token:
                break
    rows = [
        [when(e.time_unix_ms), e.action, e.customer_id or "-", e.outcome, e.actor, e.details] for e in events
    ]
    filters = {
        k: v
        for k, v in (
            ("customer_id", args.customer),
            ("action", args.action),
            ("outcome", args.outcome),
            ("since", when(args.since or 0) if args.since else ""),
            ("until", when(args.until or 0) if args.until else ""),
        )
        if v
    }
    emit(
        args,
        {
            "tenant": args.tenant,
            "filters": filters,
            "events": [audit_doc(e) for e in events],
            "more": bool(token),
        },
        table(["TIME", "ACTION", "CUSTOMER", "OUTCOME", "ACTOR", "DETAILS"], rows),
    )
    return EXIT_OK


def verify_chain(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        r = assurance_pb2_grpc.AuditServiceStub(ch).VerifyAuditChain(
            assurance_pb2.VerifyAuditChainRequest(tenant=args.tenant), timeout=args.timeout
        )
    doc = {
        "tenant": args.tenant,
        "intact": r.intact,
        "rows_checked": r.rows_checked,
        "first_bad_id": r.first_bad_id or None,
        "problem": r.problem or None,
        "head_hash": r.head_hash or None,
        "unchained_rows": r.unchained_rows,
    }
    if r.intact:
        emit(
            args,
            doc,
            f"{args.tenant}: audit chain intact, {r.rows_checked} row(s); head {r.head_hash or '-'}",
        )
        return EXIT_OK
    emit(args, doc, None)
    fail(f"{args.tenant}: audit chain broken at row {r.first_bad_id}: {r.problem} ({r.rows_checked} checked)")
    return EXIT_NEGATIVE


class _Range(argparse.Action):
    """--until after --since, checked while parsing (a bad range is a usage error)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        since, until = getattr(namespace, "since", None), getattr(namespace, "until", None)
        if since and until and since >= until:
            parser.error("--until must be after --since")


def add_audit_commands(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="a tenant's audit trail (tenant-admin)").add_subparsers(
        dest="action_name", required=True
    )
    p = audit.add_parser("list", help="audit events, newest first, filtered")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", default="", help="only this customer's events")
    p.add_argument(
        "--action",
        type=name_arg,
        help="an action or its family: enroll (enroll.voice, ...), request.refused, decision",
    )
    p.add_argument("--outcome", type=name_arg, help="an outcome exactly: refused, wrong_code, ...")
    p.add_argument(
        "--since",
        type=time_arg,
        action=_Range,
        help="from this time: ISO-8601 (UTC unless a zone) or ago: 24h, 7d",
    )
    p.add_argument("--until", type=time_arg, action=_Range, help="before this time (same forms)")
    p.add_argument("--limit", type=limit_arg, default=50, help="at most this many events (default 50)")
    add_client_args(p)
    p.set_defaults(func=list_events)
    p = audit.add_parser("verify", help="check the tenant's hash chain (rows deleted, edited, cut off)")
    p.add_argument("--tenant", required=True)
    add_client_args(p)
    p.set_defaults(func=verify_chain)
