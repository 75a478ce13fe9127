"""`authsvc watchlist ...`: known fraudsters of a tenant (tenant-admin), as a gRPC client."""

from __future__ import annotations

import argparse

from authsvc.api.v1 import common_pb2, fraud_pb2, fraud_pb2_grpc
from authsvc.cli.client import (
    EXIT_NEGATIVE,
    EXIT_OK,
    CliError,
    add_client_args,
    add_yes_arg,
    channel,
    confirm,
)
from authsvc.cli.output import emit
from authsvc.errors import InvalidInput


def run(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        stub = fraud_pb2_grpc.WatchlistServiceStub(ch)
        t = args.timeout
        if args.action == "create":
            stub.CreateWatchlist(
                fraud_pb2.CreateWatchlistRequest(
                    tenant=args.tenant, name=args.name, description=args.description
                ),
                timeout=t,
            )
            emit(
                args,
                {"tenant": args.tenant, "name": args.name, "description": args.description},
                f"created watchlist {args.tenant}/{args.name}",
            )
        elif args.action == "list":
            reply = stub.ListWatchlists(fraud_pb2.ListWatchlistsRequest(tenant=args.tenant), timeout=t)
            far = reply.false_match_rate_per_comparison
            emit(
                args,
                {
                    "watchlists": [
                        {"name": w.name, "fraudsters": w.fraudsters, "description": w.description}
                        for w in reply.watchlists
                    ],
                    "listed_voices": reply.listed_voices,
                    "false_match_rate_per_comparison": far,
                },
                [
                    *(f"{w.name}\t{w.fraudsters} fraudster(s)\t{w.description}" for w in reply.watchlists),
                    f"{reply.listed_voices} listed voice(s); false-match rate {far:g} per comparison, "
                    f"so about {reply.listed_voices * far:.2g} per screened call",
                ],
            )
        elif args.action == "members":
            reply = stub.ListFraudsters(
                fraud_pb2.ListFraudstersRequest(tenant=args.tenant, watchlist=args.name), timeout=t
            )
            emit(
                args,
                {
                    "watchlist": args.name,
                    "fraudsters": [
                        {"fraudster_id": f.fraudster_id, "samples": f.samples} for f in reply.fraudsters
                    ],
                },
                [f"{f.fraudster_id}\t{f.samples} sample(s)" for f in reply.fraudsters],
            )
        elif args.action == "add" and args.from_session:
            if args.files or not args.session_customer:
                raise CliError("--from-session takes --session-customer and no files", 2)
            reply = stub.AddFraudster(
                fraud_pb2.AddFraudsterRequest(
                    tenant=args.tenant,
                    watchlist=args.name,
                    fraudster_id=args.fraudster,
                    from_session_id=args.from_session,
                    session_customer_id=args.session_customer,
                ),
                timeout=t,
            )
            state = "listed" if reply.added else "voiceprint replaced"
            emit(
                args,
                {"watchlist": args.name, "fraudster_id": args.fraudster, "added": reply.added},
                f"{args.fraudster}: {state} on {args.name} (the caller of session {args.from_session})",
            )
        elif args.action == "add":
            from authsvc.cli.audio_files import file_to_wire  # scipy: only for commands that read audio

            if not args.files:
                raise CliError("give recordings of the fraudster's voice, or --from-session", 2)

            audio = []
            for path in args.files:
                try:
                    audio.append(file_to_wire(path, rate=16000)[0])  # one rate for all the recordings
                except InvalidInput as exc:
                    raise CliError(f"{path}: {exc.description}", 2) from None
            reply = stub.AddFraudster(
                fraud_pb2.AddFraudsterRequest(
                    tenant=args.tenant,
                    watchlist=args.name,
                    fraudster_id=args.fraudster,
                    format=common_pb2.AudioFormat(
                        encoding=common_pb2.AUDIO_ENCODING_PCM16_LE, sample_rate_hz=16000
                    ),
                    audio=audio,
                ),
                timeout=t,
            )
            state = "listed" if reply.added else "voiceprint replaced"
            emit(
                args,
                {
                    "watchlist": args.name,
                    "fraudster_id": args.fraudster,
                    "added": reply.added,
                    "net_speech_seconds": round(reply.net_speech_seconds, 2),
                },
                f"{args.fraudster}: {state} on {args.name} ({reply.net_speech_seconds:.1f} s net speech)",
            )
        elif args.action == "remove":
            if not confirm(
                args, f"remove {args.fraudster} (and their voiceprint) from {args.tenant}/{args.name}"
            ):
                return EXIT_NEGATIVE
            stub.RemoveFraudster(
                fraud_pb2.RemoveFraudsterRequest(
                    tenant=args.tenant, watchlist=args.name, fraudster_id=args.fraudster
                ),
                timeout=t,
            )
            emit(
                args,
                {"watchlist": args.name, "fraudster_id": args.fraudster, "removed": True},
                f"{args.fraudster}: removed from {args.name}",
            )
        else:  # delete
            if not confirm(args, f"delete watchlist {args.tenant}/{args.name} and every voice on it"):
                return EXIT_NEGATIVE
            reply = stub.DeleteWatchlist(
                fraud_pb2.DeleteWatchlistRequest(tenant=args.tenant, name=args.name), timeout=t
            )
            emit(
                args,
                {
                    "tenant": args.tenant,
                    "name": args.name,
                    "deleted": True,
                    "fraudsters_removed": reply.fraudsters_removed,
                },
                f"deleted watchlist {args.tenant}/{args.name} ({reply.fraudsters_removed} fraudster(s))",
            )
    return EXIT_OK


def add_watchlist_commands(sub: argparse._SubParsersAction, existing_file) -> None:
    actions = sub.add_parser("watchlist", help="known fraudsters (tenant-admin)").add_subparsers(
        dest="action", required=True
    )
    for action, text in (
        ("create", "create a watchlist"),
        ("list", "list the tenant's watchlists"),
        ("members", "list the fraudsters on a watchlist"),
        ("add", "list a fraudster from recordings of their voice"),
        ("remove", "remove a fraudster from a watchlist"),
        ("delete", "delete a watchlist and every voice on it"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("--tenant", required=True)
        if action != "list":
            p.add_argument("--name", required=True, help="the watchlist")
        if action == "create":
            p.add_argument("--description", default="")
        if action in ("add", "remove"):
            p.add_argument("--fraudster", required=True, help="the fraudster's id on the list")
        if action == "add":
            p.add_argument("files", nargs="*", type=existing_file, metavar="FILE")
            p.add_argument("--from-session", help="instead of files: the call id of a recent scored call")
            p.add_argument("--session-customer", help="with --from-session: the customer that call claimed")
        if action in ("remove", "delete"):
            add_yes_arg(p)
        add_client_args(p)
        p.set_defaults(func=run)
