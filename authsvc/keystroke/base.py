"""Pieces both keystroke models share: the score record, the Student-t kernel, profile envelopes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from authsvc.errors import EncoderMismatch
from authsvc.keystroke.events import KeystrokeInputError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class KeystrokeScore:
    """One comparison: raw model score, calibrated LLR (natural log, > 0 favours the enrolled
    person), the profile's modality, and how many timings were compared."""

    raw: float
    llr: float
    modality: str
    n_compared: int


def log_t(z: np.ndarray, nu: float) -> np.ndarray:
    """Student-t log density up to its constant (constants cancel in the Platt mapping)."""
    return -(nu + 1) / 2 * np.log1p(z * z / nu)


def dump_doc(modality: str, model: str, version: str, body: dict[str, Any]) -> bytes:
    """Compact versioned JSON envelope: `v` (format), `modality`, `model`, `version` (of the model)."""
    doc = {"v": FORMAT_VERSION, "modality": modality, "model": model, "version": version, **body}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def peek_modality(data: bytes) -> str:
    return str(_parse(data).get("modality"))


def _parse(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise KeystrokeInputError("profile", f"profile is not versioned JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise KeystrokeInputError("profile", "profile is not a JSON object")
    return doc


def load_doc(data: bytes, modality: str, model: str, version: str) -> dict[str, Any]:
    """Parse and check an envelope; a profile of another model version is an error, never rescored."""
    doc = _parse(data)
    if doc.get("modality") != modality:
        raise KeystrokeInputError(
            "profile", f"expected a {modality} profile, got modality {doc.get('modality')!r}"
        )
    if doc.get("v") != FORMAT_VERSION:
        raise KeystrokeInputError(
            "profile", f"profile format v{doc.get('v')} is not supported (v{FORMAT_VERSION})"
        )
    if doc.get("model") != model or doc.get("version") != version:
        raise EncoderMismatch(
            f"profile made by {doc.get('model')} version {doc.get('version')}, "
            f"this service scores with {model} version {version}; re-enroll"
        )
    return doc
