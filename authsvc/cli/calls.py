"""`authsvc sessions ...` (also `calls`): live calls by their id (watch, claim, enroll from a
call), as a gRPC client. A session is a call's Verify stream or a media bridge's call; its id
is the stream's session_id (the bridge's conversationId, CallSid or UUID)."""

from __future__ import annotations

import argparse

from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc, verification_pb2, verification_pb2_grpc
from authsvc.cli.client import EXIT_NEGATIVE, EXIT_OK, add_client_args, channel
from authsvc.cli.output import decision_doc, decision_line, emit, emit_record


def watch(args: argparse.Namespace) -> int:
    """The decision stream of a live call: one line (JSON Lines with --output json) each."""
    last = None
    with channel(args) as ch:
        for d in verification_pb2_grpc.VerificationServiceStub(ch).WatchSession(
            verification_pb2.WatchSessionRequest(tenant=args.tenant, session_id=args.session),
            timeout=args.timeout,
        ):
            emit_record(args, decision_doc(d), decision_line(d))
            last = d
    authenticated = last is not None and last.outcome == verification_pb2.OUTCOME_AUTHENTICATED
    return EXIT_OK if authenticated else EXIT_NEGATIVE


def claim(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        reply = verification_pb2_grpc.VerificationServiceStub(ch).ClaimIdentity(
            verification_pb2.ClaimIdentityRequest(
                tenant=args.tenant, session_id=args.session, customer_id=args.customer
            ),
            timeout=args.timeout,
        )
    emit(args, {"decision": decision_doc(reply.decision)}, decision_line(reply.decision))
    return EXIT_OK


def enroll(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        reply = enrollment_pb2_grpc.EnrollmentServiceStub(ch).EnrollFromSession(
            enrollment_pb2.EnrollFromSessionRequest(
                tenant=args.tenant,
                session_id=args.session,
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
    emit(
        args,
        {
            "added": reply.added,
            "call_net_speech_seconds": round(reply.call_net_speech_seconds, 2),
            "voice_enrollment": {
                "complete": v.complete,
                "net_speech_seconds": round(v.net_speech_seconds, 2),
                "required_net_speech_seconds": v.required_net_speech_seconds,
                "calls": v.calls,
            },
            "same_voice_customers": reply.same_voice_customers,
        },
        f"{added}: {reply.call_net_speech_seconds:.1f} s of net speech; {state}",
    )
    return EXIT_OK


def add_calls_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "sessions", aliases=["calls"], help="live calls by their id: watch, claim, enroll"
    ).add_subparsers(dest="action", required=True)

    def session(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", required=True)
        p.add_argument(
            "--session",
            "--call",
            dest="session",
            required=True,
            help="the call's id (its session_id: conversationId, CallSid, UUID)",
        )

    p = c.add_parser("watch", help="print a live call's decisions until it ends (exit 0: authenticated)")
    session(p)
    add_client_args(p)
    # A call lasts minutes; the watch's deadline is an hour unless --timeout says otherwise.
    p.set_defaults(func=watch, timeout=3600.0)
    p = c.add_parser("claim", help="name a live call's customer: it is scored at once on what was heard")
    session(p)
    p.add_argument("--customer", required=True)
    add_client_args(p)
    p.set_defaults(func=claim)
    p = c.add_parser("enroll", help="enroll a live call's voice (after verifying the caller otherwise)")
    session(p)
    p.add_argument("--customer", help="the customer, when the call has none claimed yet")
    p.add_argument(
        "--override-voice-mismatch",
        action="store_true",
        help="enroll a voice that does not match the customer's (tenant-admin; audited)",
    )
    add_client_args(p)
    p.set_defaults(func=enroll)
