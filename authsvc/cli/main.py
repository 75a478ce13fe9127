"""The `authsvc` command line.

Operator commands are gRPC clients of a running service; they share the exit codes in
authsvc.cli.client, `--output text|json` (authsvc.cli.output), the server and credential
from the environment or a file, `--yes` for destructive commands off a terminal, and
argparse's exit 2 for bad arguments. A reader that goes away (`| head`) ends the command
quietly with 141 (128 + SIGPIPE, what a shell reports for a command killed by a broken pipe).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import grpc

from authsvc.cli import operator
from authsvc.cli.admin import add_admin_commands
from authsvc.cli.assertions import add_assertion_commands
from authsvc.cli.audit import add_audit_commands
from authsvc.cli.calls import add_calls_commands
from authsvc.cli.client import EXIT_ERROR, CliError, add_client_args, add_yes_arg, describe_rpc_error, fail
from authsvc.cli.customers import add_customers_commands
from authsvc.cli.factors import add_assertion_args, add_factor_commands
from authsvc.cli.identity import add_identity_commands
from authsvc.cli.output import add_output_args
from authsvc.cli.policy import add_policy_commands
from authsvc.cli.retention import add_retention_commands
from authsvc.cli.serve import add_serve_args, serve
from authsvc.cli.verify import add_verify_commands
from authsvc.cli.watchlist import add_watchlist_commands
from authsvc.cli.webhooks import add_webhook_commands
from authsvc.errors import AuthsvcError

EXIT_BROKEN_PIPE = 141


def _channel(value: str) -> int:
    from authsvc.audio.files import parse_channel
    from authsvc.errors import InvalidInput

    try:
        return parse_channel(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.description) from None


def add_channel_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--channel",
        type=_channel,
        help="the customer's channel of a stereo recording (0, 1, left, right); required there, "
        "since channels are never mixed",
    )


def completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authsvc", description="Passive voice and typing authentication service, and its operator CLI"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

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

    add_verify_commands(sub, add_channel_arg, operator.existing_file, add_client_args)

    p = sub.add_parser("register", help="record a customer's chosen methods (or opt-out) and consent")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument(
        "--methods",
        type=operator.methods_arg,
        default=[],
        help=f"comma-separated: {','.join(operator.METHODS)}",
    )
    p.add_argument("--opt-out", action="store_true", help="the customer declines biometrics")
    p.add_argument("--consent-version", required=True, help="version of the consent text the customer saw")
    add_yes_arg(p, "confirm that templates of dropped methods are erased")
    add_assertion_args(p)
    add_client_args(p)
    p.set_defaults(func=operator.register)

    add_retention_commands(add_customers_commands(sub))
    add_factor_commands(sub)
    add_assertion_commands(sub)
    add_calls_commands(sub)
    add_audit_commands(sub)
    add_watchlist_commands(sub, operator.existing_file)
    add_webhook_commands(sub)
    add_identity_commands(sub)
    add_admin_commands(sub)
    add_policy_commands(sub)

    p = sub.add_parser("completion", help="print a shell completion script: bash or zsh")
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(func=completion)

    add_output_args(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except CliError as exc:
        fail(str(exc))
        return exc.code
    except argparse.ArgumentTypeError as exc:  # a value checked once the command ran
        fail(str(exc))
        return 2
    except grpc.RpcError as err:
        message, code = describe_rpc_error(err)
        fail(message)
        return code
    except AuthsvcError as exc:
        fail(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader gone away is found here, not at exit
    except BrokenPipeError:
        # The Python docs' recipe: stdout goes to devnull, so the interpreter's last flush
        # does not fail again (and print a traceback) on its way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
