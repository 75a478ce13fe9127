"""The voice pipeline shared by enrollment, live sessions, the CLI and benchmarks:
decoded samples -> voice activity -> voiced audio at the encoder's rate.

Embedding only what the VAD kept (speech plus a short hangover) matches how
GE2E was trained (resemblyzer trims silences the same way) and keeps
long pauses and hold music out of the voiceprint.
"""

from __future__ import annotations

import numpy as np

from authsvc.audio.codecs import to_float
from authsvc.audio.resample import resample
from authsvc.audio.vad import SpeechTracker


def encoder_input(tracker: SpeechTracker, encoder_rate: int) -> np.ndarray:
    """The tracker's voiced audio as float32 at the encoder's sample rate."""
    return to_encoder_rate(tracker.voiced_audio(), tracker.sample_rate, encoder_rate)


def to_encoder_rate(samples: np.ndarray, rate: int, encoder_rate: int) -> np.ndarray:
    return resample(to_float(samples), rate, encoder_rate)


def track(
    samples: np.ndarray, sample_rate: int, clip_level: int = 32767, max_speech_s: float = 600.0
) -> SpeechTracker:
    """Runs a whole utterance (int16) through a fresh tracker."""
    tracker = SpeechTracker(sample_rate, max_speech_s=max_speech_s)
    tracker.feed(samples, clip_level)
    return tracker


def track_until(
    samples: np.ndarray, sample_rate: int, net_speech_s: float, frame_ms: int = 20
) -> tuple[SpeechTracker, int]:
    """Feeds `frame_ms` chunks as a live call would, stopping once `net_speech_s` is reached.

    -> (tracker, samples consumed): what a session has heard at its first decision.
    """
    tracker = SpeechTracker(sample_rate, max_speech_s=600.0)
    step = sample_rate * frame_ms // 1000
    used = 0
    while used < samples.size and tracker.net_speech_s < net_speech_s:
        tracker.feed(samples[used : used + step], 32767)
        used += step
    return tracker, min(used, samples.size)
