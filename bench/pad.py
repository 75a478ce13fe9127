"""Presentation-attack detection, ISO/IEC 30107-3 style: APCER per attack species, BPCER.

    python bench/pad.py [DATA_DIR] [--out bench/results/pad.json]
    python bench/pad.py --tune        # prints the bona fide tail that sets replay.MIN_ALIGNED

Replay (authsvc.fraud.replay, landmark fingerprints) is judged as the service judges a
call: the probe (the first `PROBE_S` seconds of a call, and the whole call) is compared
with the claimed customer's enrollment recordings, and the risk is high from
`MIN_ALIGNED` aligned landmarks. Attack species: an enrollment recording replayed
through simulated channels, each ending in 8 kHz G.711 mu-law:
- line: level change and additive noise (20 dB SNR);
- room-near: a loudspeaker near the handset (room impulse response, T60 0.3 s, direct to
  reverberant ratio +6 dB) and the line;
- room-far: the same at 0 dB direct to reverberant (a phone held away from the speaker);
- band: a small loudspeaker's 300-3400 Hz band and 2 % peak clipping, then the line.
Bona fide: the same speaker saying something else (test-other: enrollment utterances 1-5,
calls from 6-10) and, the hardest case for a fingerprint, the same words again (fsdd: the
same digits, other takes, by the same speaker).

Tuning: MIN_ALIGNED was set on librispeech-cohort-251 (`--tune`: bona fide = each
utterance's second half against the first halves of the other utterances); everything
reported below is on test-other and fsdd, which the threshold never saw.

Synthetic speech (AASIST) is not in this slice: its species (espeak-ng, flite, festival,
../shared/data/spoof) come with the countermeasure model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.audio.codecs import Encoding, decode, encode
from authsvc.audio.fingerprint import VERSION, Fingerprint, fingerprint, match
from authsvc.audio.resample import resample
from authsvc.fraud import replay
from bench.common import RESULTS, default_data_dir, eer, fsdd_speakers, load_16k, machine, write_results

PROBE_S = 5.0  # the speech before the first looks of a call
SPECIES = ("line", "room-near", "room-far", "band")
DRAWS = 5  # channel draws (noise, level, room) per replayed recording and species


def _room(x: np.ndarray, rng, drr_db: float, t60: float = 0.3, rate: int = 16000) -> np.ndarray:
    n = int(t60 * rate)
    tail = rng.normal(size=n) * np.exp(-6.91 * np.arange(n) / n)
    tail[0] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    tail[0] = 1.0
    y = np.convolve(x, tail)[: x.size]
    return y / (np.abs(y).max() + 1e-9) * np.abs(x).max()


def _line(x16k: np.ndarray, rng, snr_db: float = 20.0) -> np.ndarray:
    """-> 16-bit samples at 8 kHz, as the service decodes a mu-law call."""
    x = resample(x16k, 16000, 8000) * 10 ** (rng.uniform(-6, 0) / 20)
    x = x + rng.normal(size=x.size) * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))
    return decode(encode(np.clip(x, -1, 1).astype(np.float32), Encoding.MULAW), Encoding.MULAW)


def attack(x16k: np.ndarray, species: str, rng) -> np.ndarray:
    if species == "room-near":
        x16k = _room(x16k, rng, 6.0)
    elif species == "room-far":
        x16k = _room(x16k, rng, 0.0)
    elif species == "band":
        x16k = sosfilt(butter(4, (300, 3400), "bandpass", fs=16000, output="sos"), x16k)
        peak = np.abs(x16k).max() * 0.98
        x16k = np.clip(x16k, -peak, peak)
    return _line(np.asarray(x16k, np.float32), rng)


def score(probe: np.ndarray, refs: list[Fingerprint]) -> int:
    fp = fingerprint(probe, 8000)
    return max((match(fp, r).aligned for r in refs), default=0)


def _cut(x: np.ndarray, seconds: float | None, rate: int = 8000) -> np.ndarray:
    return x if seconds is None else x[: int(seconds * rate)]


def evaluate(customers: dict[str, tuple[list[np.ndarray], list[np.ndarray]]], rng) -> dict:
    """customers: name -> (enrollment recordings, bona fide calls), 16 kHz float."""
    out = {}
    for length in (PROBE_S, None):
        key = f"first_{PROBE_S:g}s" if length else "whole_call"
        bona, attacks = [], {s: [] for s in SPECIES}
        for recordings, calls in customers.values():
            refs = [fingerprint(r, 16000) for r in recordings]
            bona += [score(_cut(_line(c, rng), length), refs) for c in calls]
            for s in SPECIES:
                attacks[s] += [
                    score(_cut(attack(r, s, rng), length), refs) for r in recordings for _ in range(DRAWS)
                ]
        bona_arr = np.asarray(bona)
        cell = {
            "bona_fide_presentations": int(bona_arr.size),
            "bpcer": float(np.mean(bona_arr >= replay.MIN_ALIGNED)),
            "bona_fide_max_aligned": int(bona_arr.max()),
            "species": {},
        }
        for s, scores in attacks.items():
            a = np.asarray(scores)
            cell["species"][s] = {
                "attack_presentations": int(a.size),
                "apcer": float(np.mean(a < replay.MIN_ALIGNED)),
                "eer": eer(a.astype(float), bona_arr.astype(float)),
                "median_aligned": float(np.median(a)),
            }
        out[key] = cell
    return out


def test_other(data_dir: Path) -> dict:
    root = data_dir / "speech" / "librispeech-test-other-10"
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        wavs = [load_16k(f) for f in sorted(folder.glob("*.flac"))]
        out[folder.name] = (wavs[:5], wavs[5:])
    return out


def fsdd(data_dir: Path) -> dict:
    """Enrollment: 3 recordings of digits 0-9 (one take each); calls: the same digits, every other take."""
    out = {}
    for name, files in fsdd_speakers(data_dir).items():
        by_take: dict[int, list[Path]] = {}
        for f in files:
            by_take.setdefault(int(f.stem.split("_")[2]), []).append(f)
        takes = [sorted(by_take[t]) for t in sorted(by_take) if len(by_take[t]) == 10]
        rec = [np.concatenate([load_16k(f) for f in take]) for take in takes]
        out[name] = (rec[:3], rec[3:])
    return out


def tune(data_dir: Path) -> None:
    files = sorted((data_dir / "speech" / "librispeech-cohort-251").glob("*.flac"))
    wavs = [load_16k(f) for f in files]
    rng = np.random.default_rng(1)
    refs = [fingerprint(w[: w.size // 2], 16000) for w in wavs]
    bona = []
    for i, w in enumerate(wavs):
        fp = fingerprint(_line(w[w.size // 2 :], rng), 8000)
        others = rng.choice([j for j in range(len(wavs)) if j != i], 20, replace=False)
        bona += [match(fp, refs[j]).aligned for j in others]
    bona = np.asarray(bona)
    print(
        f"cohort bona fide: {bona.size} comparisons, max aligned {bona.max()}, "
        f"p99.9 {np.percentile(bona, 99.9):.1f}; MIN_ALIGNED = {replay.MIN_ALIGNED}"
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results["replay"])
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.2), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        cells = results["replay"][name]
        x = np.arange(len(SPECIES))
        for k, (length, cell) in enumerate(cells.items()):
            ax.bar(
                x + (k - 0.5) * 0.38,
                [cell["species"][s]["apcer"] for s in SPECIES],
                0.38,
                label=f"{length}: APCER (BPCER {cell['bpcer']:.3f}, n={cell['bona_fide_presentations']})",
            )
        ax.set_xticks(x, SPECIES)
        ax.set_ylim(0, 1)
        ax.set_ylabel("attack presentations not detected")
        ax.set_title(f"replay, {name}, threshold {results['operating_threshold']} aligned landmarks")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "pad.json")
    parser.add_argument("--tune", action="store_true")
    args = parser.parse_args()
    if args.tune:
        tune(args.data_dir)
        return
    started = time.time()
    rng = np.random.default_rng(0)
    results = {
        "benchmark": "pad",
        "machine": machine(),
        "detector": f"replay {VERSION}",
        "operating_threshold": replay.MIN_ALIGNED,
        "tuned_on": "librispeech-cohort-251 (bench/pad.py --tune); not used below",
        "replay": {
            "librispeech-test-other-10": evaluate(test_other(args.data_dir), rng),
            "fsdd": evaluate(fsdd(args.data_dir), rng),
        },
        "not_yet": "synthetic-speech species (AASIST) arrive with the countermeasure model",
    }
    results["seconds"] = round(time.time() - started, 1)
    write_results(results, args.out, plot)
    for name, cells in results["replay"].items():
        for length, cell in cells.items():
            apcer = ", ".join(f"{s} {c['apcer']:.3f}" for s, c in cell["species"].items())
            print(
                f"{name} {length}: BPCER {cell['bpcer']:.3f} "
                f"(n={cell['bona_fide_presentations']}); APCER {apcer}"
            )


if __name__ == "__main__":
    main()
