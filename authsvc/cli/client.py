"""What every operator command shares: the channel, deadlines and error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_NEGATIVE = 1  # verification did not authenticate, or some files failed
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
EXIT_INVALID = 5
EXIT_ERROR = 6

DEFAULT_SERVER = "localhost:50051"


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"service address (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--tls-ca", type=Path, help="CA certificate; enables TLS to the server")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline per call in seconds")


@contextmanager
def channel(args: argparse.Namespace) -> Iterator[grpc.Channel]:
    opts = [("grpc.max_send_message_length", 32 * 1024 * 1024)]
    if args.tls_ca:
        creds = grpc.ssl_channel_credentials(root_certificates=args.tls_ca.read_bytes())
        ch = grpc.secure_channel(args.server, creds, options=opts)
    else:
        ch = grpc.insecure_channel(args.server, options=opts)
    with ch:
        yield ch


def describe_rpc_error(err: grpc.RpcError) -> tuple[str, int]:
    """A one-line message naming the problem (and field), and the exit code for it."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                message = "; ".join(f"{v.field}: {v.description}" for v in bad.field_violations) or message
    exit_code = {
        grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
        grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    }.get(code, EXIT_ERROR)
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach the service ({message}); is `authsvc serve` running?"
    return f"{code.name}: {message}", exit_code


def fail(message: str) -> None:
    print(f"authsvc: error: {message}", file=sys.stderr)
