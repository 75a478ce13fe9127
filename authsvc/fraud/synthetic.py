"""Synthetic-speech risk from the countermeasure's bona fide margin (authsvc.voice.countermeasure)."""

from __future__ import annotations

from authsvc.policy.risk import HIGH, LOW, NOT_ENOUGH_AUDIO, SYNTHETIC, UNAVAILABLE, DetectorRisk

# The margin (logit bona fide - logit spoof, AASIST) below which the risk is high. Fitted on
# bona fide speech only: the 2nd percentile (-4.61) of librispeech-cohort-251 through 8 kHz
# mu-law (`python bench/pad.py --tune`), so about 2 % of genuine telephone callers are flagged
# there; APCER per species and BPCER on other speech are in bench/results/pad.json.
MIN_MARGIN = -4.6

NO_MODEL = "no countermeasure model folder is configured (authsvc serve --countermeasure-dir)"


def unavailable(why: str = NO_MODEL, version: str = "") -> DetectorRisk:
    return DetectorRisk(SYNTHETIC, UNAVAILABLE, reason=why, version=version, summary="not assessed")


def judging(version: str) -> DetectorRisk:
    return DetectorRisk(
        SYNTHETIC,
        UNAVAILABLE,
        reason="the latest speech is still being judged; its risk comes with the next decision",
        version=version,
        summary="being judged",
    )


def not_enough(seconds: float, needed: float, version: str) -> DetectorRisk:
    return DetectorRisk(
        SYNTHETIC,
        NOT_ENOUGH_AUDIO,
        threshold=MIN_MARGIN,
        reason=f"{seconds:.1f} s of speech; synthetic-speech detection needs {needed:g} s",
        version=version,
    )


def assess(margin: float, version: str) -> DetectorRisk:
    if not margin >= MIN_MARGIN:  # NaN included: a broken score is never a low risk
        return DetectorRisk(
            SYNTHETIC,
            HIGH,
            margin,
            MIN_MARGIN,
            f"countermeasure margin {margin:+.2f} is below {MIN_MARGIN:+.2f}: the speech looks synthetic",
            version,
            "the speech looks synthetic",
        )
    return DetectorRisk(
        SYNTHETIC,
        LOW,
        margin,
        MIN_MARGIN,
        f"countermeasure margin {margin:+.2f} >= {MIN_MARGIN:+.2f}",
        version,
        "no sign of synthetic speech",
    )
