"""Landmark audio fingerprints: does this audio re-use recorded material?

The constellation method of Wang (2003), as in Ellis's audfprint: spectral peaks of
the 8 kHz log spectrogram, paired into (f1, f2 - f1, t2 - t1) hashes anchored at t1.
Two recordings of the same material share many hashes at one consistent time offset;
two different utterances, even of one speaker, share a few by chance at scattered
offsets. Peaks survive G.711, resampling, gain, additive noise and moderate
reverberation, which is what a replay through a telephone goes through.

Chromaprint (the distribution's libchromaprint) was measured first and does not fit
speech: it needs ~2.6 s before its first item and, on 8 s LibriSpeech excerpts through
a telephone channel, its best-offset bit agreement was 0.70 for replays against up to
0.69 for other utterances (bench notes in bench/pad.py).

A fingerprint keeps hashes and frame times only: the audio cannot be rebuilt from it.
It is still biometric-adjacent data and is sealed at rest like a template.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter

from authsvc.audio.resample import resample

VERSION = "landmark-1"
RATE = 8000
N_FFT = 256  # 32 ms
HOP = 128  # 16 ms: 62.5 frames a second
FRAMES_PER_S = RATE / HOP
PEAK_FREQ_NEIGHBOURS = 9  # a peak is the maximum of this many bins ...
PEAK_TIME_NEIGHBOURS = 15  # ... over this many frames (240 ms)
PEAKS_PER_S = 30
FAN_OUT = 3  # pairs per anchor peak
MAX_DT = 40  # frames (640 ms) to the paired peak
MAX_DF = 31  # bins
MIN_LEVEL_DB = -60.0  # below the loudest bin of the recording: not a peak (silence, hiss)
# A bin this weak is no peak whatever the recording (about -70 dBFS for a tone): silence and
# dither have none, so they cannot match anything.
ABSOLUTE_FLOOR_DB = -40.0
MAX_SECONDS = 600.0  # longer audio is fingerprinted on its first ten minutes

_DTYPE = np.dtype([("hash", "<u4"), ("t", "<u4")])
# Playback speeds a probe is also fingerprinted at: a recording replayed 2-8 % fast or slow (a
# resampling, as a cheap edit makes it) moves every peak in time and frequency, so its hashes
# match only once the speed is undone. Steps of 2 % leave at most 1 %: under one frequency bin
# at 3 kHz and under one frame over the longest pair.
SPEEDS = (1.0, 0.98, 1.02, 0.96, 1.04, 0.94, 1.06, 0.92, 1.08)


@dataclass(frozen=True)
class Fingerprint:
    hashes: np.ndarray  # uint32
    times: np.ndarray  # uint32 frame of the anchor peak
    seconds: float

    def to_bytes(self) -> bytes:
        rec = np.empty(self.hashes.size, _DTYPE)
        rec["hash"], rec["t"] = self.hashes, self.times
        head = np.array([self.seconds], "<f4").tobytes()
        return head + rec.tobytes()

    @staticmethod
    def from_bytes(data: bytes) -> Fingerprint:
        if len(data) < 4 or (len(data) - 4) % _DTYPE.itemsize:
            raise ValueError("not a fingerprint")
        seconds = float(np.frombuffer(data[:4], "<f4")[0])
        rec = np.frombuffer(data[4:], _DTYPE)
        return Fingerprint(rec["hash"].astype(np.uint32), rec["t"].astype(np.uint32), seconds)


def _as_float(x: np.ndarray) -> np.ndarray:
    """Float32 in [-1, 1] from float audio or from 16-bit samples as the codecs decode them."""
    return x.astype(np.float32) / 32768.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)


def _spectrogram(x: np.ndarray) -> np.ndarray:
    """dB magnitude, (bins, frames)."""
    if x.size < N_FFT:
        return np.zeros((N_FFT // 2 + 1, 0))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    spec = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1)).T
    return 20.0 * np.log10(spec + 1e-9)


def _peaks(db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (frames, bins) of the strongest local maxima, about PEAKS_PER_S a second."""
    if db.shape[1] == 0:
        return np.zeros(0, int), np.zeros(0, int)
    local = maximum_filter(db, size=(PEAK_FREQ_NEIGHBOURS, PEAK_TIME_NEIGHBOURS), mode="constant", cval=-1e9)
    mask = (db == local) & (db > db.max() + MIN_LEVEL_DB) & (db > ABSOLUTE_FLOOR_DB)
    mask[0] = False  # DC
    bins, frames = np.nonzero(mask)
    strength = db[bins, frames]
    # Per second of audio, keep the strongest, so loud and quiet passages both get peaks.
    keep = []
    second = (frames / FRAMES_PER_S).astype(int)
    for s in np.unique(second):
        idx = np.flatnonzero(second == s)
        keep.extend(idx[np.argsort(strength[idx])[::-1][:PEAKS_PER_S]])
    keep = np.sort(np.asarray(keep, int))
    order = np.lexsort((bins[keep], frames[keep]))
    return frames[keep][order], bins[keep][order]


