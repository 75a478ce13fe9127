"""Do thresholds transfer? Raw cosine vs AS-norm, fitted on one set of speakers, judged on others.

    python bench/score_transfer.py [DATA_DIR] [--out bench/results/score_transfer.json]

Fit: librispeech-cohort-251, the odd-indexed half of its speakers: clean 16 kHz
first-half enrollment vs a 3 s net-speech 8 kHz mu-law probe of the second half
(bench/calibrate_voice.py's protocol); the thresholds at FAR 10 %, 1 % and 0.1 %
are read off its impostor scores, for raw cosine and for AS-norm. AS-norm's
cohort is the other (even-indexed) half: its template side heard as 3 s mu-law
probes, its probe side as clean whole utterances, so no fitted speaker is in it.

Judged on speech used for neither:
- librispeech-test-other-10: mean of 5 clean utterances enrolled, 3 s mu-law probes
  of the other 5;
- fsdd: 3 samples of 10 spoken digits enrolled, probes of 6 other digits (~3 s).
Reported per condition and method: EER, and the observed FAR and FRR at each fitted
threshold, with the trial counts they rest on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.scoring.normalisation import Cohort, as_norm
from authsvc.voice.pipeline import encoder_input, track_until
from authsvc.voice.registry import load_encoder
from bench.common import (
    RESULTS,
    clean_input,
    default_data_dir,
    eer,
    embed_all,
    fsdd_speakers,
    load_16k,
    machine,
    telephone,
    voiceprint,
    write_results,
)

TARGETS = (0.1, 0.01, 0.001)
TOP_K = 100


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "score_transfer.json")
    args = parser.parse_args()
    started = time.time()
    encoder = load_encoder("ge2e")
    speech = args.data_dir / "speech"

    def embed(wavs: list[np.ndarray]) -> np.ndarray:
        return embed_all(encoder, wavs)

    def clean(w: np.ndarray) -> np.ndarray:
        return clean_input(encoder, w)

    def call(w: np.ndarray) -> np.ndarray:
        tracker, _ = track_until(telephone(w), 8000, 3.0)
        return encoder_input(tracker, encoder.sample_rate)

    cohort = [load_16k(f) for f in sorted((speech / "librispeech-cohort-251").glob("*.flac"))]
    fitted, norm_half = cohort[1::2], cohort[0::2]
    # The normalisation cohort, heard as each side is: probes (for templates), clean (for probes).
    template_side = Cohort(embed([clean(w) for w in norm_half]), TOP_K)
    probe_side = Cohort(embed([call(w) for w in norm_half]), TOP_K)

    def scores(templates: np.ndarray, probes: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "raw": _unit(templates) @ _unit(probes).T,
            "as-norm": as_norm(templates, probes, probe_side, template_side),
        }

    fit_t = embed([clean(w[: w.size // 2]) for w in fitted])
    fit_p = embed([call(w[w.size // 2 :]) for w in fitted])
    same = np.eye(len(fitted), dtype=bool)
    thresholds = {
        method: {far: float(np.quantile(s[~same], 1 - far)) for far in TARGETS}
        for method, s in scores(fit_t, fit_p).items()
    }
    conditions = {"fit (cohort odd half)": (fit_t, fit_p, same)}

    folders = sorted(p for p in (speech / "librispeech-test-other-10").iterdir() if p.is_dir())
    templates, probes, owner = [], [], []
    for i, folder in enumerate(folders):
        wavs = [load_16k(f) for f in sorted(folder.glob("*.flac"))]
        templates.append(voiceprint(encoder, wavs[:5]))
        probes += [call(w) for w in wavs[5:]]
        owner += [i] * len(wavs[5:])
    conditions["test-other-10"] = (
        np.stack(templates),
        embed(probes),
        np.arange(len(folders))[:, None] == np.asarray(owner)[None, :],
    )

    rng = np.random.default_rng(0)
    templates, probes, owner = [], [], []
    for i, files in enumerate(fsdd_speakers(args.data_dir).values()):
        clips = [load_16k(files[j]) for j in rng.permutation(len(files))[:130]]
        templates.append(voiceprint(encoder, [np.concatenate(clips[k : k + 10]) for k in range(0, 30, 10)]))
        for k in range(30, 130, 6):
            probes.append(call(np.concatenate(clips[k : k + 6])))
            owner.append(i)
    conditions["fsdd"] = (
        np.stack(templates),
        embed(probes),
        np.arange(len(templates))[:, None] == np.asarray(owner)[None, :],
    )

    results: dict = {"benchmark": "score_transfer", "machine": machine(), "top_k": TOP_K, "conditions": {}}
    for name, (t, p, genuine) in conditions.items():
        entry: dict = {"impostor_trials": int((~genuine).sum()), "genuine_trials": int(genuine.sum())}
        for method, s in scores(t, p).items():
            imp, gen = s[~genuine], s[genuine]
            entry[method] = {
                "eer": round(eer(gen, imp), 4),
                "at_fitted_thresholds": [
                    {
                        "target_far": far,
                        "observed_far": round(float((imp >= thr).mean()), 4),
                        "far_over_target": round(float((imp >= thr).mean()) / far, 2),
                        "frr": round(float((gen < thr).mean()), 4),
                    }
                    for far, thr in thresholds[method].items()
                ],
            }
        results["conditions"][name] = entry
        print(name, entry)
    results["seconds"] = round(time.time() - started, 1)
    write_results(results, args.out, plot)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["conditions"])
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(12, 4))
    for ax, far in zip(axes, TARGETS, strict=True):
        x = np.arange(len(names))
        for k, method in enumerate(("raw", "as-norm")):
            ratio = [
                next(
                    p
                    for p in results["conditions"][n][method]["at_fitted_thresholds"]
                    if p["target_far"] == far
                )["far_over_target"]
                for n in names
            ]
            ax.bar(x + (k - 0.5) * 0.35, ratio, 0.35, label=method)
        ax.axhline(1.0, color="grey", linestyle="--")
        ax.set_xticks(x, names, rotation=15, fontsize=8)
        ax.set_title(f"observed FAR / {far:g} at the fitted threshold", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
