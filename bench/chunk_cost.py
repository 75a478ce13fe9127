"""Cost per 20 ms audio chunk of a live call's audio path, before and after its rewrite, in one run.

    python bench/chunk_cost.py [DATA_DIR] [--calls 6] [--reps 50] [--out bench/results/chunk_cost.json]

What `VerificationSession.feed_audio` does to every gRPC audio message before any decision
logic: decode it, append it to the replay window (`_keep_recent`) and feed the voice activity
tracker (clipping count, 30 ms framing, two webrtcvad decisions per frame, voiced buffer). At
200 concurrent calls of 20 ms chunks that is 10,000 chunks a second on the event loop.

- baseline: the implementation before the rewrite, copied below verbatim (`baseline_decode`,
  `BaselineTracker`, `baseline_keep_recent`): numpy fancy-index decoding, clipping counted on
  the decoded samples (astype, abs, compare, count), pending samples concatenated and copied
  as arrays, a np.asarray and the window size computed on every chunk;
- current: authsvc's code as feed_audio calls it (`decode`, `count_encoded_peaks` on the
  G.711 bytes, `SpeechTracker.feed`, `VerificationSession._keep_recent` itself).

Audio: the first `--calls` utterances of librispeech-test-other-10 (one call each, about
7.7 s), resampled to 8 kHz and G.711 mu-law encoded, cut into 160-byte (20 ms) chunks. Each
repetition streams every call through fresh state, baseline and current alternating so that
a change in the machine's load hits both; the figure is the median over repetitions of
microseconds per chunk (garbage collection off while timing, as timeit does). Per-stage
medians (each stage alone over the same chunks) and the floor no rewrite can remove (the two
webrtcvad calls per frame) are reported beside it. Before timing, both paths are run on every
call and must agree bit for bit (samples, counters, voiced audio, replay window).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import _webrtcvad
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.audio.codecs import _DECODE, Encoding, count_encoded_peaks, decode, encode
from authsvc.audio.resample import resample
from authsvc.audio.vad import FRAME_MS, SpeechTracker, webrtcvad
from authsvc.session import REPLAY_WINDOW_S, UNENROLLED, VerificationSession
from bench.common import RESULTS, default_data_dir, load_16k, machine

RATE = 8000
CHUNK_MS = 20
ENCODING = Encoding.MULAW
CLIP_LEVEL = int(ENCODING.full_scale * 0.98)  # as a session sets it


# --- baseline: the code before the rewrite, verbatim -------------------------------------------


def baseline_decode(data: bytes, encoding: Encoding) -> np.ndarray:
    return _DECODE[encoding][np.frombuffer(data, dtype=np.uint8)]


class BaselineTracker(SpeechTracker):
    """SpeechTracker's feed, framing and buffers as they were (numpy arrays throughout)."""

    def __init__(self, sample_rate: int, **kw) -> None:
        super().__init__(sample_rate, **kw)
        self._pending = np.zeros(0, dtype=np.int16)

    def feed(self, samples: np.ndarray, clip_level: int) -> None:  # type: ignore[override]
        self.total_samples += samples.size
        self.peak_hits += int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= clip_level))
        buf = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n_frames = buf.size // self.frame_len
        for i in range(n_frames):
            frame = buf[i * self.frame_len : (i + 1) * self.frame_len]
            self._classify(frame)
        self._pending = buf[n_frames * self.frame_len :].copy()

    def _classify(self, frame: np.ndarray) -> None:  # type: ignore[override]
        self.total_frames += 1
        pcm = frame.tobytes()
        if self._count_vad.is_speech(pcm, self.sample_rate):
            self.speech_frames += 1
        if self._keep_vad.is_speech(pcm, self.sample_rate):
            self._since_speech = 0
        else:
            self._since_speech += 1
        if self._since_speech <= self._hangover:
            self._voiced.append(frame)
            self.voiced_frames += 1

    def voiced_audio(self) -> np.ndarray:
        if not self._voiced:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(self._voiced))


def baseline_keep_recent(self, samples: np.ndarray) -> None:
    closed = self._closed_outcome is not None and self._closed_outcome.outcome not in UNENROLLED
    if closed or samples.size == 0:
        return
    limit = int(REPLAY_WINDOW_S * self.tracker.sample_rate)
    self._recent.append(np.asarray(samples[-limit:], np.int16))
    self._recent_size += self._recent[-1].size
    while self._recent_size - self._recent[0].size >= limit:
        self._recent_size -= self._recent.popleft().size


# --- the two paths, as feed_audio runs them -------------------------------------------------


def session_state(tracker: SpeechTracker) -> SimpleNamespace:
    """What `_keep_recent` reads and writes of a VerificationSession."""
    return SimpleNamespace(
        tracker=tracker,
        _closed_outcome=None,
        _recent=deque(),
        _recent_size=0,
        _recent_limit=int(REPLAY_WINDOW_S * tracker.sample_rate),
    )


def run_baseline(chunks: list[bytes]) -> SimpleNamespace:
    s = session_state(BaselineTracker(RATE))
    for data in chunks:
        samples = baseline_decode(data, ENCODING)
        baseline_keep_recent(s, samples)
        s.tracker.feed(samples, CLIP_LEVEL)
    return s


def run_current(chunks: list[bytes]) -> SimpleNamespace:
    s = session_state(SpeechTracker(RATE))
    keep_recent = VerificationSession._keep_recent
    for data in chunks:
        samples = decode(data, ENCODING)
        keep_recent(s, samples)  # type: ignore[arg-type]
        s.tracker.feed(samples, CLIP_LEVEL, count_encoded_peaks(data, ENCODING, CLIP_LEVEL))
    return s


