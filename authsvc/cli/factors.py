"""`authsvc factors ...`: a customer's second factors (StepUpService), as a gRPC client.

    factors totp enroll            a new TOTP secret: its otpauth:// URI (and a QR code on a terminal)
    factors totp confirm --code    the first code from the authenticator app makes the factor usable
    factors code-destination set   where one-time codes (SMS, e-mail) are sent

The provisioning URI holds the TOTP secret: it is what `totp enroll` exists to show, so it goes
to stdout (or, with --uri-out, to a new 0600 file) and nowhere else: never to a log, never
into an error message. A QR code is drawn only when stdout is a terminal.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc, enrollment_pb2
from authsvc.cli.client import (
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_client_args,
    channel,
    read_file_value,
)
from authsvc.cli.output import emit, json_mode, note
from authsvc.cli.verify import code_arg


def add_assertion_args(p: argparse.ArgumentParser) -> None:
    """The customer's own authorization of a change (after their enrollment window, or to
    replace what protects them): an assertion from a call that authenticated them."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--assertion", default="", metavar="TOKEN", help="an assertion of this customer ('-': stdin)"
    )
    g.add_argument(
        "--assertion-file", type=Path, metavar="FILE", help="a file holding it (`verify --assertion-out`)"
    )


def authorization(args: argparse.Namespace) -> enrollment_pb2.ChangeAuthorization:
    if getattr(args, "assertion_file", None):
        return enrollment_pb2.ChangeAuthorization(
            assertion=read_file_value(args.assertion_file, "the assertion")
        )
    token = getattr(args, "assertion", "") or ""
    if token == "-":
        token = sys.stdin.readline().strip()
    return enrollment_pb2.ChangeAuthorization(assertion=token)


def qr_code(text: str) -> str:
    """`text` as a QR code of terminal characters (two modules per character cell)."""
    import qrcode

    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(text)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue().rstrip("\n")


def totp_enroll(args: argparse.Namespace) -> int:
    if args.uri_out and args.uri_out.exists():
        raise CliError(
            f"{args.uri_out} exists; choose another file (secrets are never overwritten)", EXIT_USAGE
        )
    with channel(args) as ch:
        reply = assurance_pb2_grpc.StepUpServiceStub(ch).EnrollTotp(
            assurance_pb2.EnrollTotpRequest(
                tenant=args.tenant,
                customer_id=args.customer,
                account_name=args.account_name,
                issuer=args.issuer,
                authorization=authorization(args),
            ),
            timeout=args.timeout,
        )
    uri = reply.provisioning_uri
    confirm = f"authsvc factors totp confirm --tenant {args.tenant} --customer {args.customer} --code CODE"
    if args.uri_out:
        from authsvc.cli.identity import write_secret_file

        write_secret_file(args.uri_out, uri + "\n")
        emit(
            args,
            {
                "tenant": args.tenant,
                "customer_id": args.customer,
                "confirmed": False,
                "uri_file": str(args.uri_out),
            },
            f"provisioning URI written to {args.uri_out} (mode 0600); then: {confirm}",
        )
        return EXIT_OK
    doc = {"tenant": args.tenant, "customer_id": args.customer, "confirmed": False, "provisioning_uri": uri}
    if sys.stdout.isatty() and not args.no_qr and not json_mode(args):
        print(qr_code(uri))
        note(f"scan it with the customer's authenticator app, then: {confirm}")
    emit(args, doc, uri)
    return EXIT_OK


def totp_confirm(args: argparse.Namespace) -> int:
    code = args.code
    if code == "-" or args.code_file:
        raw = read_file_value(args.code_file or Path("-"), "the TOTP code")
        try:
            code = code_arg(raw)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"the TOTP code: {exc}", EXIT_USAGE) from None
    if not code:
        raise CliError("give --code CODE (or --code -, --code-file FILE)", EXIT_USAGE)
    with channel(args) as ch:
        ok = (
            assurance_pb2_grpc.StepUpServiceStub(ch)
            .ConfirmTotp(
                assurance_pb2.ConfirmTotpRequest(tenant=args.tenant, customer_id=args.customer, code=code),
                timeout=args.timeout,
            )
            .confirmed
        )
    who = f"{args.tenant}/{args.customer}"
    emit(
        args,
        {"tenant": args.tenant, "customer_id": args.customer, "confirmed": ok},
        f"{who}: TOTP confirmed; it answers step-ups from now on" if ok else None,
    )
    if not ok:
        note(
            f"authsvc: {who}: the code does not match the new secret (a code is used once; wait for the next)"
        )
    return EXIT_OK if ok else EXIT_NEGATIVE


def set_destination(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        assurance_pb2_grpc.StepUpServiceStub(ch).SetCodeDestination(
            assurance_pb2.SetCodeDestinationRequest(
                tenant=args.tenant,
                customer_id=args.customer,
                destination=args.destination,
                authorization=authorization(args),
            ),
            timeout=args.timeout,
        )
    kind = "e-mail address" if "@" in args.destination else "phone number"
    emit(
        args,
        {"tenant": args.tenant, "customer_id": args.customer, "destination": args.destination},
        f"{args.tenant}/{args.customer}: one-time codes go to the {kind} {args.destination}",
    )
    return EXIT_OK


def _confirm_code(value: str) -> str:
    return value if value == "-" else code_arg(value)


def add_factor_commands(sub: argparse._SubParsersAction) -> None:
    factors = sub.add_parser(
        "factors", help="a customer's second factors: TOTP, the one-time code destination"
    ).add_subparsers(dest="factor", required=True)

    def customer(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", required=True)
        p.add_argument("--customer", required=True)

    totp = factors.add_parser("totp", help="an authenticator app (RFC 6238)").add_subparsers(
        dest="action", required=True
    )
    p = totp.add_parser(
        "enroll", help="a new TOTP secret: prints its otpauth:// URI (a QR code on a terminal)"
    )
    customer(p)
    p.add_argument("--account-name", default="", help="shown in the app (default: the customer id)")
    p.add_argument("--issuer", default="", help="shown in the app, e.g. the bank's name (default authsvc)")
    p.add_argument(
        "--uri-out", type=Path, metavar="FILE", help="write the URI to this new file (0600) instead"
    )
    p.add_argument("--no-qr", action="store_true", help="print only the URI, even on a terminal")
    add_assertion_args(p)
    add_client_args(p)
    p.set_defaults(func=totp_enroll)

    p = totp.add_parser("confirm", help="confirm the new secret with a code from the app (exit 1: no match)")
    customer(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--code", type=_confirm_code, help="the code the app shows ('-': read it from stdin)")
    g.add_argument("--code-file", type=Path, metavar="FILE", help="a file holding the code")
    add_client_args(p)
    p.set_defaults(func=totp_confirm)

    dest = factors.add_parser("code-destination", help="where one-time codes are sent").add_subparsers(
        dest="action", required=True
    )
    p = dest.add_parser("set", help="the customer's phone number (SMS) or e-mail address")
    customer(p)
    p.add_argument(
        "--destination", required=True, help="e.g. +4930123456 or a@example.com (e-mail gives no AAL)"
    )
    add_assertion_args(p)
    add_client_args(p)
    p.set_defaults(func=set_destination)
