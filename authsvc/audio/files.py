"""Reading audio files (WAV, FLAC, OGG... anything libsndfile reads) for enrollment and tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from authsvc.errors import InvalidInput

CHANNEL_NAMES = {"left": 0, "right": 1}


def parse_channel(value: str) -> int:
    """A channel named on the command line: 0, 1, ... or left/right."""
    name = value.strip().lower()
    if name in CHANNEL_NAMES:
        return CHANNEL_NAMES[name]
    if name.isdigit():
        return int(name)
    raise InvalidInput("channel", f"{value!r} is not a channel: give 0, 1, ... or left/right")


def read_audio_file(path: str | Path, channel: int | None = None) -> tuple[np.ndarray, int]:
    """-> (float32 samples in [-1, 1] of one channel, sample rate). Rejects unreadable, empty and
    NaN audio. A recording with several channels needs `channel` (the customer's): mixing a
    customer with an agent would enroll or verify two voices as one, so nothing is downmixed."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise InvalidInput("file", f"{path}: cannot read audio ({exc})") from exc
    if data.size == 0:
        raise InvalidInput("file", f"{path}: file holds no audio samples")
    if not np.isfinite(data).all():
        raise InvalidInput("file", f"{path}: audio contains NaN or infinite samples")
    count = data.shape[1]
    if channel is None and count > 1:
        raise InvalidInput(
            "file",
            f"{path}: {count} channels; name the customer's with --channel (0-{count - 1}, or left/right): "
            "channels are never mixed",
        )
    index = channel or 0
    if not 0 <= index < count:
        raise InvalidInput("channel", f"{path}: has {count} channel(s); channel {index} does not exist")
    return np.ascontiguousarray(data[:, index]), int(rate)