def _pairs(frames: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each peak paired with the next FAN_OUT peaks within MAX_DT frames and MAX_DF bins,
    vectorised over anchors (the k-th following peak of every anchor at once), so the GIL is
    held for a few dozen array operations rather than a Python loop over every peak."""
    n = frames.size
    used = np.zeros(n, np.int64)
    anchors, targets, ks = [], [], []
    # Peaks are in time order and at most PEAKS_PER_S a second, so no valid target lies
    # further ahead than the peaks of two seconds.
    for k in range(1, min(n, 2 * PEAKS_PER_S + 1)):
        i = np.arange(n - k)
        dt = frames[i + k] - frames[i]
        df = bins[i + k] - bins[i]
        ok = (dt >= 1) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF) & (used[i] < FAN_OUT)
        i = i[ok]
        used[i] += 1
        anchors.append(i)
        targets.append(i + k)
        ks.append(np.full(i.size, k))
    if not anchors:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
    a, t, k = np.concatenate(anchors), np.concatenate(targets), np.concatenate(ks)
    order = np.lexsort((k, a))  # as a loop over anchors, then their targets in time order
    a, t = a[order], t[order]
    df, dt = bins[t] - bins[a], frames[t] - frames[a]
    hashes = (bins[a] << 12) | ((df + MAX_DF) << 6) | dt
    return hashes.astype(np.uint32), frames[a].astype(np.uint32)


def fingerprint(samples: np.ndarray, rate: int) -> Fingerprint:
    """Landmark hashes of mono audio at any rate (resampled to 8 kHz first): float in [-1, 1],
    or 16-bit integer samples as the codecs decode them."""
    x = _as_float(np.asarray(samples)[: int(MAX_SECONDS * rate)])
    if rate != RATE:
        x = resample(x, rate, RATE)
    frames, bins = _peaks(_spectrogram(x))
    hashes, times = _pairs(frames, bins)
    return Fingerprint(hashes, times, round(x.size / RATE, 3))


def _tally_at(values: np.ndarray, tally: np.ndarray, query: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(values, query), 0, values.size - 1)
    return np.where(values[idx] == query, tally[idx], 0)


def fingerprints_at_speeds(samples: np.ndarray, rate: int) -> list[Fingerprint]:
    """The probe's fingerprint at each of SPEEDS (a recording sped up by r is slowed by r here)."""
    from scipy.signal import resample_poly

    x = _as_float(np.asarray(samples))
    out = []
    for r in SPEEDS:
        y = x if r == 1.0 else resample_poly(x, round(r * 50), 50).astype(np.float32)
        out.append(fingerprint(y, rate))
    return out


@dataclass(frozen=True)
class Match:
    aligned: int  # probe hashes found in the reference at the best common offset
    probe_hashes: int
    offset_s: float  # reference time - probe time at that offset

    @property
    def fraction(self) -> float:
        return self.aligned / self.probe_hashes if self.probe_hashes else 0.0


def match(probe: Fingerprint, reference: Fingerprint) -> Match:
    """Counts probe hashes present in the reference at one time offset (+-1 frame)."""
    if probe.hashes.size == 0 or reference.hashes.size == 0:
        return Match(0, int(probe.hashes.size), 0.0)
    order = np.argsort(reference.hashes, kind="stable")
    ref_h, ref_t = reference.hashes[order], reference.times[order].astype(np.int64)
    lo = np.searchsorted(ref_h, probe.hashes, "left")
    hi = np.searchsorted(ref_h, probe.hashes, "right")
    counts = hi - lo
    if not counts.any():
        return Match(0, int(probe.hashes.size), 0.0)
    probe_idx = np.repeat(np.arange(probe.hashes.size), counts)
    ref_idx = np.concatenate([np.arange(a, b) for a, b in zip(lo[counts > 0], hi[counts > 0], strict=True)])
    offsets = ref_t[ref_idx] - probe.times.astype(np.int64)[probe_idx]
    values, tally = np.unique(offsets, return_counts=True)
    # Count each probe hash once within +-1 frame of the best offset (jitter of resampling).
    window = sum(_tally_at(values, tally, values + d) for d in (-1, 0, 1))
    best = values[np.argmax(window)]
    near = np.abs(offsets - best) <= 1
    aligned = int(np.unique(probe_idx[near]).size)
    return Match(aligned, int(probe.hashes.size), float(best / FRAMES_PER_S))
