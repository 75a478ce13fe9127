"""`authsvc policy check FILE` and `authsvc policy explain --tenant T`: local, no server needed."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from authsvc.cli.client import EXIT_INVALID, EXIT_OK, CliError
from authsvc.cli.output import emit
from authsvc.cli.serve import default_data_dir
from authsvc.errors import ConfigError
from authsvc.policy.engine import NO_AAL, look_far
from authsvc.policy.risk import DETECTORS
from authsvc.policy.schema import SECTIONS, PolicyBook, TenantPolicy, check_policy_file
from authsvc.scoring.calibration import Calibration, load_calibration


def check(args: argparse.Namespace) -> int:
    try:
        policy = check_policy_file(args.file)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_INVALID) from None
    emit(
        args,
        {
            "file": str(args.file),
            "valid": True,
            "tenant": policy.tenant,
            "sector": policy.sector,
            "policy_id": policy.policy_id,
        },
        f"{args.file}: OK (tenant {policy.tenant}, sector {policy.sector}, policy id {policy.policy_id})",
    )
    return EXIT_OK


def _voice_calibration(encoder: str) -> Calibration | None:
    from authsvc.voice.ge2e import load_ge2e

    if encoder != "ge2e":
        return None
    try:
        return load_calibration("ge2e", load_ge2e(None).version)
    except ConfigError:
        return None


def explain(args: argparse.Namespace) -> int:
    directory = args.policy_dir or (args.data_dir or default_data_dir()) / "policies"
    try:
        policy = PolicyBook(directory).get(args.tenant)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_INVALID) from None
    source = directory / f"{args.tenant}.toml"
    rules = describe(policy, _voice_calibration(args.encoder))
    settings = {
        name: {f.name: _plain(getattr(getattr(policy, name), f.name)) for f in fields(getattr(policy, name))}
        for name in SECTIONS
    }
    emit(
        args,
        {
            "tenant": policy.tenant,
            "sector": policy.sector,
            "policy_id": policy.policy_id,
            "source": str(source) if source.exists() else None,
            "settings": settings,
            "effective_rules": [line.strip() for line in rules[rules.index("effective rules:") + 1 :]],
        },
        [
            f"tenant {policy.tenant}: sector {policy.sector} ({policy.policy_id})",
            f"source: {source if source.exists() else 'no policy file: the general preset applies'}",
            *rules,
        ],
    )
    return EXIT_OK


def _plain(value):
    """A policy value as JSON has it (tuples as lists; infinities as strings)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    return value