def check_same(calls: list[list[bytes]]) -> None:
    for chunks in calls:
        old, new = run_baseline(chunks), run_current(chunks)
        for name in ("speech_frames", "voiced_frames", "total_frames", "total_samples", "peak_hits"):
            assert getattr(old.tracker, name) == getattr(new.tracker, name), name
        assert np.array_equal(old.tracker.voiced_audio(), new.tracker.voiced_audio())
        assert np.array_equal(np.concatenate(old._recent), np.concatenate(new._recent))
        for data in chunks[:50]:
            assert np.array_equal(baseline_decode(data, ENCODING), decode(data, ENCODING))


def stage_runs(chunks: list[bytes]) -> dict[str, tuple]:
    """The whole path, then each stage alone, over one call's chunks: name -> (baseline, current)."""
    old_samples = [baseline_decode(c, ENCODING) for c in chunks]
    new_samples = [decode(c, ENCODING) for c in chunks]

    def decode_old():
        for c in chunks:
            baseline_decode(c, ENCODING)

    def decode_new():
        for c in chunks:
            decode(c, ENCODING)

    def feed_old():
        t = BaselineTracker(RATE)
        for x in old_samples:
            t.feed(x, CLIP_LEVEL)

    def feed_new():
        t = SpeechTracker(RATE)
        for c, x in zip(chunks, new_samples, strict=True):
            t.feed(x, CLIP_LEVEL, count_encoded_peaks(c, ENCODING, CLIP_LEVEL))

    def recent_old():
        s = session_state(SpeechTracker(RATE))
        for x in old_samples:
            baseline_keep_recent(s, x)

    def recent_new():
        s, keep_recent = session_state(SpeechTracker(RATE)), VerificationSession._keep_recent
        for x in new_samples:
            keep_recent(s, x)  # type: ignore[arg-type]

    pcm = b"".join(x.tobytes() for x in new_samples)

    def vad_floor():  # webrtcvad's two C decisions per 30 ms frame, on ready-made frames
        count, keep, n = webrtcvad.Vad(2)._vad, webrtcvad.Vad(1)._vad, RATE * FRAME_MS // 1000
        for i in range(0, len(pcm) - len(pcm) % (2 * n), 2 * n):
            frame = pcm[i : i + 2 * n]
            _webrtcvad.process(count, RATE, frame, n)
            _webrtcvad.process(keep, RATE, frame, n)

    return {
        "whole": (lambda: run_baseline(chunks), lambda: run_current(chunks)),
        "decode": (decode_old, decode_new),
        "tracker_feed": (feed_old, feed_new),  # current: with count_encoded_peaks, as feed_audio
        "keep_recent": (recent_old, recent_new),
        "vad_floor": (vad_floor, vad_floor),
    }


def timed(fn, chunks: int) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / chunks / 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--calls", type=int, default=6, help="utterances, one call each")
    parser.add_argument("--reps", type=int, default=50, help="rounds over all calls")
    parser.add_argument("--out", type=Path, default=RESULTS / "chunk_cost.json")
    args = parser.parse_args()
    started = time.time()
    files = sorted((args.data_dir / "speech" / "librispeech-test-other-10").glob("*/*.flac"))[: args.calls]
    if not files:
        raise SystemExit(f"no LibriSpeech test-other utterances under {args.data_dir}")
    step = RATE * CHUNK_MS // 1000 * ENCODING.bytes_per_sample
    calls = []
    for f in files:
        data = encode(resample(load_16k(f), 16000, RATE), ENCODING)
        calls.append([data[i : i + step] for i in range(0, len(data), step)])
    n_chunks = sum(len(c) for c in calls)
    check_same(calls)

    runs = [stage_runs(chunks) for chunks in calls]
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs[0]}
    gc.collect()
    gc.disable()
    try:
        for rep in range(args.reps + 1):  # the first round warms up and is dropped
            for chunks, stages in zip(calls, runs, strict=True):
                for name, (fn_old, fn_new) in stages.items():
                    old, new = timed(fn_old, len(chunks)), timed(fn_new, len(chunks))
                    if rep:
                        times[name][0].append(old)
                        times[name][1].append(new)
    finally:
        gc.enable()

    def summary(samples: list[float]) -> dict:
        q1, q3 = np.percentile(samples, [25, 75])
        return {"median": round(statistics.median(samples), 3), "iqr": [round(q1, 3), round(q3, 3)]}

    old, new = times.pop("whole")
    floor = times.pop("vad_floor")
    baseline_us, current_us = statistics.median(old), statistics.median(new)
    floor_us = statistics.median(floor[0] + floor[1])
    results = {
        "benchmark": "chunk_cost",
        "machine": machine(),
        "config": {
            "audio": [f.name for f in files],
            "rate_hz": RATE,
            "encoding": ENCODING.value,
            "chunk_ms": CHUNK_MS,
            "chunks": n_chunks,
            "reps": args.reps,  # rounds over all calls: reps x calls timings of each path
            "clip_level": CLIP_LEVEL,
        },
        "identical_results": True,  # check_same passed
        "per_chunk_us": {"baseline": summary(old), "current": summary(new)},
        "current_over_baseline": round(current_us / baseline_us, 3),
        "speedup": round(baseline_us / current_us, 2),
        "stages_us_per_chunk": {
            name: {"baseline": summary(o), "current": summary(n)} for name, (o, n) in times.items()
        },
        # webrtcvad's own work, the same in both: what is left of a chunk's cost beside it.
        "vad_floor_us_per_chunk": summary(floor[0] + floor[1]),
        "beside_vad_us_per_chunk": {
            "baseline": round(baseline_us - floor_us, 3),
            "current": round(current_us - floor_us, 3),
        },
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "config")}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} in {results['seconds']} s")


if __name__ == "__main__":
    main()
