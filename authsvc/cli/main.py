"""The `authsvc` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import grpc

from authsvc.cli import operator
from authsvc.cli.admin import add_admin_commands
from authsvc.cli.calls import add_calls_commands
from authsvc.cli.client import EXIT_ERROR, CliError, add_client_args, describe_rpc_error, fail
from authsvc.cli.identity import add_identity_commands
from authsvc.cli.policy import add_policy_commands
from authsvc.cli.serve import add_serve_args, serve
from authsvc.cli.watchlist import add_watchlist_commands
from authsvc.cli.webhooks import add_webhook_commands
from authsvc.errors import AuthsvcError


def _channel(value: str) -> int:
    from authsvc.audio.files import parse_channel
    from authsvc.errors import InvalidInput

    try:
        return parse_channel(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.description) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authsvc", description="Passive voice authentication service")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_channel_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--channel",
            type=_channel,
            help="the customer's channel of a stereo recording (0, 1, left, right); required there, "
            "since channels are never mixed",
        )

    p = sub.add_parser("serve", help="run the gRPC service")
    add_serve_args(p)
    p.set_defaults(func=serve)

    enroll = sub.add_parser("enroll", help="enroll customers").add_subparsers(dest="modality", required=True)
    p = enroll.add_parser("voice", help="add voice samples from audio files (WAV, FLAC, ...)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument("--quiet", action="store_true", help="only print the summary")
    add_channel_arg(p)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add_client_args(p)
    p.set_defaults(func=operator.enroll_voice)

    verify = sub.add_parser("verify", help="verify a claimed identity").add_subparsers(
        dest="modality", required=True
    )
    p = verify.add_parser("voice", help="stream an audio file to the service as a call would")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument(
        "--encoding",
        choices=sorted(operator.WIRE),
        default="pcm16",
        help="wire encoding (mulaw/alaw are sent at 8 kHz, as telephony does)",
    )
    p.add_argument("--rate", type=int, choices=[8000, 16000], help="wire sample rate")
    p.add_argument("--chunk-ms", type=int, default=20, help="chunk size in ms (default 20)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every rolling decision")
    add_channel_arg(p)
    p.add_argument("file", type=operator.existing_file, metavar="FILE")
    add_client_args(p)
    p.set_defaults(func=operator.verify_voice)

    p = enroll.add_parser("keystrokes", help="add typing samples from a file (JSON Lines or P/R CSV)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument(
        "--profile",
        default="password",
        help="name of the fixed-text profile the samples train (ignored for free text)",
    )
    p.add_argument("file", type=operator.existing_file, metavar="FILE")
    add_client_args(p)
    p.set_defaults(func=operator.enroll_keystrokes)

    add_policy_commands(sub)
    add_admin_commands(sub)
    add_identity_commands(sub)
    add_calls_commands(sub)
    add_webhook_commands(sub)

    p = sub.add_parser("register", help="record a customer's chosen methods (or opt-out) and consent")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument("--methods", default="", help="comma-separated: voice,typing,totp,one_time_code")
    p.add_argument("--opt-out", action="store_true", help="the customer declines biometrics")
    p.add_argument("--consent-version", required=True, help="version of the consent text the customer saw")
    p.add_argument("--yes", action="store_true", help="confirm that templates of dropped methods are erased")
    p.add_argument(
        "--assertion",
        default="",
        help="an assertion of this customer, authorizing a change that removes templates",
    )
    add_client_args(p)
    p.set_defaults(func=operator.register)

    audit = sub.add_parser("audit", help="a tenant's audit trail").add_subparsers(
        dest="action", required=True
    )
    p = audit.add_parser("list", help="audit events, newest first")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", default="", help="only this customer's events")
    p.add_argument("--limit", type=int, default=50)
    add_client_args(p)
    p.set_defaults(func=operator.audit)
    p = audit.add_parser("verify", help="check the tenant's hash chain (rows deleted, edited, cut off)")
    p.add_argument("--tenant", required=True)
    add_client_args(p)
    p.set_defaults(func=operator.audit_verify)

    customers = sub.add_parser("customers", help="list, show or delete customers")
    actions = customers.add_subparsers(dest="action", required=True)
    for action, text in (
        ("list", "list a tenant's customers"),
        ("show", "show a customer's templates"),
        ("delete", "erase a customer and every template of theirs"),
        ("unlock", "clear a customer's lockout"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("--tenant", required=True)
        if action != "list":
            p.add_argument("--customer", required=True)
        if action == "delete":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        add_client_args(p)
        p.set_defaults(func=operator.customers)
    add_watchlist_commands(sub, operator.existing_file)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except CliError as exc:
        fail(str(exc))
        return exc.code
    except grpc.RpcError as err:
        message, code = describe_rpc_error(err)
        fail(message)
        return code
    except AuthsvcError as exc:
        fail(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
