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
- band: a small loudspeaker's 300-3400 Hz band and 2 % peak clipping, then the line;
- speed: played 3-7 % fast or slow (resampled), then the line.
Bona fide: the same speaker saying something else (test-other: enrollment utterances 1-5,
calls from 6-10) and, the hardest case for a fingerprint, the same words again (fsdd: the
same digits, other takes, by the same speaker).

Tuning: MIN_ALIGNED was set on librispeech-cohort-251 (`--tune`: bona fide = each
utterance's second half against the first halves of the other utterances); everything
reported below is on test-other and fsdd, which the threshold never saw.

Synthetic speech (authsvc.fraud.synthetic: AASIST from --countermeasure-dir, default
../shared/models/aasist), judged as a look judges it: the first CM_WINDOW_S seconds of
voiced speech, clean 16 kHz and through 8 kHz G.711 (upsampled back for the model).
Species: espeak-ng, flite and festival voices from the distribution's packages, speaking
PROMPTS (a contact-centre caller's sentences), and the commercial samples of
../shared/data/spoof (PlayHT 2.0, Amazon Polly) as given. Bona fide: the same test-other
calls and fsdd calls as above. MIN_MARGIN was fitted on bona fide speech only (the 2nd
percentile of the cohort through G.711, `--tune`), so no attack species tuned it.
Fused: a presentation is flagged when either detector's risk is high.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.audio.codecs import Encoding, decode, encode, to_int16
from authsvc.audio.fingerprint import VERSION, Fingerprint, fingerprint, fingerprints_at_speeds, match
from authsvc.audio.resample import resample
from authsvc.fraud import replay, synthetic
from authsvc.session import CM_WINDOW_S
from authsvc.voice.pipeline import track
from bench.common import RESULTS, ROOT, default_data_dir, eer, fsdd_speakers, load_16k, machine, write_results

PROBE_S = 5.0  # the speech before the first looks of a call
PROMPTS = (
    "Hello, I would like to check the balance of my current account please.",
    "I am calling about a payment that did not go through yesterday.",
    "Can you help me change the address on my account?",
    "My card was declined at the shop this morning and I do not know why.",
    "I want to transfer two thousand pounds to my savings account.",
    "Yes, that is correct, my date of birth is the fourth of March.",
    "I lost my phone and need to reset my online banking password.",
    "Could you tell me when my next statement will arrive?",
)
TTS_VOICES = {
    "espeak-ng": [["espeak-ng", "-v", v, "-w", "{out}", "{text}"] for v in ("en-us", "en-gb", "en-us+f3")],
    "flite": [["flite", "-voice", v, "-t", "{text}", "-o", "{out}"] for v in ("slt", "kal", "awb", "rms")],
    "festival": [
        ["text2wave", "-o", "{out}", "-eval", f"({v})", "{textfile}"]
        for v in ("voice_kal_diphone", "voice_cmu_us_slt_arctic_hts")
    ],
}
SPECIES = ("line", "room-near", "room-far", "band", "speed")
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
    elif species == "speed":  # played 3-7 % fast or slow, the cheapest edit of a recording
        factor = rng.choice([-1, 1]) * rng.uniform(0.03, 0.07) + 1
        x16k = resample_poly(x16k, 100, round(factor * 100))
    elif species == "band":
        x16k = sosfilt(butter(4, (300, 3400), "bandpass", fs=16000, output="sos"), x16k)
        peak = np.abs(x16k).max() * 0.98
        x16k = np.clip(x16k, -peak, peak)
    return _line(np.asarray(x16k, np.float32), rng)


def score(probe: np.ndarray, refs: list[Fingerprint]) -> int:
    """What a look counts: the probe at each playback speed the service searches, best of all."""
    fps = fingerprints_at_speeds(probe, 8000)
    return max((match(fp, r).aligned for fp in fps for r in refs), default=0)


def _cut(x: np.ndarray, seconds: float | None, rate: int = 8000) -> np.ndarray:
    return x if seconds is None else x[: int(seconds * rate)]


def evaluate(customers: dict[str, tuple[list[np.ndarray], list[np.ndarray]]], rng, cm=None) -> dict:
    """customers: name -> (enrollment recordings, bona fide calls), 16 kHz float.

    With `cm`, the first-look presentations (bona fide calls and one channel draw of each
    replayed recording per species) are also scored by the countermeasure, for the fused figures.
    """
    out = {}
    for length in (PROBE_S, None):
        key = f"first_{PROBE_S:g}s" if length else "whole_call"
        bona, attacks = [], {s: [] for s in SPECIES}
        bona_cm, attack_cm = [], {s: [] for s in SPECIES}
        for recordings, calls in customers.values():
            refs = [fingerprint(r, 16000) for r in recordings]
            for c in calls:
                probe = _cut(_line(c, rng), length)
                bona.append(score(probe, refs))
                if cm is not None and length:
                    bona_cm.append((bona[-1], margin_8k(cm, probe)))
            for s in SPECIES:
                for rec in recordings:
                    for draw in range(DRAWS):
                        probe = _cut(attack(rec, s, rng), length)
                        attacks[s].append(score(probe, refs))
                        if cm is not None and length and draw == 0:
                            attack_cm[s].append((attacks[s][-1], margin_8k(cm, probe)))
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
        if bona_cm:
            cell["fused"] = {
                "bona_fide_presentations": len(bona_cm),
                "bpcer_synthetic_alone": float(np.mean([_cm_high(m) for _, m in bona_cm])),
                "bpcer": float(np.mean([_flagged(a, m) for a, m in bona_cm])),
                "apcer": {
                    s: float(np.mean([not _flagged(a, m) for a, m in v])) for s, v in attack_cm.items()
                },
                "attack_presentations": {s: len(v) for s, v in attack_cm.items()},
            }
        out[key] = cell
    return out


def _cm_high(margin: float) -> bool:
    return synthetic.assess(margin, "").high


def _flagged(aligned: int, margin: float) -> bool:
    return aligned >= replay.MIN_ALIGNED or _cm_high(margin)


def cm_input(pcm: np.ndarray, rate: int) -> np.ndarray:
    """What a look gives the countermeasure: the first CM_WINDOW_S s of voiced speech, at 16 kHz."""
    tracker = track(to_int16(pcm), rate)
    voiced, _ = tracker.voiced_since(0)
    voiced = voiced[: int(CM_WINDOW_S * rate)]
    return resample(voiced.astype(np.float32) / 32768, rate, 16000)


def margin_8k(cm, pcm8k: np.ndarray) -> float:
    return float(cm.embed_batch([cm_input(pcm8k, 8000)])[0, 0])


def margins(cm, wavs16k: list[np.ndarray], channel: str, rng) -> np.ndarray:
    if channel == "clean":
        return np.array([cm.embed_batch([cm_input(w, 16000)])[0, 0] for w in wavs16k])
    return np.array([margin_8k(cm, _line(w, rng, snr_db=30.0)) for w in wavs16k])


def tts_species(data_dir: Path, work: Path) -> dict[str, list[np.ndarray]]:
    """Species -> 16 kHz float utterances (engines missing from the machine are left out)."""
    import shutil
    import subprocess

    out: dict[str, list[np.ndarray]] = {}
    for species, commands in TTS_VOICES.items():
        if shutil.which(commands[0][0]) is None:
            continue
        for v, command in enumerate(commands):
            for i, text in enumerate(PROMPTS):
                wav, textfile = work / f"{species}-{v}-{i}.wav", work / f"{species}-{v}-{i}.txt"
                textfile.write_text(text)
                args = [a.format(out=wav, text=text, textfile=textfile) for a in command]
                if subprocess.run(args, capture_output=True, timeout=60).returncode == 0 and wav.exists():
                    out.setdefault(species, []).append(load_16k(wav))
    spoof = data_dir / "spoof" / "commercial-tts"
    if (spoof / "metadata.csv").is_file():
        import csv

        with open(spoof / "metadata.csv", newline="") as f:
            for row in csv.DictReader(f):
                out.setdefault(row["source"].lower(), []).append(load_16k(spoof / row["file"]))
    return out


def evaluate_synthetic(cm, data_dir: Path, bona: dict[str, list[np.ndarray]], rng) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        species = tts_species(data_dir, Path(tmp))
    out = {}
    for channel in ("clean", "g711"):
        bona_m = {name: margins(cm, wavs, channel, rng) for name, wavs in bona.items()}
        pooled = np.concatenate(list(bona_m.values()))
        cell = {
            "bona_fide": {
                name: {"presentations": int(m.size), "bpcer": float(np.mean([_cm_high(x) for x in m]))}
                for name, m in bona_m.items()
            },
            "species": {},
        }
        for name, wavs in species.items():
            m = margins(cm, wavs, channel, rng)
            cell["species"][name] = {
                "attack_presentations": int(m.size),
                "apcer": float(np.mean([not _cm_high(x) for x in m])),
                "eer": eer(-m, -pooled),
                "median_margin": float(np.median(m)),
            }
        out[channel] = cell
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


def tune(data_dir: Path, cm) -> None:
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
        f"replay, cohort bona fide: {bona.size} comparisons, max aligned {bona.max()}, "
        f"p99.9 {np.percentile(bona, 99.9):.1f}; MIN_ALIGNED = {replay.MIN_ALIGNED}"
    )
    if cm is not None:
        m = margins(cm, wavs, "g711", rng)
        print(
            f"synthetic, cohort bona fide through G.711: {m.size} utterances, margin percentiles "
            f"1/2/5 %: {np.percentile(m, [1, 2, 5]).round(2)}; MIN_MARGIN = {synthetic.MIN_MARGIN}"
        )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results["replay"])
    panels = len(sets) + (1 if "synthetic" in results else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.4), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=False):
        cells = results["replay"][name]
        x = np.arange(len(SPECIES))
        for k, (length, cell) in enumerate(cells.items()):
            label = f"{length}: APCER (BPCER {cell['bpcer']:.3f}, n={cell['bona_fide_presentations']})"
            ax.bar(x + (k - 0.5) * 0.38, [cell["species"][s]["apcer"] for s in SPECIES], 0.38, label=label)
        ax.set_xticks(x, SPECIES)
        ax.set_ylim(0, 1)
        ax.set_ylabel("attack presentations not detected")
        ax.set_title(f"replay, {name}, threshold {results['operating_threshold']} aligned landmarks")
        ax.legend(fontsize=8)
    if "synthetic" in results:
        ax = axes[0][-1]
        species = list(results["synthetic"]["clean"]["species"])
        x = np.arange(len(species))
        for k, (channel, cell) in enumerate(results["synthetic"].items()):
            bpcer = ", ".join(f"{n} {b['bpcer']:.2f}" for n, b in cell["bona_fide"].items())
            values = [cell["species"][s]["apcer"] for s in species]
            ax.bar(x + (k - 0.5) * 0.38, values, 0.38, label=f"{channel}: APCER (BPCER {bpcer})")
        ax.set_xticks(x, species, rotation=15)
        ax.set_ylim(0, 1)
        ax.set_title(f"synthetic (AASIST), margin threshold {synthetic.MIN_MARGIN}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "pad.json")
    parser.add_argument(
        "--countermeasure-dir", type=Path, default=ROOT.parent / "shared" / "models" / "aasist"
    )
    parser.add_argument("--tune", action="store_true")
    args = parser.parse_args()
    cm = None
    if args.countermeasure_dir.is_dir():
        import torch

        from authsvc.voice.countermeasure import load_countermeasure

        torch.set_num_threads(os.cpu_count() or 1)
        cm = load_countermeasure(args.countermeasure_dir)
    if args.tune:
        tune(args.data_dir, cm)
        return
    started = time.time()
    rng = np.random.default_rng(0)
    other, digits = test_other(args.data_dir), fsdd(args.data_dir)
    short = {k: (rec, calls[:10]) for k, (rec, calls) in digits.items()}  # CM time: 10 calls each
    results = {
        "benchmark": "pad",
        "machine": machine(),
        "detectors": {"replay": VERSION, "synthetic": cm.version if cm else "not configured"},
        "operating_threshold": replay.MIN_ALIGNED,
        "synthetic_threshold": synthetic.MIN_MARGIN,
        "tuned_on": "librispeech-cohort-251 bona fide only (bench/pad.py --tune); not used below",
        "replay": {
            "librispeech-test-other-10": evaluate(other, rng, cm),
            "fsdd": evaluate(digits, rng),
            "fsdd-10-calls-each": evaluate(short, rng, cm),
        },
    }
    if cm is not None:
        bona = {
            "librispeech-test-other-10": [c for _, calls in other.values() for c in calls],
            "fsdd": [c for _, calls in short.values() for c in calls],
        }
        results["synthetic"] = evaluate_synthetic(cm, args.data_dir, bona, rng)
    results["seconds"] = round(time.time() - started, 1)
    write_results(results, args.out, plot)
    for name, cells in results["replay"].items():
        for length, cell in cells.items():
            apcer = ", ".join(f"{s} {c['apcer']:.3f}" for s, c in cell["species"].items())
            print(
                f"replay {name} {length}: BPCER {cell['bpcer']:.3f} "
                f"(n={cell['bona_fide_presentations']}); APCER {apcer}"
            )
            if "fused" in cell:
                print(f"  fused: {cell['fused']}")
    for channel, cell in results.get("synthetic", {}).items():
        print(f"synthetic {channel}: bona fide {cell['bona_fide']}")
        for name, c in cell["species"].items():
            print(f"  {name}: APCER {c['apcer']:.3f} (n={c['attack_presentations']}), EER {c['eer']:.3f}")


if __name__ == "__main__":
    main()
