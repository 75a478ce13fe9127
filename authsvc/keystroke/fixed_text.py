"""Fixed-text typing profiles: the same string every time (password, PIN, keypad PIN).

Features of one entry, after backspaces are replayed (`reconstruct_typed`):
log hold of each character and log press-to-press (DD) time of each pair
of consecutive characters. A DD that spans a correction, and a hold whose
release is unknown, is missing (NaN) and simply not compared.

Score of a probe x against a profile (log seconds, feature f of type T):

    raw = sum_f [ log t5((x_f - mu_f) / sd_f) - log sd_f ]        same person
        - sum_f [ log t2((x_f - c_T) / s_T)  - log s_T  ]        population

where mu_f and sd_f come from the profile's history, and (c_T, s_T) is the
population prior of the feature type (`calibration.FIXED`). Why:
heavy-tailed (Student-t) densities keep one hesitation from sinking a
genuine entry, and dividing by the population density rewards the parts of
a rhythm that are unusual for people in general, which is where impostors
differ. With only a handful of enrollment samples, sd_f is shrunk towards
the person's own spread across all features, itself shrunk towards the
population's within-person spread. raw is a log density ratio in nats;
`KeystrokeScore.llr = FIXED.platt.llr(raw)` is the calibrated natural-log
likelihood ratio (> 0 favours the enrolled person).

History rule: the profile keeps the feature vectors of the most recent
`max_history` entries (default 20); `update` appends and drops the oldest,
so the profile follows a customer whose typing speeds up with practice.
Update only with entries that were verified, or an impostor can drift in.

The enrolled text itself is not stored: only its length and a salted
SHA-256 digest, enough to refuse a probe that typed something else. (A short
PIN's digest can be brute-forced; profiles are encrypted at rest for that
reason too.)
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Sequence

import numpy as np

from authsvc.keystroke.base import KeystrokeScore, dump_doc, load_doc, log_t
from authsvc.keystroke.calibration import FIXED, ModelCalibration
from authsvc.keystroke.events import KeystrokeInputError, KnowledgeMismatch, Sample, reconstruct_typed
from authsvc.keystroke.features import log_time

MODALITY = "keystroke_fixed"
MODEL_ID = "keystroke-fixed-tllr"
MODEL_VERSION = "1"
DEFAULT_MAX_HISTORY = 20
MAX_TEXT_LEN = 256
MAX_ABS_LOG_TIME = 20.0  # stored log seconds beyond this are corrupt, not typing

# Model constants, chosen on keystroke100 users 51-100 (see bench/keystroke_fixed.py).
NU_PERSON = 5.0  # Student-t degrees of freedom of the person's density
NU_POPULATION = 2.0  # ... and of the population's
SHRINK_FEATURE = 6.0  # pseudo-samples pulling a feature's spread to the person's spread
SHRINK_PERSON = 2.0  # pseudo-degrees of freedom pulling the person's spread to the prior


def _digest(salt: bytes, text: str) -> bytes:
    return hashlib.sha256(salt + text.encode("utf-8")).digest()


def fixed_features(sample: Sample) -> tuple[str, np.ndarray]:
    """(typed text, log features [hold_0..m-1, dd_0..m-2]) of one fixed-text or DTMF entry."""
    if sample.kind not in ("fixed", "dtmf"):
        raise KeystrokeInputError(
            "kind", f"a fixed-text profile needs fixed or dtmf samples, got {sample.kind!r}"
        )
    typed = reconstruct_typed(sample.events)
    if not typed.text:
        raise KeystrokeInputError("events", "after replaying backspaces nothing was typed")
    if len(typed.text) > MAX_TEXT_LEN:
        raise KeystrokeInputError(
            "events", f"typed text of {len(typed.text)} characters exceeds {MAX_TEXT_LEN}"
        )
    if sample.text is not None:
        expected = sample.text.upper() if sample.kind == "dtmf" else sample.text
        if not hmac.compare_digest(typed.text.encode(), expected.encode()):
            # Never echo the text: it is a secret.
            raise KeystrokeInputError(
                "text",
                f"typed text ({len(typed.text)} characters) does not match the declared text "
                f"({len(expected)} characters)",
            )
    press = np.array([e.press for e in typed.events])
    hold = np.array([np.nan if e.release is None else e.release - e.press for e in typed.events])
    dd = np.diff(press)
    dd[np.array(typed.after_correction[1:], dtype=bool)] = np.nan
    return typed.text, np.concatenate([log_time(hold), log_time(dd)])


class FixedTextProfile:
    """A person's rhythm on one fixed text; see the module docstring for the model."""

    modality = MODALITY

    def __init__(
        self, text_len: int, salt: bytes, digest: bytes, history: np.ndarray, max_history: int
    ) -> None:
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self.text_len = text_len
        self._salt = salt
        self._digest = digest
        self.max_history = max_history
        self.history = np.asarray(history, dtype=np.float64).reshape(-1, 2 * text_len - 1)[-max_history:]
        self._model: tuple[ModelCalibration, tuple[np.ndarray, ...]] | None = None

    @property
    def n_samples(self) -> int:
        return len(self.history)

    @classmethod
    def build(cls, samples: Sequence[Sample], *, max_history: int = DEFAULT_MAX_HISTORY) -> FixedTextProfile:
        """Profile from one or more entries of the same text (the text of the first defines it)."""
        if not samples:
            raise KeystrokeInputError("samples", "enrollment needs at least one sample")
        text, first = fixed_features(samples[0])
        salt = os.urandom(16)
        profile = cls(len(text), salt, _digest(salt, text), first[None, :], max_history)
        profile._append(samples[1:], first_index=1)
        return profile

    def _check(self, sample: Sample, index: int | None = None) -> np.ndarray:
        text, feats = fixed_features(sample)
        if len(text) != self.text_len or not hmac.compare_digest(_digest(self._salt, text), self._digest):
            where = "text" if index is None else f"samples[{index}].text"
            raise KnowledgeMismatch(where, "typed text does not match the enrolled fixed text")
        return feats

    def update(self, samples: Sequence[Sample]) -> None:
        """Add entries (in place); only the newest `max_history` are kept."""
        self._append(samples, first_index=0)

    def _append(self, samples: Sequence[Sample], first_index: int) -> None:
        rows = [self._check(s, i) for i, s in enumerate(samples, start=first_index)]
        if rows:
            self.history = np.vstack([self.history, *rows])[-self.max_history :]
            self._model = None

    def _fit(self, cal: ModelCalibration) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mu, sd, population center, population spread) per feature; mu is NaN where never seen."""
        if self._model is not None and self._model[0] is cal:
            return self._model[1]
        m = self.text_len
        h = self.history
        seen = ~np.isnan(h)
        n = seen.sum(axis=0)
        mu = np.where(seen, h, 0.0).sum(axis=0) / np.maximum(n, 1)
        ss = np.where(seen, (h - mu) ** 2, 0.0).sum(axis=0)  # (n - 1) * variance
        sd = np.empty(h.shape[1])
        center = np.empty(h.shape[1])
        spread = np.empty(h.shape[1])
        for prior, cols in ((cal.hold, slice(0, m)), (cal.dd, slice(m, 2 * m - 1))):
            dof = np.maximum(n[cols] - 1, 0)
            person_var = (ss[cols].sum() + SHRINK_PERSON * prior.within**2) / (dof.sum() + SHRINK_PERSON)
            sd[cols] = np.sqrt((ss[cols] + SHRINK_FEATURE * person_var) / (dof + SHRINK_FEATURE))
            center[cols] = prior.center
            spread[cols] = prior.spread
        fitted = (np.where(n > 0, mu, np.nan), sd, center, spread)
        self._model = (cal, fitted)
        return fitted

    def score(self, sample: Sample, calibration: ModelCalibration = FIXED) -> KeystrokeScore:
        """Compare one entry of the enrolled text -> raw log density ratio and calibrated LLR."""
        x = self._check(sample)
        mu, sd, center, spread = self._fit(calibration)
        use = ~np.isnan(x) & ~np.isnan(mu)
        if not use.any():
            raise KeystrokeInputError("events", "no timing in this entry can be compared with the profile")
        x, mu, sd, center, spread = x[use], mu[use], sd[use], center[use], spread[use]
        person = log_t((x - mu) / sd, NU_PERSON) - np.log(sd)
        population = log_t((x - center) / spread, NU_POPULATION) - np.log(spread)
        raw = float(np.sum(person - population))
        return KeystrokeScore(raw, calibration.platt.llr(raw), MODALITY, int(use.sum()))

    # ---- serialisation: versioned JSON, no pickle

    def to_bytes(self) -> bytes:
        rows = [[None if math.isnan(v) else round(float(v), 6) for v in row] for row in self.history]
        body = {
            "text_len": self.text_len,
            "salt": self._salt.hex(),
            "digest": self._digest.hex(),
            "max_history": self.max_history,
            "history": rows,
        }
        return dump_doc(MODALITY, MODEL_ID, MODEL_VERSION, body)

    @classmethod
    def from_bytes(cls, data: bytes) -> FixedTextProfile:
        doc = load_doc(data, MODALITY, MODEL_ID, MODEL_VERSION)
        try:
            text_len = int(doc["text_len"])
            hist = np.array(
                [[np.nan if v is None else float(v) for v in row] for row in doc["history"]], dtype=np.float64
            )
            if text_len < 1 or text_len > MAX_TEXT_LEN or hist.ndim != 2 or hist.shape[1] != 2 * text_len - 1:
                raise ValueError("history does not fit text_len")
            if len(hist) == 0 or (np.abs(hist) > MAX_ABS_LOG_TIME).any():
                raise ValueError("empty history or log times out of range")
            return cls(
                text_len,
                bytes.fromhex(doc["salt"]),
                bytes.fromhex(doc["digest"]),
                hist,
                int(doc["max_history"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystrokeInputError("profile", f"corrupt fixed-text profile: {exc}") from None
