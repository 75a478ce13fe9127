"""Operator commands: register and enroll customers, as gRPC clients of a running service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from tqdm import tqdm

from authsvc.api.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc
from authsvc.cli.client import (
    EXIT_INVALID,
    EXIT_NEGATIVE,
    EXIT_OK,
    CliError,
    channel,
    confirm,
    describe_rpc_error,
)
from authsvc.cli.output import customer_doc, customer_lines, emit, json_mode
from authsvc.errors import InvalidInput

METHODS = {
    common_pb2.AuthMethod.Name(v).removeprefix("AUTH_METHOD_").lower(): v
    for v in common_pb2.AuthMethod.values()
    if v
}


def methods_arg(value: str) -> list[int]:
    """--methods voice,totp: known method names, comma-separated (a usage error otherwise)."""
    names = [m.strip().lower() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}; use {', '.join(METHODS)}")
    return [METHODS[m] for m in dict.fromkeys(names)]


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


def enroll_voice(args: argparse.Namespace) -> int:
    from authsvc.cli.audio_files import file_to_wire  # scipy: only for commands that read audio

    results: list[dict] = []
    added = failures = 0
    # Progress only for a person watching (stderr a terminal), never into a log or a pipe.
    quiet_bar = len(args.files) < 2 or args.quiet or not sys.stderr.isatty()

    def say(text: str) -> None:
        if not args.quiet and not json_mode(args):
            tqdm.write(text, file=sys.stdout)

    def failed(path: Path, message: str) -> None:
        nonlocal failures
        failures += 1
        results.append({"file": str(path), "added": False, "error": message})
        tqdm.write(f"authsvc: error: {message}", file=sys.stderr)

    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        for path in tqdm(args.files, desc="enrolling", unit="file", disable=quiet_bar):
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
                failed(path, exc.description)
                continue
            except grpc.RpcError as err:
                message, code = describe_rpc_error(err)
                if code != EXIT_INVALID:
                    raise CliError(message, code) from None
                failed(path, f"{path}: {message}")
                continue
            added += reply.added
            results.append(
                {
                    "file": str(path),
                    "added": reply.added,
                    "net_speech_seconds": round(reply.net_speech_seconds, 2),
                    "same_voice_customers": reply.same_voice_customers,
                }
            )
            state = "added" if reply.added else "already enrolled"
            say(f"{path}: {state} ({reply.net_speech_seconds:.1f} s net speech)")
    already = len(args.files) - added - failures
    emit(
        args,
        {"files": results, "added": added, "already_enrolled": already, "failed": failures},
        f"{added} sample(s) added, {already} already enrolled, {failures} failed",
    )
    return EXIT_NEGATIVE if failures else EXIT_OK


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
    emit(
        args,
        {"added": added, "already_enrolled": already, "customer": customer_doc(reply.customer)},
        [f"{added} sample(s) added, {already} already enrolled", *customer_lines(reply.customer)],
    )
    return EXIT_OK


def register(args: argparse.Namespace) -> int:
    from authsvc.cli.factors import authorization

    request = enrollment_pb2.RegisterCustomerRequest(
        tenant=args.tenant,
        customer_id=args.customer,
        methods=args.methods,
        opt_out_biometrics=args.opt_out,
        consent_text_version=args.consent_version,
        confirm_template_removal=args.yes,
        authorization=authorization(args),
    )
    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        try:
            reply = stub.RegisterCustomer(request, timeout=args.timeout)
        except grpc.RpcError as err:
            # The service says how many templates the registration would erase: a destructive
            # change, confirmed like every other (--yes, or a yes at the terminal).
            removal = err.code() == grpc.StatusCode.FAILED_PRECONDITION and "--yes" in (err.details() or "")
            if not removal or args.yes:
                raise
            if not confirm(args, f"{err.details()}; erase them"):
                return EXIT_NEGATIVE
            request.confirm_template_removal = True
            reply = stub.RegisterCustomer(request, timeout=args.timeout)
    removed = (
        [f"{reply.templates_removed} template(s) of dropped methods erased"]
        if reply.templates_removed
        else []
    )
    emit(
        args,
        {"customer": customer_doc(reply.customer), "templates_removed": reply.templates_removed},
        [*customer_lines(reply.customer), *removed],
    )
    return EXIT_OK
