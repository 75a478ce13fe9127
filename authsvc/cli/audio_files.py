"""Turning an audio file into what the service accepts (PCM16 or G.711 at 8/16 kHz)."""

from __future__ import annotations

from pathlib import Path

from authsvc.audio.codecs import Encoding, encode
from authsvc.audio.files import read_audio_file
from authsvc.audio.resample import resample


def file_to_wire(
    path: Path, encoding: Encoding = Encoding.PCM16_LE, rate: int | None = None, channel: int | None = None
) -> tuple[bytes, int]:
    """-> (encoded bytes, sample rate) of one channel (`channel`, required for a multi-channel
    file). Keeps 8/16 kHz files as they are unless `rate` is given."""
    wav, src_rate = read_audio_file(path, channel)
    if rate is None:
        rate = src_rate if src_rate in (8000, 16000) else 16000
    return encode(resample(wav, src_rate, rate), encoding), rate
