"""AS-norm: a template that scores high against everyone is brought back to the others' scale."""

from __future__ import annotations

import numpy as np
import pytest

from authsvc.errors import ConfigError
from authsvc.scoring.normalisation import Cohort, as_norm


def _speakers(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    return rng.standard_normal((n, dim))


def test_a_template_close_to_everyone_is_normalised_to_the_others_false_accept_rate():
    rng = np.random.default_rng(3)
    common = rng.standard_normal(32)  # what every voice shares (channel, language)
    cohort = Cohort(_speakers(rng, 200) + 0.5 * common, top_k=50)
    ordinary = _speakers(rng, 20) + 0.5 * common
    lamb = rng.standard_normal(32) + 3.0 * common  # matches anyone: a lamb (Doddington's zoo)
    probes = _speakers(rng, 300) + 0.5 * common
    templates = np.vstack([ordinary, lamb])
    raw = (templates / np.linalg.norm(templates, axis=1, keepdims=True)) @ (
        probes / np.linalg.norm(probes, axis=1, keepdims=True)
    ).T
    norm = as_norm(templates, probes, cohort, cohort)
    far = {}
    for scores, name in ((raw, "raw"), (norm, "as-norm")):
        threshold = np.quantile(scores[:-1], 0.99)  # FAR 1 % over the ordinary templates
        far[name] = float((scores[-1] >= threshold).mean())
    assert far["raw"] > 0.15, "on raw cosine one impostor in five or more gets in as the lamb"
    assert far["as-norm"] < far["raw"] / 3, far


def test_as_norm_is_symmetric_in_its_two_sides():
    rng = np.random.default_rng(4)
    c = Cohort(_speakers(rng, 30), top_k=10)
    t, p = _speakers(rng, 4), _speakers(rng, 6)
    assert np.allclose(as_norm(t, p, c, c), as_norm(p, t, c, c).T)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (10, 1), (10, 11)])
def test_a_cohort_that_cannot_give_statistics_is_refused(n, k):
    with pytest.raises(ConfigError):
        Cohort(np.ones((n, 8)), top_k=k)
