"""Free-text typing profiles: any text, compared through the keys and digraphs it shares.

A profile keeps, per key, statistics of its log hold time, and per digraph
(two consecutive non-modifier keys, case folded) statistics of its log
press-to-press time: count, mean, sum of squared deviations. A probe of
different text is compared on whatever keys and digraphs it shares with
the profile (seen at least `MIN_COUNT` times at enrollment).

Each shared observation x (log seconds) of a key or digraph g of type T adds

    log t5((x - mu_g) / sd_g) - log sd_g  -  [log t2((x - c_T) / s_T) - log s_T]

a log density ratio of "this person" against the population prior of its
type (`calibration.FREE`); sd_g is the key's own spread shrunk towards the
person's spread over all keys of that type, widened for the uncertainty of
mu_g. raw = the mean of these terms over the shared observations. Why the
mean and not the sum: neighbouring keystrokes are far from independent, and
on freetext-dev one Platt mapping of the mean fits windows of 50, 100 and
200 keystrokes within 0.01 bit of Cllr of a mapping per length, where
sum / sqrt(n) came out overconfident at 200 (0.49 vs 0.20 bits).
`KeystrokeScore.llr = FREE.platt.llr(raw)` is the calibrated natural-log
likelihood ratio (> 0 favours the enrolled person); a probe sharing nothing
with the profile gets raw = llr = 0 (no evidence either way).

History rule: each statistic carries at most `max_count` observations of
weight (default 200). When an update pushes a count past it, count and
squared deviations are scaled back to `max_count` after the new data are
merged, so older typing fades geometrically and the profile tracks a
customer's current rhythm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from authsvc.keystroke.base import KeystrokeScore, dump_doc, load_doc, log_t
from authsvc.keystroke.calibration import FREE, ModelCalibration, Prior
from authsvc.keystroke.events import KeystrokeInputError, Sample
from authsvc.keystroke.features import FreeTextObservations, free_text_observations

MODALITY = "keystroke_free"
MODEL_ID = "keystroke-free-tllr"
MODEL_VERSION = "1"
DEFAULT_MAX_COUNT = 200
MAX_ENTRIES = 20_000  # distinct keys + digraphs a stored profile may hold

# Model constants, chosen on freetext-dev (see bench/keystroke_free.py).
MIN_COUNT = 2  # enrollment occurrences before a key or digraph is compared
NU_PERSON = 5.0
NU_POPULATION = 2.0
SHRINK_ENTRY = 5.0  # pseudo-observations pulling an entry's spread to the person's spread
SHRINK_PERSON = 2.0  # pseudo-degrees of freedom pulling the person's spread to the prior

Stats = dict[object, list[float]]  # key -> [count, mean, sum of squared deviations]


def _merge(stats: Stats, keys: Iterable[object], values: np.ndarray, cap: float) -> None:
    groups: dict[object, list[float]] = {}
    for k, v in zip(keys, values, strict=True):
        groups.setdefault(k, []).append(float(v))
    for k, vs in groups.items():
        arr = np.asarray(vs)
        nb, mb = float(arr.size), float(arr.mean())
        m2b = float(((arr - mb) ** 2).sum())
        na, ma, m2a = stats.get(k, (0.0, 0.0, 0.0))
        n = na + nb
        delta = mb - ma
        mean = ma + delta * nb / n
        m2 = m2a + m2b + delta * delta * na * nb / n
        if n > cap:
            m2 *= cap / n
            n = cap
        stats[k] = [n, mean, m2]


class FreeTextProfile:
    """A person's key and digraph timing statistics; see the module docstring for the model."""

    modality = MODALITY

    def __init__(
        self, holds: Stats | None = None, digraphs: Stats | None = None, max_count: int = DEFAULT_MAX_COUNT
    ) -> None:
        if max_count < MIN_COUNT:
            raise ValueError(f"max_count must be at least {MIN_COUNT}")
        self.holds: Stats = holds or {}
        self.digraphs: Stats = digraphs or {}
        self.max_count = max_count
        self.n_keystrokes = 0
        self._model: tuple[ModelCalibration, dict] | None = None

    @classmethod
    def build(cls, samples: Sequence[Sample], *, max_count: int = DEFAULT_MAX_COUNT) -> FreeTextProfile:
        """Profile from one or more stretches of typing (any text)."""
        profile = cls(max_count=max_count)
        profile.update(samples)
        return profile

    def update(self, samples: Sequence[Sample]) -> None:
        """Merge more typing into the profile (in place); see the history rule above."""
        if not samples:
            raise KeystrokeInputError("samples", "enrollment needs at least one sample")
        observations = [free_text_observations(s.events) for s in samples]
        if not any(o.hold.size or o.dd.size for o in observations):
            raise KeystrokeInputError("samples", "no hold or digraph timing in these samples to learn from")
        holds = {k: list(v) for k, v in self.holds.items()}
        digraphs = {k: list(v) for k, v in self.digraphs.items()}
        for o in observations:
            _merge(holds, o.hold_keys, o.hold, self.max_count)
            _merge(digraphs, o.digraphs, o.dd, self.max_count)
        if len(holds) + len(digraphs) > MAX_ENTRIES:
            raise KeystrokeInputError(
                "samples", f"profile would hold more than {MAX_ENTRIES} keys and digraphs"
            )
        self.holds, self.digraphs = holds, digraphs
        self.n_keystrokes += sum(o.n_keystrokes for o in observations)
        self._model = None

    def _table(self, stats: Stats, prior: Prior) -> dict[object, tuple[float, float]]:
        """key -> (mean, predictive sd) for entries seen at least MIN_COUNT times."""
        dof = sum(max(n - 1.0, 0.0) for n, _, _ in stats.values())
        ss = sum(m2 for _, _, m2 in stats.values())
        person_var = (ss + SHRINK_PERSON * prior.within**2) / (dof + SHRINK_PERSON)
        table = {}
        for k, (n, mean, m2) in stats.items():
            if n >= MIN_COUNT:
                var = (m2 + SHRINK_ENTRY * person_var) / (n - 1.0 + SHRINK_ENTRY)
                table[k] = (mean, math.sqrt(var * (1.0 + 1.0 / n)))
        return table

    def _fit(self, cal: ModelCalibration) -> dict:
        if self._model is None or self._model[0] is not cal:
            self._model = (
                cal,
                {"hold": self._table(self.holds, cal.hold), "dd": self._table(self.digraphs, cal.dd)},
            )
        return self._model[1]

    def score_observations(
        self, obs: FreeTextObservations, calibration: ModelCalibration = FREE
    ) -> KeystrokeScore:
        """Score pre-extracted observations (what `score` does after feature extraction)."""
        tables = self._fit(calibration)
        x: list[float] = []
        mu: list[float] = []
        sd: list[float] = []
        center: list[float] = []
        spread: list[float] = []
        for name, keys, values, prior in (
            ("hold", obs.hold_keys, obs.hold, calibration.hold),
            ("dd", obs.digraphs, obs.dd, calibration.dd),
        ):
            table = tables[name]
            for k, v in zip(keys, values, strict=True):
                entry = table.get(k)
                if entry is not None:
                    x.append(float(v))
                    mu.append(entry[0])
                    sd.append(entry[1])
                    center.append(prior.center)
                    spread.append(prior.spread)
        if not x:
            return KeystrokeScore(0.0, 0.0, MODALITY, 0)
        xa, sda, spa = np.array(x), np.array(sd), np.array(spread)
        person = log_t((xa - np.array(mu)) / sda, NU_PERSON) - np.log(sda)
        population = log_t((xa - np.array(center)) / spa, NU_POPULATION) - np.log(spa)
        raw = float(np.mean(person - population))
        return KeystrokeScore(raw, calibration.platt.llr(raw), MODALITY, len(x))

    def score(self, sample: Sample, calibration: ModelCalibration = FREE) -> KeystrokeScore:
        """Compare a stretch of typing (any text) -> raw score and calibrated LLR."""
        return self.score_observations(free_text_observations(sample.events), calibration)

    # ---- serialisation: versioned JSON, no pickle

    def to_bytes(self) -> bytes:
        body = {
            "max_count": self.max_count,
            "n_keystrokes": self.n_keystrokes,
            "holds": [
                [k, round(n, 4), round(m, 6), round(s, 6)] for k, (n, m, s) in sorted(self.holds.items())
            ],
            "digraphs": [
                [a, b, round(n, 4), round(m, 6), round(s, 6)]
                for (a, b), (n, m, s) in sorted(self.digraphs.items())
            ],
        }
        return dump_doc(MODALITY, MODEL_ID, MODEL_VERSION, body)

    @classmethod
    def from_bytes(cls, data: bytes) -> FreeTextProfile:
        doc = load_doc(data, MODALITY, MODEL_ID, MODEL_VERSION)
        try:
            holds = {str(k): _entry(n, m, s) for k, n, m, s in doc["holds"]}
            digraphs = {(str(a), str(b)): _entry(n, m, s) for a, b, n, m, s in doc["digraphs"]}
            if len(holds) + len(digraphs) > MAX_ENTRIES:
                raise ValueError(f"more than {MAX_ENTRIES} entries")
            profile = cls(holds, digraphs, int(doc["max_count"]))
            profile.n_keystrokes = int(doc["n_keystrokes"])
            return profile
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystrokeInputError("profile", f"corrupt free-text profile: {exc}") from None


def _entry(n: object, mean: object, m2: object) -> list[float]:
    vals = [float(n), float(mean), float(m2)]  # type: ignore[arg-type]
    if not all(math.isfinite(v) for v in vals) or vals[0] <= 0 or vals[2] < 0 or abs(vals[1]) > 20.0:
        raise ValueError(f"bad statistics {vals}")
    return vals
