"""What commands print: text for people, JSON for scripts (`--output json`), from one document.

Every command builds a document (a dict of plain values) and a text rendering of it. With
`--output json` a command prints exactly one JSON document on stdout; a command that prints a
stream (decisions of a call, `verify --verbose`) prints one JSON object per line (JSON Lines).
Errors, warnings, prompts and progress go to stderr as text in both modes, so stdout stays
parseable. A document never holds a secret the command does not exist to show: API keys and
signing secrets only where they are created (shown once), assertion tokens never (they go to
a file the operator names).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from authsvc.api.v1 import assurance_pb2, common_pb2, enrollment_pb2, identity_pb2, verification_pb2

FORMATS = ("text", "json")
# Commands whose output is not a result: the server's logs, a shell script.
WITHOUT_OUTPUT = frozenset({"serve", "completion"})


def add_output_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        choices=FORMATS,
        default="text",
        help="text (default), or json: one JSON document on stdout (JSON Lines for streams)",
    )


def add_output_args(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Adds --output to every command of the tree under `parser` (the one place that does)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias names the same parser again
                    continue
                seen.add(id(sub))
                add_output_args(sub, (*path, name))
            return
    if path and path[0] not in WITHOUT_OUTPUT:
        add_output_arg(parser)


def json_mode(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "text") == "json"


def emit(args: argparse.Namespace, doc: dict[str, Any], text: str | Iterable[str] | None) -> None:
    """The command's result: `doc` as one JSON document, or `text` (a string or lines)."""
    if json_mode(args):
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif text is not None:
        print(text if isinstance(text, str) else "\n".join(text))


