"""Device handling shared by the encoders and the batcher.

- `resolve_device("auto")`: CUDA when torch sees a GPU, else the CPU (whose
  intra-op thread count `load_encoder(threads=...)` sets).
- `to_device`: numpy -> device tensor; on CUDA through page-locked (pinned)
  host memory with a non-blocking copy, so a batch's upload overlaps the
  previous kernels instead of going through a pageable staging copy.
- `enable_half`: float16 compute on CUDA, accepted only after checking on probe
  signals that embeddings stay within `HALF_MIN_COSINE` of float32.
- `warm_up`: pays one-time costs (CUDA context, cuDNN/oneDNN kernel choice,
  allocator growth) before the first caller does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from authsvc.errors import ConfigError
from authsvc.voice.encoder import SpeakerEncoder

log = logging.getLogger(__name__)

#: Stated tolerance for half precision: every probe embedding must keep at
#: least this cosine similarity with its float32 twin. Scores are cosines and
#: calibrated thresholds sit near 0.6-0.8, so a shift below 5e-4 is far under
#: the spread between genuine and impostor trials. Measured with float16
#: emulated on the CPU: GE2E 0.999999 on LibriSpeech utterances.
HALF_MIN_COSINE = 0.9995

#: Lengths used by `warm_up` and the probe signals: distinct, so length-keyed
#: kernel selection and padding paths are exercised too.
PROBE_SECONDS = (1.0, 2.3, 4.1)


class DtypeSwitchable(SpeakerEncoder, Protocol):
    def set_compute_dtype(self, dtype: torch.dtype) -> None: ...


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; anything else unchanged."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 numpy array as a tensor on `device` (no copy at all on the CPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def probe_signals(sample_rate: int, seconds: Sequence[float] = PROBE_SECONDS) -> list[np.ndarray]:
    """Seeded voice-like test signals (modulated harmonics plus noise) in [-1, 1]."""
    rng = np.random.default_rng(1234)
    out = []
    for s in seconds:
        t = np.arange(int(s * sample_rate)) / sample_rate
        f0 = rng.uniform(100, 220)
        voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t)
        out.append((0.1 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return out


def warm_up(encoder: SpeakerEncoder) -> float:
    """Embed probe signals alone and together; returns the seconds it took."""
    started = time.perf_counter()
    # No shorter than the model takes (the countermeasure wants 1.5 s).
    shortest = getattr(encoder, "min_samples", 0) / encoder.sample_rate
    wavs = probe_signals(encoder.sample_rate, [max(s, shortest) for s in PROBE_SECONDS])
    encoder.embed_batch(wavs[:1])
    encoder.embed_batch(wavs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    log.info("%s warmed up in %.2f s", encoder.encoder_id, elapsed)
    return elapsed


def half_agreement(encoder: DtypeSwitchable, wavs: Sequence[np.ndarray] | None = None) -> float:
    """Lowest cosine between float16 and float32 embeddings of `wavs`; leaves the encoder in float32."""
    wavs = list(wavs) if wavs is not None else probe_signals(encoder.sample_rate)
    encoder.set_compute_dtype(torch.float32)
    reference = encoder.embed_batch(wavs)
    encoder.set_compute_dtype(torch.float16)
    try:
        half = encoder.embed_batch(wavs)
    finally:
        encoder.set_compute_dtype(torch.float32)
    return float(np.min(np.sum(reference * half, axis=1)))


def enable_half(encoder: SpeakerEncoder) -> float:
    """Switch a CUDA encoder to float16 if it keeps `HALF_MIN_COSINE`; returns the measured cosine.

    Refused on the CPU, where float16 is slower than float32, and for a model
    whose half-precision embeddings drift further than the tolerance.
    """
    device = getattr(encoder, "device", torch.device("cpu"))
    if torch.device(device).type != "cuda":
        raise ConfigError("half precision is only useful on CUDA; this encoder runs on the CPU")
    if not hasattr(encoder, "set_compute_dtype"):
        raise ConfigError(f"encoder {encoder.encoder_id} cannot switch precision")
    agreement = half_agreement(encoder)  # type: ignore[arg-type]
    if agreement < HALF_MIN_COSINE:
        raise ConfigError(
            f"{encoder.encoder_id} in float16 moves embeddings to cosine {agreement:.6f} of float32, "
            f"beyond the tolerance {HALF_MIN_COSINE}; run it in float32"
        )
    encoder.set_compute_dtype(torch.float16)  # type: ignore[attr-defined]
    log.info("%s runs in float16 (cosine to float32 >= %.6f on probes)", encoder.encoder_id, agreement)
    return agreement
