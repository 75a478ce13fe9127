"""Replay detection: does the caller's audio re-use recorded material of the claimed customer?

References are landmark fingerprints (authsvc.audio.fingerprint) of the customer's
enrollment samples and of their recent calls, sealed in the template store. A live
caller says something new each time; a replayed recording shares many hashes with one
reference at one time offset.
"""

from __future__ import annotations

from collections.abc import Sequence

from authsvc.audio.fingerprint import VERSION, Fingerprint, match
from authsvc.policy.risk import HIGH, LOW, NOT_ENOUGH_AUDIO, REPLAY, UNAVAILABLE, DetectorRisk

# Probe hashes aligned at one offset with one reference from which the risk is high. Tuned by
# `python bench/pad.py --tune` on librispeech-cohort-251 (bona fide other utterances never
# exceeded 6 there); bench/pad.py reports APCER / BPCER on test-other and fsdd.
MIN_ALIGNED = 9
# Less audio than this (seconds fingerprinted) is not judged: too few hashes to tell.
MIN_PROBE_S = 2.0


def assess(probe: Fingerprint | Sequence[Fingerprint], references: Sequence[Fingerprint]) -> DetectorRisk:
    """`probe`: one fingerprint, or the same audio's at several playback speeds (the best counts)."""
    probes = [probe] if isinstance(probe, Fingerprint) else list(probe)
    probe = probes[0]
    if probe.seconds < MIN_PROBE_S:
        return DetectorRisk(
            REPLAY,
            NOT_ENOUGH_AUDIO,
            threshold=MIN_ALIGNED,
            reason=f"{probe.seconds:.1f} s of audio; replay detection needs {MIN_PROBE_S:g} s",
            version=VERSION,
        )
    if not references:
        # Not a low risk: nothing was compared (a customer enrolled before fingerprints were kept).
        return DetectorRisk(
            REPLAY,
            UNAVAILABLE,
            threshold=MIN_ALIGNED,
            reason="no recorded material on file to compare with (re-enroll to protect against replay)",
            version=VERSION,
            summary="not assessed",
        )
    best = max((match(p, ref) for p in probes for ref in references), key=lambda m: m.aligned)
    if best.aligned >= MIN_ALIGNED:
        reason = (
            f"{best.aligned} of {best.probe_hashes} audio landmarks match a recording on file "
            f"at one offset ({best.offset_s:+.1f} s)"
        )
        return DetectorRisk(
            REPLAY, HIGH, best.aligned, MIN_ALIGNED, reason, VERSION, "the audio matches a recording on file"
        )
    return DetectorRisk(
        REPLAY,
        LOW,
        best.aligned,
        MIN_ALIGNED,
        f"no recording on file matches ({len(references)} compared)",
        VERSION,
        "no recording on file matches",
    )
