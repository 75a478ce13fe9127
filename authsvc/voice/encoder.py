"""The speaker-encoder contract and the input checks every encoder shares.

Callers (the batching core, enrollment, bench) code against `SpeakerEncoder`
only, so an encoder can be swapped by configuration. Templates record
`encoder_id` and `version`, which is why `version` is derived from the weight
bytes: two processes agree on it exactly when they compute the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from authsvc.errors import InvalidInput

#: Shortest utterance either encoder accepts. Below a quarter of a second the
#: GE2E window is almost all zero padding and ECAPA sees ~25 frames; neither
#: says anything useful about a speaker. Net-speech gating for decisions is
#: stricter and lives in `authsvc.audio`; this is only the technical floor.
MIN_AUDIO_SECONDS = 0.25

#: Largest |sample| accepted. The contract is [-1, 1]; the headroom admits a
#: resampler's overshoot on clipped audio, while unscaled integer PCM (values
#: in the hundreds or thousands) is refused instead of silently mis-embedded.
MAX_ABS_SAMPLE = 2.0


@runtime_checkable
class SpeakerEncoder(Protocol):
    """Turns utterances into fixed-size, L2-normalised speaker embeddings."""

    encoder_id: str  # "ge2e" | "ecapa" | "wespeaker" (registry.KNOWN_ENCODERS names the loaders)
    version: str  # identifies the weights, e.g. "resemblyzer-pretrained-<sha256[:12]>"
    sample_rate: int  # 16000 for both encoders
    embedding_dim: int

    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """Embed each float32 mono waveform in [-1, 1] at `sample_rate`.

        Returns float32 (B, D), every row L2-normalised. A row depends only on
        its own waveform, never on the other items of the batch, so a caller
        cannot tell whether it was batched. Too-short audio raises
        `InvalidInput("audio", ...)`.
        """
        ...


def check_wavs(wavs: Sequence[np.ndarray], *, min_samples: int) -> list[np.ndarray]:
    """Validate a batch and return contiguous float32 copies-or-views.

    Done once here so both encoders refuse bad audio with the same
    `InvalidInput("audio", ...)` messages, before any model runs.
    """
    if isinstance(wavs, np.ndarray) and wavs.ndim != 2:
        # A bare 1-D array would be iterated sample by sample.
        raise InvalidInput("audio", "expected a sequence of 1-D waveforms, got a single array")
    out: list[np.ndarray] = []
    for i, wav in enumerate(wavs):
        arr = np.asarray(wav)
        if arr.ndim != 1:
            raise InvalidInput("audio", f"item {i}: expected mono 1-D samples, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise InvalidInput("audio", f"item {i}: expected float samples in [-1, 1], got dtype {arr.dtype}")
        if arr.shape[0] < min_samples:
            raise InvalidInput(
                "audio",
                f"item {i}: {arr.shape[0]} samples is shorter than the minimum {min_samples}",
            )
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InvalidInput("audio", f"item {i}: contains NaN or infinite samples")
        peak = float(np.abs(arr).max())
        if peak > MAX_ABS_SAMPLE:
            raise InvalidInput(
                "audio",
                f"item {i}: peak {peak:.4g} is far outside [-1, 1] (unscaled integer PCM?)",
            )
        out.append(arr)
    return out
