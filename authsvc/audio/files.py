"""Reading audio files (WAV, FLAC, OGG... anything libsndfile reads) for enrollment and tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from authsvc.errors import InvalidInput


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """-> (float32 mono samples in [-1, 1], sample rate). Rejects unreadable, empty and NaN audio."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise InvalidInput("file", f"{path}: cannot read audio ({exc})") from exc
    if data.size == 0:
        raise InvalidInput("file", f"{path}: file holds no audio samples")
    if not np.isfinite(data).all():
        raise InvalidInput("file", f"{path}: audio contains NaN or infinite samples")
    return data.mean(axis=1), int(rate)
