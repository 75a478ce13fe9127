"""`authsvc verify voice | keystrokes`: one Verify stream, as a call or a web/chat channel sends
it, answering a step-up (STEP_UP_REQUIRED) inside the stream.

The service handles a stream's messages in order, so an answer sent after the evidence is
checked against the decision made on all of it. With a code given up front (`--totp-code`,
`--code-file`, `--send-code`) the answer follows the evidence at once: nothing is timed. On a
terminal without one, the command waits until the service has gone quiet on the evidence
(QUIET_S without a new decision) and asks for the code only when the service asks for one
(getpass: the code is never echoed). Off a terminal without a code nothing is asked: the call
ends STEP_UP_REQUIRED, exit 1, and stderr says which code is needed.

An AUTHENTICATED decision carries an assertion; its token is a bearer credential of the
customer on the tenant's other channels, so it is never printed: `--assertion-out FILE`
writes it to a new file (mode 0600) for `authsvc assertions validate --token-file FILE`.
"""

from __future__ import annotations

import argparse
import getpass
import queue
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from authsvc.api.v1 import common_pb2, verification_pb2, verification_pb2_grpc
from authsvc.audio.codecs import Encoding
from authsvc.cli.client import (
    EXIT_INVALID,
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    channel,
    fail,
    interactive,
    read_file_value,
)
from authsvc.cli.output import (
    assertion_text,
    decision_doc,
    decision_line,
    emit,
    emit_record,
    factor_name,
    json_mode,
    note,
    outcome_name,
    risk_name,
)
from authsvc.errors import InvalidInput

WIRE = {"pcm16": Encoding.PCM16_LE, "mulaw": Encoding.MULAW, "alaw": Encoding.ALAW}
PB_ENCODING = {
    Encoding.PCM16_LE: common_pb2.AUDIO_ENCODING_PCM16_LE,
    Encoding.MULAW: common_pb2.AUDIO_ENCODING_MULAW,
    Encoding.ALAW: common_pb2.AUDIO_ENCODING_ALAW,
}
SESSION_CHANNELS = {
    "web": common_pb2.CHANNEL_WEB,
    "chat": common_pb2.CHANNEL_CHAT,
    "app": common_pb2.CHANNEL_APP,
}
KINDS = {
    "fixed": common_pb2.KEYSTROKE_KIND_FIXED_TEXT,
    "free": common_pb2.KEYSTROKE_KIND_FREE_TEXT,
    "dtmf": common_pb2.KEYSTROKE_KIND_DTMF,
}
TOTP = common_pb2.SECOND_FACTOR_TOTP
ONE_TIME_CODE = common_pb2.SECOND_FACTOR_ONE_TIME_CODE
STEP_UP = verification_pb2.OUTCOME_STEP_UP_REQUIRED
# On a terminal: how long the service must be silent before the last decision counts as its
# decision on all the evidence, and how many codes a person may try in one call.
QUIET_S = 2.0
MAX_PROMPTS = 3
_CODE = re.compile(r"[0-9]{6,8}")


def code_arg(value: str) -> str:
    """A second-factor code: 6 to 8 digits (spaces ignored)."""
    code = "".join(value.split())
    if not _CODE.fullmatch(code):
        raise argparse.ArgumentTypeError("a code is 6 to 8 digits")
    return code


def add_step_up_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("second factor (when the service answers STEP_UP_REQUIRED)")
    codes = g.add_mutually_exclusive_group()
    codes.add_argument("--totp-code", type=code_arg, metavar="CODE", help="the customer's current TOTP code")
    codes.add_argument(
        "--code-file",
        type=Path,
        metavar="FILE",
        help="read the code from FILE ('-': a line of stdin), when it is needed: TOTP, or with "
        "--send-code the one-time code sent",
    )
    g.add_argument(
        "--send-code",
        action="store_true",
        help="have the service send a one-time code to the customer's registered phone or e-mail",
    )
    g.add_argument("--no-input", action="store_true", help="never ask for a code, even on a terminal")
    p.add_argument(
        "--assertion-out",
        type=Path,
        metavar="FILE",
        help="write the assertion token of an AUTHENTICATED call to this new file (mode 0600)",
    )
    p.add_argument(
        "--session-id",
        help="the call's id, for `authsvc sessions watch` (default: cli-<random>)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print every decision as it comes")


def _answer(factor: int, code: str) -> verification_pb2.VerifyRequest:
    return verification_pb2.VerifyRequest(step_up=verification_pb2.StepUpAnswer(factor=factor, code=code))


SEND_CODE = verification_pb2.VerifyRequest(send_code=verification_pb2.OneTimeCodeRequest())


