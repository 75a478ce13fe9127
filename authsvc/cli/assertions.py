"""`authsvc assertions validate`: does a channel accept an assertion made on another one?

A chat, web or app channel of the tenant presents the token an AUTHENTICATED call issued;
the service checks its signature, tenant, lifetime and use count (each validation is a use:
the finance and health presets allow one). Exit 0: valid; 1: not valid (expired, used up,
forged, another tenant's: the reason is printed); other codes as for every command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc, common_pb2
from authsvc.cli.client import (
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_client_args,
    channel,
    describe_rpc_error,
    error_info,
    fail,
    read_file_value,
    read_value,
)
from authsvc.cli.output import assertion_doc, assertion_text, emit

CHANNELS = {
    "voice": common_pb2.CHANNEL_VOICE,
    "chat": common_pb2.CHANNEL_CHAT,
    "web": common_pb2.CHANNEL_WEB,
    "app": common_pb2.CHANNEL_APP,
}


def _not_valid(err: grpc.RpcError) -> bool:
    """The service's verdict on the token (not on this command's own credential or request)."""
    reason, fields = error_info(err)
    if err.code() == grpc.StatusCode.UNAUTHENTICATED:
        return reason.startswith("ASSERTION")
    return err.code() == grpc.StatusCode.INVALID_ARGUMENT and any(f in ("token", "assertion") for f in fields)


def validate(args: argparse.Namespace) -> int:
    if args.token_file and args.token:
        raise CliError("give the token or --token-file, not both", EXIT_USAGE)
    if args.token_file:
        token = read_file_value(args.token_file, "the assertion token")
    elif args.token:
        token = read_value(args.token, "the assertion token")
    else:
        raise CliError("give the token, - (stdin) or --token-file FILE", EXIT_USAGE)
    with channel(args) as ch:
        try:
            reply = assurance_pb2_grpc.AssertionServiceStub(ch).ValidateAssertion(
                assurance_pb2.ValidateAssertionRequest(
                    tenant=args.tenant, token=token, channel=CHANNELS[args.channel]
                ),
                timeout=args.timeout,
            )
        except grpc.RpcError as err:
            if not _not_valid(err):
                raise
            reason, _ = error_info(err)
            message, _ = describe_rpc_error(err)
            emit(args, {"valid": False, "reason": reason or err.code().name, "message": err.details()}, None)
            fail(f"not valid: {message}")
            return EXIT_NEGATIVE
    a = reply.assertion
    emit(
        args,
        {"valid": True, "channel": args.channel, "assertion": assertion_doc(a)},
        f"valid on {args.channel}: {assertion_text(a)}",
    )
    return EXIT_OK


def add_assertion_commands(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "assertions", help="assertions made on one channel, presented on another"
    ).add_subparsers(dest="action", required=True)
    p = a.add_parser("validate", help="validate an assertion token on a channel (exit 0 valid, 1 not valid)")
    p.add_argument("--tenant", required=True, help="the tenant of the channel that validates")
    p.add_argument(
        "--channel", choices=sorted(CHANNELS), required=True, help="the channel it is presented on"
    )
    p.add_argument(
        "token", nargs="?", help="the token, or - to read it from stdin (a file keeps it out of ps)"
    )
    p.add_argument("--token-file", type=Path, metavar="FILE", help="a file holding the token")
    add_client_args(p)
    p.set_defaults(func=validate)
