"""Voice activity (net speech counting, voiced buffer) and the quality verdicts built on it."""

from __future__ import annotations

import itertools
import warnings
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from authsvc.audio.codecs import Encoding, decode, encode, to_int16
from authsvc.audio.quality import Quality, assess
from authsvc.audio.resample import resample
from authsvc.audio.vad import FRAME_MS, SpeechTracker, webrtcvad
from authsvc.policy.schema import build_policy
from authsvc.session import REPLAY_WINDOW_S, SessionStart, VerificationSession

with warnings.catch_warnings():
    # audioop is deprecated (removed in 3.13) but is the reference G.711 codec on 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

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


# -- The per-chunk fast path against the code as first written ------------------------------

CHUNK_SIZES = (1, 159, 160, 161, 240, 481, 4000)  # samples: odd, around 20 ms and 30 ms, large
ENCODINGS = [
    pytest.param(Encoding.PCM16_LE, id="pcm16"),
    pytest.param(Encoding.MULAW, id="mulaw"),
    pytest.param(Encoding.ALAW, id="alaw"),
]


class _ReferenceTracker:
    """SpeechTracker as first written: numpy buffers, the public Vad.is_speech, clipping counted on
    the samples. The tracker must count and keep exactly what this does, whatever the chunking."""

    def __init__(self, rate: int, max_speech_s: float = 60.0) -> None:
        self.rate, self.frame_len = rate, rate * FRAME_MS // 1000
        self.keep_vad, self.count_vad = webrtcvad.Vad(1), webrtcvad.Vad(2)
        self.since_speech = 11
        self.pending = np.zeros(0, dtype=np.int16)
        self.voiced: deque[np.ndarray] = deque(maxlen=int(max_speech_s * 1000 / FRAME_MS))
        self.speech_frames = self.voiced_frames = self.total_frames = self.total_samples = self.peak_hits = 0

    def feed(self, samples: np.ndarray, clip_level: int) -> None:
        self.total_samples += samples.size
        self.peak_hits += int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= clip_level))
        buf = np.concatenate([self.pending, samples]) if self.pending.size else samples
        n_frames = buf.size // self.frame_len
        for i in range(n_frames):
            frame = buf[i * self.frame_len : (i + 1) * self.frame_len]
            self.total_frames += 1
            pcm = frame.tobytes()
            self.speech_frames += self.count_vad.is_speech(pcm, self.rate)
            self.since_speech = 0 if self.keep_vad.is_speech(pcm, self.rate) else self.since_speech + 1
            if self.since_speech <= 10:
                self.voiced.append(frame)
                self.voiced_frames += 1
        self.pending = buf[n_frames * self.frame_len :].copy()

    def voiced_since(self, mark: int) -> np.ndarray:
        new = min(self.voiced_frames - mark, len(self.voiced))
        return np.concatenate(list(self.voiced)[-new:]) if new > 0 else np.zeros(0, dtype=np.int16)


def _reference_decode(data: bytes, encoding: Encoding) -> np.ndarray:
    """Decoding by another route: audioop for G.711 (the reference codec), plain PCM16."""
    if encoding is Encoding.PCM16_LE:
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    to_linear = audioop.ulaw2lin if encoding is Encoding.MULAW else audioop.alaw2lin
    return np.frombuffer(to_linear(data, 2), dtype="<i2").astype(np.int16)


def _counters(tracker) -> tuple[int, ...]:
    return (
        tracker.speech_frames,
        tracker.voiced_frames,
        tracker.total_frames,
        tracker.total_samples,
        tracker.peak_hits,
    )


def _chunk_sizes(total: int, seed: int) -> list[int]:
    """Sizes (samples) covering `total`: each of CHUNK_SIZES, a run of single samples (a frame
    completed one sample at a time), then runs of CHUNK_SIZES and of random sizes (seeded)."""
    rng = np.random.default_rng(seed)
    sizes = [*CHUNK_SIZES, *[1] * 500]
    covered = sum(sizes)
    while covered < total:
        size = int(rng.choice(CHUNK_SIZES)) if rng.random() < 0.5 else int(rng.integers(1, 5000))
        run = int(rng.integers(1, 20))
        sizes += [size] * run
        covered += size * run
    return sizes


def _hot_call(speech, rate: int, seconds: float) -> np.ndarray:
    """Real speech (float, at `rate`) of at least `seconds` (the utterances over again if need be)
    after a second of silence, every third utterance 26 dB too hot (hard-clipped), so clipping is
    counted too."""
    parts, total = [np.zeros(16000, np.float32)], 16000
    for i, u in enumerate(itertools.cycle(_utterances(speech))):
        parts.append(np.clip(u * 20, -1.0, 1.0) if i % 3 == 1 else u)
        total += u.size
        if total >= seconds * 16000:
            return resample(np.concatenate(parts), 16000, rate)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("max_speech_s", [2.0, 600.0], ids=["bounded", "unbounded"])