class _Stream:
    """A Verify stream whose later messages the command adds while reading its decisions."""

    def __init__(self, args: argparse.Namespace, first, evidence: Iterable) -> None:
        self.args = args
        self.outbox: queue.Queue = queue.Queue()  # messages after the evidence; None half-closes
        self.inbox: queue.Queue = queue.Queue()  # ("decision", d) | ("end", None) | ("error", err)
        self.evidence_sent = threading.Event()
        self.decisions: list[verification_pb2.Decision] = []
        self.asked: list[str] = []  # what the command sent after the evidence
        self._first, self._evidence = first, evidence
        self._ended = False

    def _requests(self) -> Iterator:
        yield self._first
        yield from self._evidence
        self.evidence_sent.set()
        while (item := self.outbox.get()) is not None:
            yield item

    def start(self, ch: grpc.Channel) -> None:
        responses = verification_pb2_grpc.VerificationServiceStub(ch).Verify(
            self._requests(), timeout=self.args.timeout
        )

        def read() -> None:
            try:
                for d in responses:
                    self.inbox.put(("decision", d))
                self.inbox.put(("end", None))
            except grpc.RpcError as err:
                self.inbox.put(("error", err))

        threading.Thread(target=read, name="verify-decisions", daemon=True).start()

    def send(self, request, what: str) -> None:
        self.asked.append(what)
        self.outbox.put(request)

    def next(self, timeout: float | None) -> verification_pb2.Decision | None:
        """The next decision (printed with -v); None at the end of the stream or after `timeout`
        seconds without one. A stream error is raised."""
        if self._ended:
            return None
        try:
            kind, value = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if kind == "error":
            self._ended = True
            raise value
        if kind == "end":
            self._ended = True
            return None
        self.decisions.append(value)
        if self.args.verbose:
            emit_record(self.args, decision_doc(value), f"  {decision_line(value)}")
        return value

    def drain(self) -> None:
        """Half-closes and reads the decisions to the end (the last is final)."""
        self.outbox.put(None)
        while self.next(None) is not None:
            pass

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def last(self) -> verification_pb2.Decision | None:
        return self.decisions[-1] if self.decisions else None


def _settle(stream: _Stream) -> verification_pb2.Decision | None:
    """After the evidence: the latest decision once the service has been quiet for QUIET_S."""
    while not stream.evidence_sent.is_set() and not stream.ended:
        stream.next(0.1)  # decisions (and a refusal) can come before all the evidence is taken
    while stream.next(QUIET_S) is not None:
        pass
    return stream.last


def _prompt(text: str) -> str | None:
    """A code typed at the terminal (not echoed); None when the person gives none."""
    for _ in range(3):
        code = "".join(getpass.getpass(text).split())
        if not code:
            return None
        if _CODE.fullmatch(code):
            return code
        note("a code is 6 to 8 digits")
    return None


def _ask_at_terminal(stream: _Stream, args: argparse.Namespace) -> None:
    decision = _settle(stream)
    for _ in range(MAX_PROMPTS):
        if stream.ended or decision is None or decision.outcome != STEP_UP:
            return
        factors = list(decision.step_up_factors)
        if not factors:
            return
        if TOTP in factors and not args.send_code:
            factor, label = TOTP, "TOTP code from the customer's authenticator app: "
        elif ONE_TIME_CODE in factors:
            if "send_code" not in stream.asked:
                stream.send(SEND_CODE, "send_code")
                stream.next(args.timeout)  # the service's answer: the code is on its way
            factor, label = ONE_TIME_CODE, "one-time code the customer received: "
        else:
            return
        note(f"the service asks for a second factor ({', '.join(factor_name(f) for f in factors)})")
        code = _prompt(label)
        if code is None:
            return
        stream.send(_answer(factor, code), factor_name(factor))
        decision = stream.next(args.timeout)
        if decision is not None and decision.outcome == STEP_UP and decision.reason:
            note(f"not accepted: {decision.reason}")


def _answer_up_front(stream: _Stream, args: argparse.Namespace) -> None:
    if args.totp_code:
        stream.send(_answer(TOTP, args.totp_code), "totp")
        return
    if args.send_code:
        stream.send(SEND_CODE, "send_code")
        if args.code_file is None:  # on a terminal: asked once the code is sent
            _settle(stream)
            code = None if stream.ended else _prompt("one-time code the customer received: ")
        else:
            code = _code_from(args.code_file, "the one-time code", stream)
        if code:
            stream.send(_answer(ONE_TIME_CODE, code), "one_time_code")
        return
    stream.send(_answer(TOTP, _code_from(args.code_file, "the TOTP code", stream)), "totp")


