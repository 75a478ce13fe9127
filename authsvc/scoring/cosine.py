"""Cosine scoring of voice embeddings against a customer's aggregate template."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from authsvc.errors import EncoderMismatch


def embedding_to_bytes(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


def embedding_from_bytes(payload: bytes) -> np.ndarray:
    return np.frombuffer(payload, dtype="<f4").copy()


def aggregate(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of L2-normalised sample embeddings, renormalised: the usual speaker model.

    Averaging before scoring (rather than averaging scores) is what GE2E and
    ECAPA are trained for, and it lets a template grow with every new sample.
    """
    stacked = np.stack([e / np.linalg.norm(e) for e in embeddings])
    mean = stacked.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


MIN_NORM = 1e-6


def usable(vec: np.ndarray) -> bool:
    """Whether an embedding can be scored: finite and not (near) zero. An encoder gives a zero
    vector when every window's activations vanish, which crafted audio can cause; its cosine
    is NaN, which must never count as a match."""
    return bool(np.all(np.isfinite(vec))) and float(np.linalg.norm(vec)) > MIN_NORM


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_same_encoder(probe: tuple[str, str], template: tuple[str, str]) -> None:
    if probe != template:
        raise EncoderMismatch(
            f"probe was embedded by {probe[0]}/{probe[1]} but the template by "
            f"{template[0]}/{template[1]}; scores across encoders are meaningless"
        )
