"""Decoding (and, for tests and benchmarks, encoding) of the telephony encodings.

G.711 mu-law and A-law follow ITU-T G.711: decoding gives the same 16-bit values
as the standard library's audioop for every code, and so does A-law encoding.
mu-law encoding differs from audioop by one code on 381 negative inputs, where
audioop rounds away from zero first; G.711 truncates (tests pin both facts).
Everything is table lookups on whole chunks, so a 20 ms frame costs microseconds.
"""

from __future__ import annotations

import enum
import functools

import numpy as np

from authsvc.errors import InvalidInput


class Encoding(enum.Enum):
    PCM16_LE = "pcm16le"
    MULAW = "mulaw"
    ALAW = "alaw"

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self is Encoding.PCM16_LE else 1

    @property
    def full_scale(self) -> int:
        """Largest magnitude the encoding can produce, as a 16-bit value (clipping reference)."""
        return {Encoding.PCM16_LE: 32767, Encoding.MULAW: 32124, Encoding.ALAW: 32256}[self]


SUPPORTED_RATES = (8000, 16000)


def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


def _bit_length(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, np.floor(np.log2(np.maximum(x, 1))).astype(np.int32) + 1, 0)


def _mulaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), 32635) + 0x84
    exponent = np.maximum(_bit_length(magnitude >> 7) - 1, 0)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(pcm >= 0, 0x80, 0)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    exponent = np.minimum(_bit_length(magnitude >> 8), 7)
    mantissa = np.where(exponent == 0, magnitude >> 4, magnitude >> (exponent + 3)) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)


_PCM16, _CODES = np.dtype("<i2"), np.dtype(np.uint8)
_DECODE = {Encoding.MULAW: _mulaw_decode_table(), Encoding.ALAW: _alaw_decode_table()}
_ENCODE = {Encoding.MULAW: _mulaw_encode_table(), Encoding.ALAW: _alaw_encode_table()}


def decode(data: bytes, encoding: Encoding) -> np.ndarray:
    """Bytes of one chunk -> int16 samples. Odd-length PCM16 is a caller error, not padding."""
    if encoding is Encoding.PCM16_LE:
        if len(data) % 2:
            raise InvalidInput(
                "audio.data", f"PCM16 audio must have an even number of bytes, got {len(data)}"
            )
        return np.frombuffer(data, _PCM16).astype(np.int16)
    # take() skips fancy indexing's general machinery and a ready dtype skips parsing one: about
    # 0.4 us less per 20 ms chunk (numpy's per-call overhead is most of what is left).
    return _DECODE[encoding].take(np.frombuffer(data, _CODES))


def count_peaks(samples: np.ndarray, clip_level: int) -> int:
    """Samples whose magnitude is at least `clip_level` (the clipping count of SpeechTracker)."""
    return int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= clip_level))


def count_encoded_peaks(data: bytes, encoding: Encoding, clip_level: int) -> int:
    """count_peaks(decode(data, encoding), clip_level), counted on G.711 bytes without decoding:
    deleting the codes that decode to a peak and measuring what went costs well under 1 us."""
    if encoding is Encoding.PCM16_LE:
        return count_peaks(np.frombuffer(data, _PCM16), clip_level)  # no int16 copy to make
    if not isinstance(data, bytes | bytearray):
        data = bytes(data)  # a memoryview, which decode() takes too, has no translate()
    return len(data) - len(data.translate(None, _peak_codes(encoding, clip_level)))


@functools.lru_cache(maxsize=32)
def _peak_codes(encoding: Encoding, clip_level: int) -> bytes:
    """The G.711 codes that decode to a magnitude of at least `clip_level`."""
    return bytes(np.flatnonzero(np.abs(_DECODE[encoding].astype(np.int32)) >= clip_level).tolist())


def encode(samples: np.ndarray, encoding: Encoding) -> bytes:
    """int16 (or float in [-1, 1]) samples -> bytes in `encoding`."""
    pcm = to_int16(samples)
    if encoding is Encoding.PCM16_LE:
        return pcm.astype("<i2").tobytes()
    return _ENCODE[encoding][pcm.astype(np.int32) + 32768].tobytes()


def to_int16(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768).round().astype(np.int16)


def to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768.0


def check_rate(rate: int, field: str = "audio_format.sample_rate_hz") -> int:
    if rate not in SUPPORTED_RATES:
        raise InvalidInput(field, f"unsupported sample rate {rate} Hz; use one of {SUPPORTED_RATES}")
    return rate