def _code_from(path: Path, what: str, stream: _Stream | None = None) -> str:
    """The code in `path`. A FIFO or stdin may give it only later (a code the customer reads
    out mid-call), so the file is read on a thread while the call's decisions keep coming."""
    box: list = []
    reader = threading.Thread(target=lambda: box.append(_read_code(path, what)), daemon=True)
    reader.start()
    while reader.is_alive():
        if stream is None or stream.ended:
            reader.join(0.1)
        else:
            stream.next(0.1)
    if not box:
        raise CliError(f"{path}: cannot read {what}", EXIT_USAGE)
    if isinstance(box[0], CliError):
        raise box[0]
    return box[0]


def _read_code(path: Path, what: str) -> str | CliError:
    try:
        return code_arg(read_file_value(path, what))
    except argparse.ArgumentTypeError as exc:
        return CliError(f"{path}: {exc}", EXIT_USAGE)
    except CliError as exc:
        return exc


def run_verify(args: argparse.Namespace, start: verification_pb2.SessionStart, evidence: Iterable) -> int:
    """Streams `evidence` after `start`, answers a step-up as the arguments say, reports."""
    if args.send_code and args.totp_code:
        raise CliError("--send-code asks for a one-time code; it does not go with --totp-code", EXIT_USAGE)
    if args.send_code and not args.code_file and (args.no_input or not interactive()):
        raise CliError("--send-code off a terminal needs --code-file (FILE, or - for stdin)", EXIT_USAGE)
    stream = _Stream(args, verification_pb2.VerifyRequest(start=start), evidence)
    up_front = bool(args.totp_code or args.code_file or args.send_code)
    unasked = None
    with channel(args) as ch:
        stream.start(ch)
        try:
            if up_front:
                _answer_up_front(stream, args)
            elif interactive() and not args.no_input:
                _ask_at_terminal(stream, args)
            stream.drain()
        except grpc.RpcError as err:
            # An answer sent up front when the service asked for none ends the stream
            # FAILED_PRECONDITION; the decisions before it are what the call decided.
            pending = "no step-up is pending" in (err.details() or "")
            if not (stream.asked and err.code() == grpc.StatusCode.FAILED_PRECONDITION and pending):
                raise
            unasked = err.details()
    final = stream.last
    if final is None:
        raise CliError("the service sent no decision", EXIT_NEGATIVE)
    return _report(args, final, stream.asked, unasked)


def _report(args: argparse.Namespace, final, asked: list[str], unasked: str | None) -> int:
    authenticated = final.outcome == verification_pb2.OUTCOME_AUTHENTICATED
    assertion_file = None
    if authenticated and final.HasField("assertion") and args.assertion_out:
        from authsvc.cli.identity import write_secret_file

        if not final.assertion.token:
            fail("the service sent no assertion token to this credential (telephony may receive it)")
        else:
            write_secret_file(args.assertion_out, final.assertion.token + "\n")
            assertion_file = str(args.assertion_out)
    answered = [a for a in asked if a != "send_code"]
    second: dict[str, Any] = {
        "asked_for": [factor_name(f) for f in final.step_up_factors] if final.outcome == STEP_UP else [],
        "answered_with": answered[-1] if answered else None,
        "code_sent": "send_code" in asked,
    }
    if unasked:
        second["not_needed"] = unasked
    doc = {"decision": decision_doc(final), "second_factor": second, "assertion_file": assertion_file}
    if not (args.verbose and json_mode(args)):  # -v --output json: the decisions were the lines
        emit(args, doc, _text(final, answered, assertion_file, args.modality == "voice"))
    if unasked:
        note(f"authsvc: the code was not used: the service asked for no second factor ({unasked})")
    if final.outcome == STEP_UP and not authenticated:
        note(_step_up_hint(final, answered, args))
    return EXIT_OK if authenticated else EXIT_NEGATIVE


def _text(final, answered: list[str], assertion_file: str | None, audio: bool) -> list[str]:
    lines = [f"decision: {outcome_name(final.outcome)}"]
    for e in final.evidence:
        lines.append(f"score: {e.score:.4f}\nthreshold: {e.threshold:.4f} (FAR {e.target_far:.3g} per look)")
        lines.append(
            f"encoder: {e.encoder_id} ({e.encoder_version}), {e.enrolled_samples} enrolled sample(s)"
        )
    if audio:
        lines.append(f"net speech: {final.net_speech_seconds:.2f} s")
    for r in final.fraud.risks:
        lines.append(f"fraud {r.detector}: {risk_name(r.level)} ({r.reason})")
    if answered and final.outcome == verification_pb2.OUTCOME_AUTHENTICATED:
        lines.append(f"second factor: {answered[-1]} accepted")
    if final.HasField("assertion") and final.assertion.id:
        lines.append(assertion_text(final.assertion))
        if assertion_file:
            lines.append(f"assertion token written to {assertion_file} (mode 0600)")
    if final.reason:
        lines.append(f"reason: {final.reason}")
    return lines


