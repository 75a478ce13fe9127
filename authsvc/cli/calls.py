"""`authsvc calls ...`: live calls by their id (claim, watch, enroll from a call), as a gRPC client."""

from __future__ import annotations

import argparse

from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc, verification_pb2, verification_pb2_grpc
from authsvc.cli.client import EXIT_NEGATIVE, EXIT_OK, add_client_args, channel
from authsvc.cli.operator import outcome_name


def _line(d: verification_pb2.Decision) -> str:
    risks = "".join(
        f"; {r.detector} risk {verification_pb2.RiskLevel.Name(r.level).removeprefix('RISK_LEVEL_').lower()}"
        for r in d.fraud.risks
        if r.level == verification_pb2.RISK_LEVEL_HIGH
    )
    final = " (final)" if d.final else ""
    speech = f"{d.net_speech_seconds:.1f} s speech"
    return f"#{d.sequence} {outcome_name(d.outcome)}{final}: {speech}; {d.reason}{risks}"


def run(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        if args.action == "watch":
            stub = verification_pb2_grpc.VerificationServiceStub(ch)
            last = None
            for d in stub.WatchSession(
                verification_pb2.WatchSessionRequest(tenant=args.tenant, session_id=args.call),
                timeout=args.timeout,
            ):
                print(_line(d), flush=True)
                last = d
            return (
                EXIT_OK
                if last is not None and last.outcome == verification_pb2.OUTCOME_AUTHENTICATED
                else EXIT_NEGATIVE
            )
        if args.action == "claim":
            reply = verification_pb2_grpc.VerificationServiceStub(ch).ClaimIdentity(
                verification_pb2.ClaimIdentityRequest(
                    tenant=args.tenant, session_id=args.call, customer_id=args.customer
                ),
                timeout=args.timeout,
            )
            print(_line(reply.decision))
            return EXIT_OK
        reply = enrollment_pb2_grpc.EnrollmentServiceStub(ch).EnrollFromSession(
            enrollment_pb2.EnrollFromSessionRequest(
                tenant=args.tenant,
                session_id=args.call,
                customer_id=args.customer or "",
                override_voice_mismatch=args.override_voice_mismatch,
            ),
            timeout=args.timeout,
        )
        v = reply.voice_enrollment
        state = (
            "voiceprint complete"
            if v.complete
            else f"{v.net_speech_seconds:.1f} s of {v.required_net_speech_seconds:g} s from {v.calls} call(s)"
        )
        added = "enrolled" if reply.added else "already enrolled"
        print(f"{added}: {reply.call_net_speech_seconds:.1f} s of net speech; {state}")
    return EXIT_OK


def add_calls_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("calls", help="live calls by their id: watch, claim, enroll").add_subparsers(
        dest="action", required=True
    )
    p = c.add_parser("watch", help="print a live call's decisions until it ends (exit 0: authenticated)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--call", required=True, help="the call's id (session_id, conversationId, CallSid, UUID)")
    add_client_args(p)
    p.set_defaults(func=run)
    p = c.add_parser("claim", help="name a live call's customer: it is scored at once on what was heard")
    p.add_argument("--tenant", required=True)
    p.add_argument("--call", required=True)
    p.add_argument("--customer", required=True)
    add_client_args(p)
    p.set_defaults(func=run)
    p = c.add_parser("enroll", help="enroll a live call's voice (after verifying the caller otherwise)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--call", required=True)
    p.add_argument("--customer", help="the customer, when the call has none claimed yet")
    p.add_argument(
        "--override-voice-mismatch",
        action="store_true",
        help="enroll a voice that does not match the customer's (tenant-admin; audited)",
    )
    add_client_args(p)
    p.set_defaults(func=run)
