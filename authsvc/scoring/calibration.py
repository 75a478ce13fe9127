"""Score calibration: turns a target false-accept rate into a score threshold.

A calibration file holds impostor-score quantiles of one encoder (id and
version) measured on a named data set (`bench/calibrate_voice.py`,
`bench/calibrate_keystroke.py` make them), and an affine map from raw score to
a natural-log likelihood ratio (logistic regression with equal priors on
genuine and impostor trials), the scale on which modalities are fused.
Keystroke scores are LLRs already (slope 1, offset 0). Policies speak in
false-accept rates, never in raw numbers, so a new encoder or version only
needs a new calibration file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from authsvc.errors import ConfigError


@dataclass(frozen=True)
class Calibration:
    encoder_id: str
    encoder_version: str
    data: str
    impostor_trials: int
    # (far, threshold) pairs, far decreasing as threshold increases.
    fars: tuple[float, ...]
    thresholds: tuple[float, ...]
    # llr = llr_slope * score + llr_offset
    llr_slope: float = 1.0
    llr_offset: float = 0.0
    genuine_trials: int = 0
    # Observed FAR and FRR at each target on speech not used to fit this file (per data set:
    # protocol, trial counts, points), so an operator can see how far its thresholds transfer.
    validation: tuple[dict, ...] = ()

    def llr(self, score: float) -> float:
        return self.llr_slope * score + self.llr_offset

    def threshold_for(self, target_far: float) -> float:
        """Score at which the impostor accept rate equals `target_far` (log-FAR interpolation)."""
        floor = 1.0 / self.impostor_trials
        if target_far < floor:
            raise ConfigError(
                f"{self.encoder_id} calibration ({self.data}) rests on {self.impostor_trials} impostor "
                f"trials and cannot resolve a false-accept rate below {floor:.2g} (asked {target_far:g})"
            )
        log_far = np.log(np.asarray(self.fars))
        # np.interp needs increasing x: walk from the rarest false accept up.
        return float(np.interp(np.log(target_far), log_far[::-1], np.asarray(self.thresholds)[::-1]))

    def far_at(self, threshold: float) -> float:
        return float(np.exp(np.interp(threshold, self.thresholds, np.log(self.fars))))

    @staticmethod
    def from_impostor_scores(
        scores: np.ndarray, encoder_id: str, encoder_version: str, data: str
    ) -> Calibration:
        scores = np.sort(np.asarray(scores, dtype=np.float64))
        n = scores.size
        fars = np.geomspace(1.0 / n, 0.5, 60)[::-1]
        thresholds = [float(np.quantile(scores, 1 - f)) for f in fars]
        return Calibration(encoder_id, encoder_version, data, n, tuple(map(float, fars)), tuple(thresholds))

    def with_llr_fit(self, genuine: np.ndarray, impostor: np.ndarray) -> Calibration:
        """Fits llr = a * score + b by logistic regression, genuine and impostor weighted equally."""
        from scipy.optimize import minimize

        g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)

        def loss(ab: np.ndarray) -> float:
            a, b = ab
            return float(np.logaddexp(0, -(a * g + b)).mean() + np.logaddexp(0, a * i + b).mean())

        a, b = minimize(loss, x0=np.array([10.0, -5.0]), method="Nelder-Mead").x
        return replace(self, llr_slope=float(a), llr_offset=float(b), genuine_trials=int(g.size))

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)


def calibration_path(encoder_id: str) -> Path:
    return Path(str(resources.files("authsvc.scoring") / "calibrations" / f"{encoder_id}.json"))


def load_calibration(encoder_id: str, encoder_version: str, path: Path | None = None) -> Calibration:
    path = path or calibration_path(encoder_id)
    if not path.exists():
        raise ConfigError(
            f"no score calibration for encoder {encoder_id!r} ({path}); run bench/calibrate_voice.py "
            "or give the policy an explicit voice.threshold"
        )
    raw = json.loads(path.read_text())
    cal = Calibration(
        **{
            **raw,
            "fars": tuple(raw["fars"]),
            "thresholds": tuple(raw["thresholds"]),
            "validation": tuple(raw.get("validation", ())),
        }
    )
    if cal.encoder_version != encoder_version:
        raise ConfigError(
            f"{path} calibrates {encoder_id} version {cal.encoder_version}, but the loaded model is "
            f"{encoder_version}; recalibrate with bench/calibrate_voice.py"
        )
    return cal