def describe(policy: TenantPolicy, voice_cal: Calibration | None) -> list[str]:
    lines = []
    for name in SECTIONS:
        section = getattr(policy, name)
        lines.append(f"[{name}]")
        for f in fields(section):
            value = getattr(section, f.name)
            shown = ", ".join(value) if isinstance(value, tuple) else "unset" if value is None else value
            lines.append(f"  {f.name} = {shown}")
    lines.append("effective rules:")
    looks = policy.decision.max_looks
    v = policy.voice
    lines.append(
        f"  a call gets at most {looks} scored decision(s) (looks); each is held to target FAR / {looks}, "
        "so the call as a whole keeps the target"
    )
    if v.threshold is not None:
        lines.append(f"  voice: raw cosine threshold {v.threshold:.4f} (fixed by the policy)")
    elif voice_cal is not None:
        far = look_far(policy, v.target_far)
        t = voice_cal.threshold_for(far)
        lines.append(
            f"  voice: target FAR {v.target_far:g} per call, {far:.3g} per look -> cosine threshold {t:.4f} "
            f"(LLR {voice_cal.llr(t):+.2f}, {_resting(voice_cal, far)}), calibrated on {voice_cal.data}"
        )
        # The worst case fusion allows: typing forged at the cap tops up a voice that far below.
        worst = max(
            (voice_cal.llr(t) - policy.keystroke.max_llr - voice_cal.llr_offset) / voice_cal.llr_slope,
            voice_cal.threshold_for(v.floor_far),
        )
        lines.append(
            f"  voice with typing forged up to the cap: the voice must still reach cosine {worst:.4f} "
            f"(FAR {voice_cal.far_at(worst):.3g} per look)"
        )
    else:
        lines.append(
            f"  voice: target FAR {v.target_far:g} (threshold from the running encoder's calibration)"
        )
    from authsvc.keystroke import fixed_text, free_text

    k = policy.keystroke
    for model in (fixed_text, free_text):
        cal = load_calibration(model.MODEL_ID, model.MODEL_VERSION)
        floor = cal.threshold_for(k.floor_far)
        try:
            alone = f"LLR threshold {cal.threshold_for(look_far(policy, k.target_far)):+.2f} per look"
        except ConfigError:
            alone = f"unresolvable per look ({cal.impostor_trials} impostor trials)"
        lines.append(
            f"  typing ({model.MODALITY}): target FAR {k.target_far:g} -> {alone}; floor LLR {floor:+.2f} "
            f"(FAR {k.floor_far:g})"
        )
    lines.append(
        f"  fusion: voice calls are decided by voice; voice must reach its floor (FAR {v.floor_far:g}) and "
        f"typing or DTMF timing, measured by the client, adds at most LLR {k.max_llr:+.2f}; DTMF keypad "
        "timing has no calibration of its own and never decides alone"
    )
    lines.append(
        "  typing alone (no audio): "
        + ("authenticates at its own target" if k.alone else "never authenticates without a second factor")
    )
    lines.append(
        f"  first voice decision after {v.min_net_speech_s:g} s of net speech, then every "
        f"{v.redecide_interval_s:g} s of new speech, up to the looks"
    )
    if policy.step_up.required:
        lines.append(
            "  a biometric match alone is not enough: STEP_UP_REQUIRED with "
            + ", ".join(policy.step_up.factors)
            + "; AAL2 with TOTP or an SMS code (a restricted authenticator); an e-mailed code gives no AAL"
        )
    else:
        lines.append(f"  a biometric match alone authenticates, with {NO_AAL}")
    lo = policy.lockout
    after = (
        "the biometric is disabled and the customer's other factor is asked for (a wait where they have none)"
        if lo.biometric_after_limit == "step_up"
        else "each further attempt waits 30 s, doubling"
    )
    alone = lo.other_factor_alone and not policy.step_up.required
    then = (
        "that factor then authenticates on its own (AAL1; an e-mailed code never does)"
        if alone
        else "passing it re-enables the biometric, and the call is decided by both"
    )
    lines.append(
        f"  after {lo.biometric_failures} consecutive failed biometric attempts {after}; {then}; a "
        "biometric success or `authsvc customers unlock` resets the count (100 in a row: unlock only)"
    )
    lines.append(
        f"  second-factor lockout after {lo.max_failures} wrong answers for {lo.lockout_s:g} s; at most "
        f"{lo.source_failures_per_hour} failed attempts per hour from one caller and source"
    )
    lines.append(
        f"  assertions live {policy.assertion.lifetime_s:g} s, accepted {policy.assertion.max_uses} time(s)"
    )
    lines.append(f"  passive enrollment: {'allowed' if policy.enrollment.passive else 'not allowed'}")
    does = {
        "ignore": "is ignored (not reported)",
        "flag": "is reported; the outcome stands",
        "step_up": "makes a biometric match ask for a second factor",
        "reject": "rejects the look (a counted failed attempt), whatever the match",
    }
    for detector in DETECTORS:
        lines.append(f"  a high {detector} risk {does[getattr(policy.fraud, detector)]}")
    return lines


def _resting(cal: Calibration, far: float) -> str:
    return f"resting on about {far * cal.impostor_trials:.0f} of {cal.impostor_trials} impostor trials"


def add_policy_commands(sub: argparse._SubParsersAction) -> None:
    policy = sub.add_parser("policy", help="check and explain tenant policy files").add_subparsers(
        dest="action", required=True
    )
    p = policy.add_parser("check", help="validate a policy file")
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(func=check)
    p = policy.add_parser("explain", help="print a tenant's effective rules, presets resolved")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--data-dir", type=Path, help="the service's data directory (policies in <data-dir>/policies)"
    )
    p.add_argument("--policy-dir", type=Path, help="policy folder, if not <data-dir>/policies")
    p.add_argument(
        "--encoder", default="ge2e", help="voice encoder whose calibration turns FAR into thresholds"
    )
    p.set_defaults(func=explain)
