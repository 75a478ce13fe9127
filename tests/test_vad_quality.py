"""Voice activity (net speech counting, voiced buffer) and the quality verdicts built on it."""

from __future__ import annotations

import numpy as np
import pytest

from authsvc.audio.codecs import Encoding, decode, encode, to_int16
from authsvc.audio.quality import Quality, assess
from authsvc.audio.resample import resample
from authsvc.audio.vad import FRAME_MS, SpeechTracker

RATES = [8000, 16000]
CLIP_LEVEL = int(32767 * 0.98)  # what enrollment uses for PCM16


def _utterances(speech) -> list[np.ndarray]:
    return [u for name in sorted(speech) for u in speech[name]]


def _at(wav16k: np.ndarray, rate: int) -> np.ndarray:
    return to_int16(resample(wav16k, 16000, rate))


def _fed(samples: np.ndarray, rate: int, chunk: int | None = None, **kw) -> SpeechTracker:
    tracker = SpeechTracker(rate, **kw)
    step = chunk or samples.size
    for i in range(0, samples.size, step):
        tracker.feed(samples[i : i + step], CLIP_LEVEL)
    return tracker


@pytest.mark.parametrize("rate", RATES)
def test_digital_silence_counts_no_speech_and_keeps_no_audio(rate):
    tracker = _fed(np.zeros(10 * rate, dtype=np.int16), rate)
    assert tracker.total_frames == 10 * 1000 // FRAME_MS
    assert tracker.speech_frames == 0
    assert tracker.voiced_audio().size == 0
    assert tracker.total_s == pytest.approx(10.0)


@pytest.mark.parametrize("rate", RATES)
def test_low_line_noise_does_not_accumulate_net_speech(rate):
    # -50 dBFS white noise: a quiet line. The VAD may flag a frame or two while it adapts,
    # but ten seconds of it must stay far below any net-speech requirement (>= 0.5 s).
    rng = np.random.default_rng(7)
    noise = to_int16((rng.standard_normal(10 * rate) * 10 ** (-50 / 20)).astype(np.float32))
    tracker = _fed(noise, rate)
    assert tracker.net_speech_s < 0.5
    assert tracker.speech_frames <= 0.02 * tracker.total_frames


@pytest.mark.parametrize("rate", RATES)
def test_real_speech_counts_most_of_the_utterance_as_net_speech(speech, rate):
    for wav in _utterances(speech):
        samples = _at(wav, rate)
        tracker = _fed(samples, rate)
        duration = samples.size / rate
        assert 0.5 * duration < tracker.net_speech_s <= duration, (duration, tracker.net_speech_s)
        # Voiced audio holds every speech frame plus hangover frames, and nothing outside the input.
        voiced = tracker.voiced_audio()
        assert tracker.speech_frames * tracker.frame_len <= voiced.size <= samples.size


def test_speech_survives_8khz_mulaw_telephony(speech):
    wav = _utterances(speech)[0]
    clean = _fed(_at(wav, 8000), 8000)
    phone = _fed(decode(encode(_at(wav, 8000), Encoding.MULAW), Encoding.MULAW), 8000)
    assert phone.net_speech_s > 0.8 * clean.net_speech_s


@pytest.mark.parametrize("rate", RATES)
def test_chunk_size_does_not_change_what_the_tracker_counts_or_keeps(speech, rate):
    samples = _at(_utterances(speech)[0], rate)
    whole = _fed(samples, rate)
    frames_20ms = _fed(samples, rate, chunk=rate * 20 // 1000)
    odd = _fed(samples, rate, chunk=997)  # chunks that never line up with 30 ms frames
    for chunked in (frames_20ms, odd):
        assert chunked.speech_frames == whole.speech_frames
        assert chunked.total_frames == whole.total_frames
        assert chunked.total_samples == whole.total_samples == samples.size
        assert np.array_equal(chunked.voiced_audio(), whole.voiced_audio())


def test_voiced_buffer_is_bounded_and_keeps_the_latest_speech(speech):
    rate = 16000
    samples = np.concatenate([_at(u, rate) for u in _utterances(speech)[:3]])
    unbounded = _fed(samples, rate, max_speech_s=600.0)
    bounded = _fed(samples, rate, max_speech_s=1.0)
    full = unbounded.voiced_audio()
    kept = bounded.voiced_audio()
    assert full.size > 2 * rate, "test needs more voiced audio than the bound"
    assert 0 < kept.size <= 1.0 * rate
    assert np.array_equal(kept, full[-kept.size :]), "the bound must keep the most recent speech"
    # Counting is not bounded: net speech still covers the whole call.
    assert bounded.speech_frames == unbounded.speech_frames


def test_quality_flags_silence_as_silent():
    tracker = _fed(np.zeros(3 * 16000, dtype=np.int16), 16000)
    assert assess(tracker, min_net_speech_s=1.5) == [Quality.SILENT]


def test_quality_flags_short_speech_as_too_short(speech):
    wav = _utterances(speech)[0]
    tracker = _fed(_at(wav, 16000), 16000)
    assert tracker.speech_frames > 0
    assert assess(tracker, min_net_speech_s=tracker.net_speech_s + 1.0) == [Quality.TOO_SHORT]
    assert assess(tracker, min_net_speech_s=tracker.net_speech_s) == []


def test_quality_passes_clean_speech(speech):
    for wav in _utterances(speech):
        tracker = _fed(_at(wav, 16000), 16000)
        assert assess(tracker, min_net_speech_s=1.5) == [], tracker.net_speech_s


@pytest.mark.parametrize("encoding", [Encoding.PCM16_LE, Encoding.MULAW], ids=["pcm16", "mulaw"])
def test_quality_flags_hard_clipped_speech(speech, encoding):
    wav = _utterances(speech)[0]
    saturated = np.clip(wav * 20, -1.0, 1.0)  # 26 dB too much gain into a hard limiter
    samples = decode(encode(saturated, encoding), encoding)
    tracker = SpeechTracker(16000)
    tracker.feed(samples, int(encoding.full_scale * 0.98))
    assert Quality.CLIPPED in assess(tracker, min_net_speech_s=1.5)
    # The same recording at its original gain is not clipped.
    clean = SpeechTracker(16000)
    clean.feed(decode(encode(wav, encoding), encoding), int(encoding.full_scale * 0.98))
    assert Quality.CLIPPED not in assess(clean, min_net_speech_s=1.5)
