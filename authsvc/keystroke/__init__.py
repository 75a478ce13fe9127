"""Keystroke rhythm: key/DTMF events -> timing features -> per-customer profiles -> scores.

Two models, chosen by the kind of sample:

- fixed text (`kind="fixed"` password/account number, `kind="dtmf"` keypad
  PIN): the same string every time; `fixed_text.FixedTextProfile`.
- free text (`kind="free"`): any text, compared on shared keys/digraphs;
  `free_text.FreeTextProfile`.

The integration layer needs three calls: `enroll(samples[, profile bytes])
-> profile bytes` (store encrypts them like a voice template, under
`template_identity(bytes)`), `verify(profile bytes, sample) -> KeystrokeScore`
(raw score and calibrated natural-log LLR, > 0 favours the enrolled person),
and `load_keystroke_file(path)` for the CLI. Bad input raises
`KeystrokeInputError` (an `authsvc.errors.InvalidInput`, so a `ValueError`);
a profile made by another model version raises `authsvc.errors.EncoderMismatch`.
"""

from __future__ import annotations

from collections.abc import Sequence

from authsvc.keystroke import fixed_text, free_text
from authsvc.keystroke.base import KeystrokeScore, peek_modality
from authsvc.keystroke.events import (
    KeyEvent,
    KeystrokeInputError,
    KnowledgeMismatch,
    Sample,
    dtmf_event,
    load_keystroke_file,
    make_sample,
    ms_to_s,
    ns_to_s,
)
from authsvc.keystroke.fixed_text import FixedTextProfile
from authsvc.keystroke.free_text import FreeTextProfile

Profile = FixedTextProfile | FreeTextProfile

# Typing samples per enrollment request: growing a profile is CPU work inside the customer's
# unit of work (about 0.25 ms a sample), so one request must not hold the store for long.
MAX_ENROLL_SAMPLES = 200

__all__ = [
    "MAX_ENROLL_SAMPLES",
    "FixedTextProfile",
    "FreeTextProfile",
    "KeyEvent",
    "KeystrokeInputError",
    "KeystrokeScore",
    "KnowledgeMismatch",
    "Profile",
    "Sample",
    "dtmf_event",
    "enroll",
    "load_keystroke_file",
    "load_profile",
    "make_sample",
    "modality_of_samples",
    "ms_to_s",
    "ns_to_s",
    "template_identity",
    "verify",
]

_BY_MODALITY: dict[str, type[FixedTextProfile] | type[FreeTextProfile]] = {
    fixed_text.MODALITY: FixedTextProfile,
    free_text.MODALITY: FreeTextProfile,
}


def modality_of_samples(samples: Sequence[Sample]) -> str:
    """ "keystroke_fixed" for fixed/dtmf samples, "keystroke_free" for free ones; mixing is an error."""
    if not samples:
        raise KeystrokeInputError("samples", "enrollment needs at least one sample")
    kinds = {"keystroke_fixed" if s.kind in ("fixed", "dtmf") else "keystroke_free" for s in samples}
    if len(kinds) != 1:
        raise KeystrokeInputError(
            "samples", "fixed-text (or DTMF) and free-text samples cannot share a profile"
        )
    return kinds.pop()


def load_profile(data: bytes) -> Profile:
    """Profile bytes (from `enroll` / `to_bytes`) -> profile object of the right model."""
    modality = peek_modality(data)
    cls = _BY_MODALITY.get(modality)
    if cls is None:
        raise KeystrokeInputError("profile", f"not a keystroke profile (modality {modality!r})")
    return cls.from_bytes(data)


def enroll(samples: Sequence[Sample], profile: bytes | None = None) -> bytes:
    """Build a profile from samples, or grow an existing one (bounded history) -> profile bytes."""
    modality = modality_of_samples(samples)
    if profile is None:
        return _BY_MODALITY[modality].build(samples).to_bytes()
    existing = load_profile(profile)
    if existing.modality != modality:
        raise KeystrokeInputError(
            "samples", f"these samples are {modality}, the profile is {existing.modality}"
        )
    existing.update(samples)
    return existing.to_bytes()


def verify(profile: bytes, sample: Sample) -> KeystrokeScore:
    """Compare one sample with a stored profile -> KeystrokeScore(raw, llr, modality, n_compared)."""
    loaded = load_profile(profile)
    if loaded.modality != modality_of_samples([sample]) and loaded.modality == fixed_text.MODALITY:
        raise KeystrokeInputError("kind", "a fixed-text profile needs a fixed-text or DTMF sample")
    return loaded.score(sample)


def template_identity(profile: bytes) -> tuple[str, str, str]:
    """(modality, model id, model version) to file the encrypted profile under in the store."""
    modality = peek_modality(profile)
    if modality == fixed_text.MODALITY:
        return modality, fixed_text.MODEL_ID, fixed_text.MODEL_VERSION
    if modality == free_text.MODALITY:
        return modality, free_text.MODEL_ID, free_text.MODEL_VERSION
    raise KeystrokeInputError("profile", f"not a keystroke profile (modality {modality!r})")
