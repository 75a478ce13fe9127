"""Operator commands: enroll, verify and customers, as gRPC clients of a running service."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from tqdm import tqdm

from authsvc.api.v1 import (
    common_pb2,
    enrollment_pb2,
    enrollment_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from authsvc.audio.codecs import Encoding
from authsvc.cli.client import (
    EXIT_INVALID,
    EXIT_NEGATIVE,
    EXIT_OK,
    CliError,
    channel,
    describe_rpc_error,
    fail,
)
from authsvc.errors import InvalidInput

WIRE = {"pcm16": Encoding.PCM16_LE, "mulaw": Encoding.MULAW, "alaw": Encoding.ALAW}
PB_ENCODING = {
    Encoding.PCM16_LE: common_pb2.AUDIO_ENCODING_PCM16_LE,
    Encoding.MULAW: common_pb2.AUDIO_ENCODING_MULAW,
    Encoding.ALAW: common_pb2.AUDIO_ENCODING_ALAW,
}


def outcome_name(value: int) -> str:
    return verification_pb2.Outcome.Name(value).removeprefix("OUTCOME_")


def _customer_lines(c: enrollment_pb2.Customer) -> list[str]:
    lines = [f"{c.tenant}/{c.customer_id}"]
    if c.HasField("consent"):
        chosen = ", ".join(
            common_pb2.AuthMethod.Name(m).removeprefix("AUTH_METHOD_").lower() for m in c.methods
        )
        state = "opted out of biometrics" if c.opted_out else f"methods: {chosen or 'none'}"
        lines.append(f"  {state}; consent text {c.consent.text_version}")
    if c.factors:
        names = ", ".join(
            common_pb2.SecondFactor.Name(f).removeprefix("SECOND_FACTOR_").lower() for f in c.factors
        )
        lines.append(f"  second factors: {names}")
    for t in c.templates:
        modality = common_pb2.Modality.Name(t.modality).removeprefix("MODALITY_").lower()
        lines.append(
            f"  {modality}: {t.sample_count} sample(s), encoder {t.encoder_id} ({t.encoder_version})"
        )
    v = c.voice_enrollment
    if not v.complete and v.calls:
        have, need = v.net_speech_seconds, v.required_net_speech_seconds
        lines.append(
            f"  voice enrollment from calls: {have:.1f} s of {need:g} s net speech ({v.calls} call(s)); "
            f"{max(0.0, need - have):.1f} s to go"
        )
    return lines


def enroll_voice(args: argparse.Namespace) -> int:
    from authsvc.cli.audio_files import file_to_wire  # scipy: only for commands that read audio

    failures = 0
    added = 0
    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        for path in tqdm(
            args.files, desc="enrolling", unit="file", disable=len(args.files) < 2 or args.quiet
        ):
            try:
                audio, rate = file_to_wire(path, channel=args.channel)
                reply = stub.EnrollVoice(
                    enrollment_pb2.EnrollVoiceRequest(
                        tenant=args.tenant,
                        customer_id=args.customer,
                        format=common_pb2.AudioFormat(
                            encoding=common_pb2.AUDIO_ENCODING_PCM16_LE, sample_rate_hz=rate
                        ),
                        audio=audio,
                        label=path.name,
                    ),
                    timeout=args.timeout,
                )
            except InvalidInput as exc:
                failures += 1
                tqdm.write(f"authsvc: error: {exc.description}", file=sys.stderr)
                continue
            except grpc.RpcError as err:
                message, code = describe_rpc_error(err)
                if code not in (EXIT_INVALID,):
                    raise CliError(message, code) from None
                failures += 1
                tqdm.write(f"authsvc: error: {path}: {message}", file=sys.stderr)
                continue
            added += reply.added
            if not args.quiet:
                state = "added" if reply.added else "already enrolled"
                tqdm.write(f"{path}: {state} ({reply.net_speech_seconds:.1f} s net speech)")
    print(
        f"{added} sample(s) added, {len(args.files) - added - failures} already enrolled, {failures} failed"
    )
    return EXIT_NEGATIVE if failures else EXIT_OK


def _verify_requests(args: argparse.Namespace, audio: bytes, encoding: Encoding, rate: int) -> Iterator:
    yield verification_pb2.VerifyRequest(
        start=verification_pb2.SessionStart(
            tenant=args.tenant,
            customer_id=args.customer,
            channel=common_pb2.CHANNEL_VOICE,
            audio_format=common_pb2.AudioFormat(encoding=PB_ENCODING[encoding], sample_rate_hz=rate),
            session_id=f"cli:{args.file.name}",
        )
    )
    step = rate * args.chunk_ms // 1000 * encoding.bytes_per_sample
    for i in range(0, len(audio), step):
        yield verification_pb2.VerifyRequest(audio=verification_pb2.AudioChunk(data=audio[i : i + step]))


def verify_voice(args: argparse.Namespace) -> int:
    from authsvc.cli.audio_files import file_to_wire

    encoding = WIRE[args.encoding]
    rate = args.rate or (8000 if encoding is not Encoding.PCM16_LE else None)
    try:
        audio, rate = file_to_wire(args.file, encoding, rate, args.channel)
    except InvalidInput as exc:
        raise CliError(exc.description, EXIT_INVALID) from None
    final = None
    with channel(args) as ch:
        stub = verification_pb2_grpc.VerificationServiceStub(ch)
        for decision in stub.Verify(_verify_requests(args, audio, encoding, rate), timeout=args.timeout):
            if args.verbose:
                print(f"  #{decision.sequence} {outcome_name(decision.outcome)}: {decision.reason}")
            final = decision
    if final is None:
        raise CliError("the service sent no decision", EXIT_NEGATIVE)
    outcome = outcome_name(final.outcome)
    print(f"decision: {outcome}")
    for e in final.evidence:
        print(f"score: {e.score:.4f}\nthreshold: {e.threshold:.4f} (FAR {e.target_far:.3g} per look)")
        print(f"encoder: {e.encoder_id} ({e.encoder_version}), {e.enrolled_samples} enrolled sample(s)")
    print(f"net speech: {final.net_speech_seconds:.2f} s")
    for r in final.fraud.risks:
        level = verification_pb2.RiskLevel.Name(r.level).removeprefix("RISK_LEVEL_").lower()
        print(f"fraud {r.detector}: {level} ({r.reason})")
    if final.reason:
        print(f"reason: {final.reason}")
    return EXIT_OK if final.outcome == verification_pb2.OUTCOME_AUTHENTICATED else EXIT_NEGATIVE


def customers(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        if args.action == "list":
            token = ""
            while True:
                page = stub.ListCustomers(
                    enrollment_pb2.ListCustomersRequest(tenant=args.tenant, page_token=token),
                    timeout=args.timeout,
                )
                for c in page.customers:
                    samples = sum(t.sample_count for t in c.templates)
                    print(f"{c.customer_id}\t{samples} sample(s)")
                token = page.next_page_token
                if not token:
                    return EXIT_OK
        if args.action == "show":
            c = stub.GetCustomer(
                enrollment_pb2.GetCustomerRequest(tenant=args.tenant, customer_id=args.customer),
                timeout=args.timeout,
            )
            print("\n".join(_customer_lines(c)))
            return EXIT_OK
        if args.action == "unlock":
            cleared = stub.UnlockCustomer(
                enrollment_pb2.UnlockCustomerRequest(tenant=args.tenant, customer_id=args.customer),
                timeout=args.timeout,
            ).factors
            print(f"{args.tenant}/{args.customer}: {'unlocked' if cleared else 'was not locked'}")
            return EXIT_OK
        if not args.yes and sys.stdin.isatty():
            answer = input(f"erase {args.tenant}/{args.customer} and all their templates? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                fail("not deleted")
                return EXIT_NEGATIVE
        reply = stub.DeleteCustomer(
            enrollment_pb2.DeleteCustomerRequest(tenant=args.tenant, customer_id=args.customer),
            timeout=args.timeout,
        )
        print(f"deleted {args.tenant}/{args.customer} ({reply.templates_deleted} template(s))")
        return EXIT_OK


def enroll_keystrokes(args: argparse.Namespace) -> int:
    from authsvc import keystroke

    try:
        samples = keystroke.load_keystroke_file(args.file)
    except InvalidInput as exc:
        raise CliError(f"{args.file}: {exc}", EXIT_INVALID) from None
    kinds = {
        "fixed": common_pb2.KEYSTROKE_KIND_FIXED_TEXT,
        "free": common_pb2.KEYSTROKE_KIND_FREE_TEXT,
        "dtmf": common_pb2.KEYSTROKE_KIND_DTMF,
    }
    wire = [
        common_pb2.KeystrokeSample(
            kind=kinds[s.kind],
            profile=args.profile,
            text=s.text or "",
            events=[common_pb2.KeyEvent(key=e.key, down_s=e.press, up_s=e.release) for e in s.events],
        )
        for s in samples
    ]
    added = already = 0
    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        # The service takes a bounded number of samples per request.
        for i in range(0, len(wire), keystroke.MAX_ENROLL_SAMPLES):
            request = enrollment_pb2.EnrollKeystrokesRequest(
                tenant=args.tenant,
                customer_id=args.customer,
                samples=wire[i : i + keystroke.MAX_ENROLL_SAMPLES],
            )
            reply = stub.EnrollKeystrokes(request, timeout=args.timeout)
            added, already = added + reply.samples_added, already + reply.samples_already_enrolled
    print(f"{added} sample(s) added, {already} already enrolled")
    print("\n".join(_customer_lines(reply.customer)))
    return EXIT_OK


def register(args: argparse.Namespace) -> int:
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    by_name = {
        common_pb2.AuthMethod.Name(v).removeprefix("AUTH_METHOD_").lower(): v
        for v in common_pb2.AuthMethod.values()
        if v
    }
    unknown = [m for m in names if m not in by_name]
    if unknown:
        raise CliError(f"unknown method {unknown[0]!r}; use {', '.join(by_name)}", EXIT_INVALID)
    request = enrollment_pb2.RegisterCustomerRequest(
        tenant=args.tenant,
        customer_id=args.customer,
        methods=[by_name[m] for m in names],
        opt_out_biometrics=args.opt_out,
        consent_text_version=args.consent_version,
        confirm_template_removal=args.yes,
        authorization=enrollment_pb2.ChangeAuthorization(assertion=args.assertion),
    )
    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        try:
            reply = stub.RegisterCustomer(request, timeout=args.timeout)
        except grpc.RpcError as err:
            # The service says how many templates the registration would erase; ask once.
            removal = err.code() == grpc.StatusCode.FAILED_PRECONDITION and "--yes" in (err.details() or "")
            if not (removal and not args.yes and sys.stdin.isatty()):
                raise
            answer = input(f"{err.details()}\nerase them? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                fail("not registered")
                return EXIT_NEGATIVE
            request.confirm_template_removal = True
            reply = stub.RegisterCustomer(request, timeout=args.timeout)
    print("\n".join(_customer_lines(reply.customer)))
    if reply.templates_removed:
        print(f"{reply.templates_removed} template(s) of dropped methods erased")
    return EXIT_OK


def audit(args: argparse.Namespace) -> int:
    from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc

    with channel(args) as ch:
        page = assurance_pb2_grpc.AuditServiceStub(ch).ListAuditEvents(
            assurance_pb2.ListAuditEventsRequest(
                tenant=args.tenant, customer_id=args.customer, page_size=args.limit
            ),
            timeout=args.timeout,
        )
    for e in page.events:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.time_unix_ms / 1000))
        print(f"{when}\t{e.action}\t{e.customer_id or '-'}\t{e.outcome}\t{e.actor}\t{e.details}")
    return EXIT_OK


def audit_verify(args: argparse.Namespace) -> int:
    from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc

    with channel(args) as ch:
        r = assurance_pb2_grpc.AuditServiceStub(ch).VerifyAuditChain(
            assurance_pb2.VerifyAuditChainRequest(tenant=args.tenant), timeout=args.timeout
        )
    if r.intact:
        print(f"{args.tenant}: audit chain intact, {r.rows_checked} row(s); head {r.head_hash or '-'}")
        return EXIT_OK
    fail(f"{args.tenant}: audit chain broken at row {r.first_bad_id}: {r.problem} ({r.rows_checked} checked)")
    return EXIT_NEGATIVE


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path
