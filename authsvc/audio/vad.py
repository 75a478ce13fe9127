"""Streaming voice-activity detection: counts net speech and keeps the voiced audio.

WebRTC's VAD (the GMM detector from Chromium, via `webrtcvad`) classifies 30 ms
frames at 8 or 16 kHz. Two decisions are made per frame, for two purposes:

- counting: a frame counts toward net speech when the stricter mode-2 VAD
  says speech, so "3 s of net speech" in a policy means real speech, not line
  noise;
- keeping: frames the permissive mode-1 VAD calls speech, plus a 300 ms
  hangover (word endings, pauses between words), go to the encoder, so only
  long silences and hold gaps are cut. That setting gave the lowest EER of
  those measured (modes 0-3, hangovers 90 ms to unlimited) on LibriSpeech
  clean, 8 kHz mu-law and 3 s conditions: trimming tightly (mode 3, as
  Resemblyzer does) removes frames the speaker encoder uses.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable

import numpy as np

from authsvc.audio.codecs import count_peaks

with warnings.catch_warnings():
    # webrtcvad 2.0.10 imports the deprecated pkg_resources only for its version string.
    warnings.simplefilter("ignore", UserWarning)
    import webrtcvad

FRAME_MS = 30


class SpeechTracker:
    """Feeds on int16 chunks of any size; exposes net speech seconds and the voiced samples.

    The voiced buffer is bounded (`max_speech_s`): a long call keeps its latest
    speech, so memory per session is fixed whatever the call length.
    """

    def __init__(
        self,
        sample_rate: int,
        aggressiveness: int = 1,
        count_aggressiveness: int = 2,
        hangover_frames: int = 10,
        max_speech_s: float = 60.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_len = sample_rate * FRAME_MS // 1000
        self._keep_vad = webrtcvad.Vad(aggressiveness)
        self._count_vad = webrtcvad.Vad(count_aggressiveness)
        self._hangover = hangover_frames
        self._since_speech = hangover_frames + 1
        self._frame_bytes = 2 * self.frame_len
        # Audio is kept as PCM bytes: webrtcvad takes bytes, and slicing and joining bytes
        # costs far less per 20 ms chunk than numpy's small-array overhead.
        self._pending = b""  # the samples of an incomplete frame
        self._voiced: deque[bytes] = deque(maxlen=int(max_speech_s * 1000 / FRAME_MS))
        self.speech_frames = 0
        self.voiced_frames = 0  # frames ever kept, so callers can ask for what is new
        self.total_frames = 0
        self.total_samples = 0
        self.peak_hits = 0

    @property
    def net_speech_s(self) -> float:
        return self.speech_frames * FRAME_MS / 1000

    @property
    def total_s(self) -> float:
        return self.total_samples / self.sample_rate

    def feed(self, samples: np.ndarray, clip_level: int, peak_hits: int | None = None) -> None:
        """`peak_hits`: the chunk's samples at or above `clip_level` in magnitude, where the caller
        counted them more cheaply (codecs.count_encoded_peaks on G.711 bytes); counted here if None."""
        if samples.dtype != np.int16:
            # Frames are cut from the bytes at two a sample: other samples would be misread, silently.
            raise TypeError(f"SpeechTracker takes int16 samples, got {samples.dtype}")
        self.total_samples += samples.size
        self.peak_hits += count_peaks(samples, clip_level) if peak_hits is None else peak_hits
        buf = self._pending + samples.tobytes()  # b"" + x is x itself: no copy when nothing waits
        step = self._frame_bytes
        end = len(buf) - len(buf) % step
        for i in range(0, end, step):
            self._classify(buf[i : i + step])
        self._pending = buf[end:]

    def _classify(self, pcm: bytes) -> None:
        self.total_frames += 1
        if self._count_vad.is_speech(pcm, self.sample_rate):
            self.speech_frames += 1
        if self._keep_vad.is_speech(pcm, self.sample_rate):
            self._since_speech = 0
        else:
            self._since_speech += 1
        if self._since_speech <= self._hangover:
            self._voiced.append(pcm)
            self.voiced_frames += 1

    def voiced_since(self, mark: int) -> tuple[np.ndarray, int]:
        """Voiced audio kept after `mark` (a previous `voiced_frames`) -> (int16 samples, new mark).

        Frames that already fell out of the bounded buffer are gone; what is left is returned.
        """
        new = min(self.voiced_frames - mark, len(self._voiced))
        if new <= 0:
            return np.zeros(0, dtype=np.int16), self.voiced_frames
        return _samples(list(self._voiced)[-new:]), self.voiced_frames

    def voiced_audio(self) -> np.ndarray:
        """The kept speech frames, concatenated, as int16 at the input rate."""
        return _samples(self._voiced)


def _samples(frames: Iterable[bytes]) -> np.ndarray:
    """PCM frames -> one writable int16 array (a bytearray join: a single copy)."""
    return np.frombuffer(bytearray().join(frames), dtype=np.int16)
