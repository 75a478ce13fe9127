"""Population priors and score calibration of the keystroke models.

Both models produce a raw score that is already a log density ratio under
their simplified model (same person vs. the population); real data is not
that model, so a Platt mapping, linear in the raw score, turns it into a
calibrated natural-log likelihood ratio: llr = a * raw + b, LLR > 0 favours
"same person". It is fitted by logistic regression with the two classes
weighted equally (target prior 0.5), so that the logit is an LLR and not
posterior log-odds at the trial mix of the fitting data.

Every constant below says on what data, which split and by which command it
was fitted. Refit them with that command after any change to a model, and
bump the model version (`fixed_text.MODEL_VERSION` / `free_text.MODEL_VERSION`)
so stored profiles cannot be scored with constants they were not made for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


@dataclass(frozen=True)
class Prior:
    """Population facts about one log-time feature type (hold or DD), in log seconds.

    center/spread: mean and standard deviation of all log times across all
    people (the impostor population, a Student-t in the models).
    within: typical within-person standard deviation of one feature, used
    as a pseudo-observation when a profile has few samples.
    """

    center: float
    spread: float
    within: float


@dataclass(frozen=True)
class Platt:
    """llr = a * raw + b (natural log)."""

    a: float
    b: float

    def llr(self, raw: float) -> float:
        return float(self.a * raw + self.b)


@dataclass(frozen=True)
class ModelCalibration:
    """Everything fitted that one keystroke model needs: population priors and the Platt mapping."""

    hold: Prior
    dd: Prior
    platt: Platt
    fitted_on: str


# --- fixed text ------------------------------------------------------------
# dd: keystroke100 users 51-100 (development split, 10 typings each, 3,500
#     log DD latencies): `python -m bench.keystroke_fixed --fit` prints it.
# hold: keystroke100 has no holds, so this is the free-text hold prior below
#     (freetext-dev, per-key within-person spread).
# platt: keystroke100 users 51-100, profile from typings 1-5, genuine probes =
#     typings 6-10, impostor probes = all typings of the other development
#     users; same command. The benchmark's headline EER is on users 1-50,
#     which no constant here has seen.
# Caveat: raw sums one term per compared timing, and these data have 7 DD
# timings and no holds; for longer texts, or with holds, the mapping is an
# extrapolation until refitted on such data.
FIXED = ModelCalibration(
    hold=Prior(center=-2.4500, spread=0.4856, within=0.2978),
    dd=Prior(center=-1.4815, spread=0.4625, within=0.2212),
    platt=Platt(a=0.5906, b=-0.6963),
    fitted_on="keystroke100 users 51-100 (dd, platt); freetext-dev (hold)",
)

# --- free text -------------------------------------------------------------
# Fitted on the SAME data the free-text benchmark reports on (freetext-dev:
# only 10 usable people, too few to hold some out), by
# `python -m bench.keystroke_free --fit`: priors from every usable file,
# Platt mapping from all windows of 50, 100 and 200 keystrokes with all
# three enrollment forms pooled. Treat its LLRs as indicative until refitted
# on separate data.
FREE = ModelCalibration(
    hold=Prior(center=-2.4500, spread=0.4856, within=0.2978),
    dd=Prior(center=-1.8151, spread=0.6773, within=0.4694),
    platt=Platt(a=19.3297, b=-5.3225),
    fitted_on="freetext-dev, all usable users and forms (same data as the benchmark)",
)


def fit_platt(genuine: np.ndarray, impostor: np.ndarray) -> Platt:
    """Prior-weighted logistic regression of label on raw score -> Platt(a, b)."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    if g.size == 0 or i.size == 0:
        raise ValueError("Platt calibration needs genuine and impostor scores")
    scale = float(np.std(np.concatenate([g, i]))) or 1.0

    def loss(w: np.ndarray) -> float:
        a, b = w
        return float(
            np.mean(np.logaddexp(0.0, -(a * g / scale + b))) + np.mean(np.logaddexp(0.0, a * i / scale + b))
        )

    res = minimize(loss, np.array([1.0, 0.0]), method="L-BFGS-B")
    return Platt(a=float(res.x[0] / scale), b=float(res.x[1]))


def cllr(genuine_llr: np.ndarray, impostor_llr: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits: 0 is perfect, 1 is a system that says nothing."""
    g = np.asarray(genuine_llr, dtype=np.float64)
    i = np.asarray(impostor_llr, dtype=np.float64)
    return float((np.mean(np.logaddexp(0.0, -g)) + np.mean(np.logaddexp(0.0, i))) / (2 * np.log(2)))


def error_rates(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-accept, false-reject) rates at every distinct threshold, strictest first.

    Accept means score >= threshold; a leading (0, 1) point is the reject-all threshold.
    """
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    scores = np.concatenate([g, i])
    labels = np.concatenate([np.ones(g.size), np.zeros(i.size)])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    far = np.r_[0.0, np.cumsum(1 - labels)[last_of_tie] / i.size]
    frr = np.r_[1.0, 1 - np.cumsum(labels)[last_of_tie] / g.size]
    return far, frr


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate, interpolated on the ROC segment where FAR and FRR cross (ties handled)."""
    far, frr = error_rates(genuine, impostor)
    k = int(np.argmax(frr <= far))
    d0, d1 = frr[k - 1] - far[k - 1], frr[k] - far[k]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(far[k - 1] + t * (far[k] - far[k - 1]))
