"""Operator commands: enroll, verify and customers, as gRPC clients of a running service."""

from __future__ import annotations

import argparse
import sys
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


def _outcome_name(value: int) -> str:
    return verification_pb2.Outcome.Name(value).removeprefix("OUTCOME_")


def _customer_lines(c: enrollment_pb2.Customer) -> list[str]:
    lines = [f"{c.tenant}/{c.customer_id}"]
    for t in c.templates:
        modality = common_pb2.Modality.Name(t.modality).removeprefix("MODALITY_").lower()
        lines.append(
            f"  {modality}: {t.sample_count} sample(s), encoder {t.encoder_id} ({t.encoder_version})"
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
                audio, rate = file_to_wire(path)
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
        audio, rate = file_to_wire(args.file, encoding, rate)
    except InvalidInput as exc:
        raise CliError(exc.description, EXIT_INVALID) from None
    final = None
    with channel(args) as ch:
        stub = verification_pb2_grpc.VerificationServiceStub(ch)
        for decision in stub.Verify(_verify_requests(args, audio, encoding, rate), timeout=args.timeout):
            if args.verbose:
                print(f"  #{decision.sequence} {_outcome_name(decision.outcome)}: {decision.reason}")
            final = decision
    if final is None:
        raise CliError("the service sent no decision", EXIT_NEGATIVE)
    outcome = _outcome_name(final.outcome)
    print(f"decision: {outcome}")
    for e in final.evidence:
        print(f"score: {e.score:.4f}\nthreshold: {e.threshold:.4f} (target FAR {e.target_far:g})")
        print(f"encoder: {e.encoder_id} ({e.encoder_version}), {e.enrolled_samples} enrolled sample(s)")
    print(f"net speech: {final.net_speech_seconds:.2f} s")
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


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path