def _step_up_hint(final, answered: list[str], args: argparse.Namespace) -> str:
    factors = [factor_name(f) for f in final.step_up_factors]
    if not factors:
        return (
            "authsvc: a second factor is required, but the customer has none set up "
            "(authsvc factors totp enroll | code-destination set)"
        )
    if answered:
        left = f"; {final.attempts_remaining} attempt(s) left" if final.attempts_remaining else ""
        return f"authsvc: the {answered[-1]} code was not accepted{left}"
    ways = []
    if "totp" in factors:
        ways.append("--totp-code CODE (or --code-file FILE)")
    if "one_time_code" in factors:
        ways.append("--send-code --code-file FILE")
    terminal = "" if args.no_input else ", or run it on a terminal to be asked"
    return f"authsvc: a second factor is needed ({', '.join(factors)}): give {' or '.join(ways)}{terminal}"


def _session_id(args: argparse.Namespace) -> str:
    return args.session_id or f"cli-{secrets.token_hex(6)}"


# -- voice --------------------------------------------------------------------------------------


def verify_voice(args: argparse.Namespace) -> int:
    from authsvc.cli.audio_files import file_to_wire  # scipy: only for commands that read audio

    encoding = WIRE[args.encoding]
    rate = args.rate or (8000 if encoding is not Encoding.PCM16_LE else None)
    try:
        audio, rate = file_to_wire(args.file, encoding, rate, args.channel)
    except InvalidInput as exc:
        raise CliError(exc.description, EXIT_INVALID) from None
    start = verification_pb2.SessionStart(
        tenant=args.tenant,
        customer_id=args.customer,
        channel=common_pb2.CHANNEL_VOICE,
        audio_format=common_pb2.AudioFormat(encoding=PB_ENCODING[encoding], sample_rate_hz=rate),
        session_id=_session_id(args),
    )
    step = rate * args.chunk_ms // 1000 * encoding.bytes_per_sample
    chunks = (
        verification_pb2.VerifyRequest(audio=verification_pb2.AudioChunk(data=audio[i : i + step]))
        for i in range(0, len(audio), step)
    )
    return run_verify(args, start, chunks)


# -- keystrokes ---------------------------------------------------------------------------------


def verify_keystrokes(args: argparse.Namespace) -> int:
    """A web, chat or app session: typing samples only (no audio), each scored as it arrives."""
    from authsvc import keystroke

    try:
        samples = keystroke.load_keystroke_file(args.file)
    except InvalidInput as exc:
        raise CliError(f"{args.file}: {exc}", EXIT_INVALID) from None
    start = verification_pb2.SessionStart(
        tenant=args.tenant,
        customer_id=args.customer,
        channel=SESSION_CHANNELS[args.channel],
        session_id=_session_id(args),
    )
    typed = (
        verification_pb2.VerifyRequest(
            keystrokes=common_pb2.KeystrokeSample(
                kind=KINDS[s.kind],
                profile=args.profile,
                text=s.text or "",
                events=[common_pb2.KeyEvent(key=e.key, down_s=e.press, up_s=e.release) for e in s.events],
            )
        )
        for s in samples
    )
    return run_verify(args, start, typed)


def add_verify_commands(
    sub: argparse._SubParsersAction, add_channel_arg, existing_file, add_client_args
) -> None:
    verify = sub.add_parser("verify", help="verify a claimed identity (telephony)").add_subparsers(
        dest="modality", required=True
    )
    p = verify.add_parser("voice", help="stream an audio file to the service as a call would")
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument(
        "--encoding",
        choices=sorted(WIRE),
        default="pcm16",
        help="wire encoding (mulaw/alaw are sent at 8 kHz, as telephony does)",
    )
    p.add_argument("--rate", type=int, choices=[8000, 16000], help="wire sample rate")
    p.add_argument("--chunk-ms", type=_chunk_ms, default=20, help="chunk size in ms (default 20)")
    add_channel_arg(p)
    add_step_up_args(p)
    p.add_argument("file", type=existing_file, metavar="FILE")
    add_client_args(p)
    p.set_defaults(func=verify_voice)

    p = verify.add_parser(
        "keystrokes", help="send typing samples (JSON Lines or P/R CSV) as a web or chat channel would"
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--customer", required=True)
    p.add_argument("--channel", choices=sorted(SESSION_CHANNELS), default="web", help="the session's channel")
    p.add_argument(
        "--profile",
        default="password",
        help="the fixed-text profile the samples are typed for (default password)",
    )
    add_step_up_args(p)
    p.add_argument("file", type=existing_file, metavar="FILE")
    add_client_args(p)
    p.set_defaults(func=verify_keystrokes)


def _chunk_ms(value: str) -> int:
    try:
        ms = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of ms") from None
    if not 5 <= ms <= 1000:
        raise argparse.ArgumentTypeError("give 5 to 1000 ms")
    return ms