@pytest.mark.parametrize("rate", RATES)
def test_tracker_counts_and_keeps_what_the_reference_does_for_any_chunk_sizes(speech, rate, max_speech_s):
    samples = to_int16(_hot_call(speech, rate, 20.0))
    ours, ref = SpeechTracker(rate, max_speech_s=max_speech_s), _ReferenceTracker(rate, max_speech_s)
    rng = np.random.default_rng(rate)
    at, mark = 0, 0
    for size in _chunk_sizes(samples.size, seed=rate):
        chunk = samples[at : at + size]  # views of one array, as voice.pipeline feeds them
        at += size
        ours.feed(chunk, CLIP_LEVEL)
        ref.feed(chunk, CLIP_LEVEL)
        if rng.random() < 0.1:  # what a session asks for as the call goes on
            new, next_mark = ours.voiced_since(mark)
            assert np.array_equal(new, ref.voiced_since(mark)) and new.dtype == np.int16
            assert next_mark == ref.voiced_frames
            mark = next_mark
            assert _counters(ours) == _counters(ref)
    assert _counters(ours) == _counters(ref)
    assert ref.peak_hits > 0 and ref.speech_frames > 0
    assert np.array_equal(ours.voiced_audio(), np.concatenate(ref.voiced))
    assert np.array_equal(ours.voiced_since(0)[0], ref.voiced_since(0))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("rate", RATES)
async def test_a_sessions_chunks_decode_track_and_fill_the_replay_window_as_the_reference(
    speech, rate, encoding
):
    """VerificationSession.feed_audio's per-chunk path (decode, replay window, tracker with the
    clipping counted on the encoded bytes) over a call longer than the replay window, chunked any
    way, one chunk longer than the window among them."""
    session = VerificationSession(
        SimpleNamespace(),  # the per-chunk path uses nothing of the context
        SessionStart("t", "", "voice", encoding, rate),
        build_policy("t", {}, "test", "test"),
    )

    async def nothing_to_decide():  # an unclaimed call: nothing after the per-chunk path
        return []

    session._track_unclaimed = nothing_to_decide  # type: ignore[method-assign]
    width, limit = encoding.bytes_per_sample, int(REPLAY_WINDOW_S * rate)
    data = encode(_hot_call(speech, rate, 2.7 * REPLAY_WINDOW_S), encoding)
    # Half a window of small chunks, one chunk longer than the window, then more than a window.
    first = _chunk_sizes(limit // 2, seed=rate + len(encoding.value))
    sizes = [*first, limit + 1, *_chunk_sizes(len(data) // width - sum(first) - limit - 1, seed=rate)]
    clip_level = int(encoding.full_scale * 0.98)
    ref, at = _ReferenceTracker(rate, session.policy.voice.max_window_s), 0
    window: deque[np.ndarray] = deque()
    window_size = 0

    def same_so_far() -> None:
        assert _counters(session.tracker) == _counters(ref)
        assert [w.size for w in session._recent] == [w.size for w in window]
        assert np.array_equal(np.concatenate(session._recent), np.concatenate(window))
        assert session._recent_size == window_size

    rng = np.random.default_rng(rate)
    for size in sizes:
        chunk = data[at : at + size * width]
        at += size * width
        assert await session.feed_audio(chunk) == []
        samples = _reference_decode(chunk, encoding)
        ref.feed(samples, clip_level)
        if samples.size:  # _keep_recent as first written
            window.append(np.asarray(samples[-limit:], np.int16))
            window_size += window[-1].size
            while window_size - window[0].size >= limit:
                window_size -= window.popleft().size
        if size > limit or rng.random() < 0.02:
            same_so_far()
    assert at >= len(data), "the whole call is fed"
    same_so_far()
    assert ref.peak_hits > 0
    assert np.array_equal(session.tracker.voiced_audio(), np.concatenate(ref.voiced))
    assert session._samples == len(data) // width


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
def test_tracker_refuses_samples_that_are_not_int16(dtype):
    # Frames are cut from the samples' bytes at two bytes a sample: anything else would be
    # misread as speech or silence without a word.
    tracker = SpeechTracker(8000)
    with pytest.raises(TypeError, match="int16"):
        tracker.feed(np.zeros(480, dtype), 32767)
    assert tracker.total_samples == 0 and tracker.total_frames == 0
