"""What every operator command shares: the channel, deadlines and error reporting."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
EXIT_DENIED = 7  # no, bad or insufficient credential (UNAUTHENTICATED, PERMISSION_DENIED)

DEFAULT_SERVER = "localhost:50051"
SERVER_ENV = "AUTHSVC_SERVER"
CREDENTIAL_ENV = "AUTHSVC_CREDENTIAL"
CREDENTIAL_FILE_ENV = "AUTHSVC_CREDENTIAL_FILE"


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"service address (default ${SERVER_ENV}, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--credential-file",
        type=Path,
        default=os.environ.get(CREDENTIAL_FILE_ENV) or None,
        help=f"file holding the API key (default ${CREDENTIAL_FILE_ENV}; or the key in ${CREDENTIAL_ENV})",
    )
    parser.add_argument("--tls-ca", type=Path, help="CA certificate; enables TLS to the server")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="client certificate's private key (mutual TLS)")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline per call in seconds")


def read_credential(args: argparse.Namespace) -> str | None:
    """The API key: --credential-file (or its environment variable), else $AUTHSVC_CREDENTIAL."""
    path = getattr(args, "credential_file", None)
    if path:
        try:
            mode = stat.S_IMODE(Path(path).stat().st_mode)
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise CliError(f"{path}: cannot read the credential ({exc.strerror})", EXIT_USAGE) from None
        if mode & 0o077:
            print(
                f"authsvc: warning: {path} is readable by others (mode {mode:o}); chmod 600 it",
                file=sys.stderr,
            )
        return key
    return os.environ.get(CREDENTIAL_ENV, "").strip() or None


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <key>` to every call of the channel."""

    def __init__(self, key: str) -> None:
        self.header = ("authorization", f"Bearer {key}")

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self.header])

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


@contextmanager
def channel(args: argparse.Namespace) -> Iterator[grpc.Channel]:
    opts = [("grpc.max_send_message_length", 32 * 1024 * 1024)]
    if args.tls_ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=args.tls_ca.read_bytes(),
            private_key=args.tls_key.read_bytes() if args.tls_key else None,
            certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
        )
        ch = grpc.secure_channel(args.server, creds, options=opts)
    else:
        ch = grpc.insecure_channel(args.server, options=opts)
    key = read_credential(args)
    with ch:
        yield grpc.intercept_channel(ch, _Bearer(key)) if key else ch


def error_info(err: grpc.RpcError) -> tuple[str, list[str]]:
    """-> (the ErrorInfo reason, the fields BadRequest names) of a refusal; ("", []) without."""
    status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    reason, fields = "", []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return reason, fields


def describe_rpc_error(err: grpc.RpcError) -> tuple[str, int]:
    """A one-line message naming the problem (and field), and the exit code for it."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    reason = ""
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                message = "; ".join(f"{v.field}: {v.description}" for v in bad.field_violations) or message
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
    exit_code = {
        grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
        grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
        grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
        grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    }.get(code, EXIT_ERROR)
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach the service ({message}); is `authsvc serve` running?"
    if code == grpc.StatusCode.UNAUTHENTICATED and not reason.startswith("ASSERTION"):
        message += f" (set ${CREDENTIAL_ENV}, ${CREDENTIAL_FILE_ENV} or --credential-file)"
    return f"{code.name}: {message}", exit_code


def fail(message: str) -> None:
    print(f"authsvc: error: {message}", file=sys.stderr)


def interactive() -> bool:
    """Whether a person can be asked: stdin is a terminal."""
    return sys.stdin.isatty()


def confirm(args, what: str) -> bool:
    """Whether a destructive command may go on: --yes, or a yes at the terminal. Off a terminal
    without --yes it is a usage error (exit 2): a script must say so, never be asked. The
    question goes to stderr, so stdout stays the command's result."""
    if getattr(args, "yes", False):
        return True
    if not interactive():
        raise CliError(f"{what} needs --yes when not asked on a terminal", EXIT_USAGE)
    print(f"{what}? [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    fail("not done")
    return False


def add_yes_arg(parser: argparse.ArgumentParser, what: str = "do not ask for confirmation") -> None:
    parser.add_argument("--yes", "-y", action="store_true", help=f"{what} (needed off a terminal)")


def read_value(value: str, what: str) -> str:
    """A secret-ish value given as `-` (one line of stdin) or as itself; stripped."""
    text = sys.stdin.readline() if value == "-" else value
    text = text.strip()
    if not text:
        raise CliError(f"{what}: empty", EXIT_USAGE)
    return text


def read_file_value(path: Path, what: str) -> str:
    """A value kept in a file (`-`: stdin), stripped; a file others can read is warned about."""
    if str(path) == "-":
        return read_value("-", what)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"{path}: cannot read {what} ({exc.strerror})", EXIT_USAGE) from None
    if mode & 0o077:
        print(
            f"authsvc: warning: {path} is readable by others (mode {mode:o}); chmod 600 it", file=sys.stderr
        )
    if not text:
        raise CliError(f"{path}: no {what} in it", EXIT_USAGE)
    return text