def emit_record(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    """One record of a stream: a JSON line, or a text line; flushed (a watcher reads it now)."""
    print(json.dumps(doc, ensure_ascii=False) if json_mode(args) else text, flush=True)


def note(message: str) -> None:
    """Something for the person at the terminal, never part of the result."""
    print(message, file=sys.stderr)


# -- values -------------------------------------------------------------------------------------


def iso(ms: int) -> str | None:
    """UTC ISO-8601 of a time in ms since the epoch; None for 0 (never / unset)."""
    if not ms:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def when(ms: int) -> str:
    """The text form: seconds, or '-'."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "-"


def _name(enum, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def outcome_name(value: int) -> str:
    """AUTHENTICATED, STEP_UP_REQUIRED, ... (the proto's names, as the README uses them)."""
    try:
        return verification_pb2.Outcome.Name(value).removeprefix("OUTCOME_")
    except ValueError:
        return str(value)


def method_name(value: int) -> str:
    return _name(common_pb2.AuthMethod, value, "AUTH_METHOD_")


def factor_name(value: int) -> str:
    return _name(common_pb2.SecondFactor, value, "SECOND_FACTOR_")


def modality_name(value: int) -> str:
    return _name(common_pb2.Modality, value, "MODALITY_")


def channel_name(value: int) -> str:
    return _name(common_pb2.Channel, value, "CHANNEL_")


def risk_name(value: int) -> str:
    return _name(verification_pb2.RiskLevel, value, "RISK_LEVEL_")


def quality_name(value: int) -> str:
    return _name(common_pb2.QualityIssue, value, "QUALITY_ISSUE_")


# -- documents ----------------------------------------------------------------------------------


def assertion_doc(a: verification_pb2.Assertion) -> dict[str, Any]:
    """An assertion's claims; never its token (a bearer credential of the customer)."""
    return {
        "id": a.id,
        "tenant": a.tenant,
        "customer_id": a.customer_id,
        "methods": [method_name(m) for m in a.methods],
        "assurance_level": a.assurance_level or None,
        "channel": channel_name(a.channel),
        "issued": iso(a.issued_unix_ms),
        "expires": iso(a.expires_unix_ms),
        "key_id": a.key_id,
    }


def assertion_text(a: verification_pb2.Assertion) -> str:
    methods = ", ".join(method_name(m) for m in a.methods)
    level = a.assurance_level or "no AAL"
    return (
        f"assertion {a.id}: {a.tenant}/{a.customer_id}, {methods}, {level}, expires {when(a.expires_unix_ms)}"
    )


def decision_doc(d: verification_pb2.Decision) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "outcome": outcome_name(d.outcome),
        "final": d.final,
        "sequence": d.sequence,
        "session_id": d.session_id,
        "reason": d.reason,
        "policy_id": d.policy_id,
        "net_speech_seconds": round(d.net_speech_seconds, 3),
        "required_net_speech_seconds": d.required_net_speech_seconds,
        "quality_issues": [quality_name(q) for q in d.quality_issues],
        "fraud": [
            {
                "detector": r.detector,
                "level": risk_name(r.level),
                "reason": r.reason,
                "version": r.version,
                **({"score": r.score, "threshold": r.threshold} if r.score or r.threshold else {}),
            }
            for r in d.fraud.risks
        ],
    }
    if d.evidence:  # only for a credential granted evidence
        doc["evidence"] = [
            {
                "modality": modality_name(e.modality),
                "score": e.score,
                "threshold": e.threshold,
                "target_far": e.target_far,
                "llr": e.llr,
                "floor_llr": e.floor_llr,
                "calibrated": e.calibrated,
                "encoder_id": e.encoder_id,
                "encoder_version": e.encoder_version,
                "enrolled_samples": e.enrolled_samples,
                **({"profile": e.profile} if e.profile else {}),
            }
            for e in d.evidence
        ]
        doc["fused_llr"], doc["fused_threshold_llr"] = d.fused_llr, d.fused_threshold_llr
    if d.outcome == verification_pb2.OUTCOME_STEP_UP_REQUIRED:
        doc["step_up_factors"] = [factor_name(f) for f in d.step_up_factors]
        doc["attempts_remaining"] = d.attempts_remaining
    if d.retry_after_seconds:
        doc["retry_after_seconds"] = d.retry_after_seconds
    if d.HasField("assertion"):
        doc["assertion"] = assertion_doc(d.assertion)
    return doc


def decision_line(d: verification_pb2.Decision) -> str:
    """One decision on one line (watch, verify -v)."""
    risks = "".join(
        f"; {r.detector} risk {risk_name(r.level)}"
        for r in d.fraud.risks
        if r.level == verification_pb2.RISK_LEVEL_HIGH
    )
    final = " (final)" if d.final else ""
    factors = (
        f"; second factor: {', '.join(factor_name(f) for f in d.step_up_factors) or 'none set up'}"
        if d.outcome == verification_pb2.OUTCOME_STEP_UP_REQUIRED
        else ""
    )
    return (
        f"#{d.sequence} {outcome_name(d.outcome)}{final}: {d.net_speech_seconds:.1f} s speech; {d.reason}"
        f"{factors}{risks}"
    )


def customer_doc(c: enrollment_pb2.Customer) -> dict[str, Any]:
    """A customer's enrollment status: what they chose, what is enrolled, what is active."""
    v = c.voice_enrollment
    return {
        "tenant": c.tenant,
        "customer_id": c.customer_id,
        "created": iso(c.created_unix_ms),
        "registered": c.HasField("consent"),
        "methods": [method_name(m) for m in c.methods],
        "opted_out": c.opted_out,
        "consent": {
            "text_version": c.consent.text_version,
            "recorded": iso(c.consent.recorded_unix_ms),
            "biometrics_allowed": c.consent.biometrics_allowed,
        }
        if c.HasField("consent")
        else None,
        "templates": [
            {
                "modality": modality_name(t.modality),
                "samples": t.sample_count,
                "encoder_id": t.encoder_id,
                "encoder_version": t.encoder_version,
                "updated": iso(t.updated_unix_ms),
            }
            for t in c.templates
        ],
        "voice_enrollment": {
            "state": voice_state(c),
            "complete": v.complete,
            "net_speech_seconds": round(v.net_speech_seconds, 2),
            "required_net_speech_seconds": v.required_net_speech_seconds,
            "calls": v.calls,
        },
        "factors": [factor_name(f) for f in c.factors],
        "last_active": iso(c.last_active_unix_ms),
        "expired": iso(c.expired_unix_ms),
    }


def voice_state(c: enrollment_pb2.Customer) -> str:
    """enrolled | from calls (x of y s) | not enrolled | opted out | not chosen."""
    v = c.voice_enrollment
    if c.opted_out:
        return "opted out"
    if c.expired_unix_ms and not c.templates:
        return "expired (re-enroll)"
    if v.complete or any(t.modality == common_pb2.MODALITY_VOICE for t in c.templates):
        return "enrolled"
    if v.calls:
        return f"from calls ({v.net_speech_seconds:.1f} of {v.required_net_speech_seconds:g} s)"
    if c.HasField("consent") and common_pb2.AUTH_METHOD_VOICE not in c.methods:
        return "not chosen"
    return "not enrolled"


def customer_row(c: enrollment_pb2.Customer) -> list[str]:
    """customers list: id, methods, voice, templates, factors."""
    if not c.HasField("consent"):
        methods = "(not registered)"
    elif c.opted_out:
        methods = "opted out" + (f": {','.join(method_name(m) for m in c.methods)}" if c.methods else "")
    else:
        methods = ",".join(method_name(m) for m in c.methods) or "-"
    templates = ",".join(f"{modality_name(t.modality)}:{t.sample_count}" for t in c.templates) or "-"
    factors = ",".join(factor_name(f) for f in c.factors) or "-"
    return [c.customer_id, methods, voice_state(c), templates, factors]


CUSTOMER_COLUMNS = ["CUSTOMER", "METHODS", "VOICE", "TEMPLATES", "FACTORS"]


def customer_lines(c: enrollment_pb2.Customer) -> list[str]:
    """customers show, register, enroll keystrokes: the customer and their enrollment status."""
    lines = [f"{c.tenant}/{c.customer_id}"]
    if c.HasField("consent"):
        chosen = ", ".join(method_name(m) for m in c.methods)
        state = "opted out of biometrics" if c.opted_out else f"methods: {chosen or 'none'}"
        lines.append(f"  {state}; consent text {c.consent.text_version}")
    else:
        lines.append("  not registered (no consent on record)")
    lines.append(f"  second factors: {', '.join(factor_name(f) for f in c.factors) or 'none active'}")
    for t in c.templates:
        encoder = f"encoder {t.encoder_id} ({t.encoder_version})"
        lines.append(f"  {modality_name(t.modality)}: {t.sample_count} sample(s), {encoder}")
    v = c.voice_enrollment
    if not v.complete and v.calls:
        have, need = v.net_speech_seconds, v.required_net_speech_seconds
        lines.append(
            f"  voice enrollment from calls: {have:.1f} s of {need:g} s net speech ({v.calls} call(s)); "
            f"{max(0.0, need - have):.1f} s to go"
        )
    else:
        lines.append(f"  voice enrollment: {voice_state(c)}")
    if c.expired_unix_ms:
        lines.append(f"  templates expired {when(c.expired_unix_ms)} (inactive past the retention period)")
    elif c.last_active_unix_ms:
        lines.append(f"  last active {when(c.last_active_unix_ms)}")
    return lines


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns separated by tabs (cut -f and awk -F'\\t' read them), a header first."""
    return ["\t".join(header), *("\t".join(r) for r in rows)]


def tenant_doc(t: identity_pb2.Tenant) -> dict[str, Any]:
    return {"name": t.name, "sector": t.sector, "created": iso(t.created_unix_ms), "created_by": t.created_by}


def credential_doc(c: identity_pb2.Credential) -> dict[str, Any]:
    return {
        "id": c.id,
        "tenant": c.tenant or None,
        "kind": c.kind,
        "roles": list(c.roles),
        "subject": c.subject or None,
        "description": c.description,
        "created": iso(c.created_unix_ms),
        "created_by": c.created_by,
        "expires": iso(c.expires_unix_ms),
        "revoked": iso(c.revoked_unix_ms),
        "last_used": iso(c.last_used_unix_ms),
    }


def audit_doc(e: assurance_pb2.AuditEvent) -> dict[str, Any]:
    try:
        details = json.loads(e.details) if e.details else {}
    except ValueError:
        details = {"raw": e.details}
    return {
        "id": e.id,
        "time": iso(e.time_unix_ms),
        "tenant": e.tenant,
        "actor": e.actor,
        "action": e.action,
        "customer_id": e.customer_id or None,
        "outcome": e.outcome,
        "details": details,
    }
