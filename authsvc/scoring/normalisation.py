"""Adaptive symmetric score normalisation (AS-norm) of cosine scores against an impostor cohort.

A raw cosine depends on the two sides as well as on whether they match: some
templates (and some probes) score high against everyone. AS-norm (Matejka et al.,
Interspeech 2017; Cumani et al. 2011 for the symmetric form) centres and scales a
score by how each side scores against its `top_k` closest cohort speakers:

    s' = ((s - mu_e) / sigma_e + (s - mu_p) / sigma_p) / 2

where mu_e, sigma_e are the mean and standard deviation of the template's top-k
cohort scores, and mu_p, sigma_p the probe's. The cohort should be heard the way
each side is: template statistics against cohort speech in the probe's condition,
probe statistics against cohort speech in the enrollment's condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from authsvc.errors import ConfigError


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Cohort:
    """Impostor cohort embeddings, one row per cohort speaker, as heard in one condition."""

    embeddings: np.ndarray
    top_k: int = 100

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or len(self.embeddings) < 2:
            raise ConfigError("a score-normalisation cohort needs at least 2 embeddings")
        if not 2 <= self.top_k <= len(self.embeddings):
            raise ConfigError(f"top_k must be 2..{len(self.embeddings)}, got {self.top_k}")

    def stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (mean, std) of each row of `x` against its top_k closest cohort embeddings."""
        scores = _unit(np.atleast_2d(x)) @ _unit(self.embeddings).T
        top = -np.partition(-scores, self.top_k - 1, axis=1)[:, : self.top_k]
        return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-6)


def as_norm(
    templates: np.ndarray, probes: np.ndarray, probe_side_cohort: Cohort, template_side_cohort: Cohort
) -> np.ndarray:
    """Normalised scores, templates x probes. `probe_side_cohort` is cohort speech in the
    probes' condition (it normalises the templates); `template_side_cohort` the other way."""
    raw = _unit(np.atleast_2d(templates)) @ _unit(np.atleast_2d(probes)).T
    mu_t, sd_t = probe_side_cohort.stats(templates)
    mu_p, sd_p = template_side_cohort.stats(probes)
    return 0.5 * ((raw - mu_t[:, None]) / sd_t[:, None] + (raw - mu_p[None, :]) / sd_p[None, :])
