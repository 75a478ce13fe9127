"""Equal error rate of the project's voice pipeline vs Resemblyzer's own, on the same trials.

    python bench/voice_eer.py [DATA_DIR] [--out bench/results/voice_eer.json]

Conditions (speaker labels from folder/file names):
- librispeech clean 16 kHz, all pairs of the 100 utterances of librispeech-test-other-10
- librispeech after an 8 kHz G.711 mu-law round trip, all pairs
- librispeech first 3 s of audio only, all pairs
- fsdd (every 10th file: 300 spoken digits, 8 kHz, ~0.5 s), all pairs
- contact centre: each speaker enrolled from 5 clean utterances (mean embedding),
  probed, as a live call is, with each other utterance streamed as 8 kHz mu-law
  until the service's first decision point (3 s of net speech); both folds
  (utterances 1-5 enroll / 6-10 probe, and the reverse)

"project" is what the service computes: authsvc's VAD and resampling, then the
GE2E port (authsvc.voice.ge2e). "resemblyzer" is `preprocess_wav` +
`VoiceEncoder.embed_utterance` on exactly the same audio. Both use the same weights.
"project_asnorm" is "project" with AS-norm (authsvc.scoring.normalisation, top 100)
against the 251 librispeech-cohort-251 speakers, the cohort heard in each condition as
the trials are (clean, mu-law, 3 s, telephone 3 s probes), none of them a trial speaker.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.audio.codecs import to_float, to_int16
from authsvc.audio.resample import resample
from authsvc.scoring.normalisation import Cohort, as_norm
from authsvc.voice.pipeline import encoder_input, track, track_until
from authsvc.voice.registry import load_encoder
from bench.common import RESULTS, default_data_dir, eer, load_16k, machine, telephone

CONTACT_CENTRE_PROBE_S = 3.0
COHORT_TOP_K = 100

# An utterance as (int16 samples, sample rate): what reaches the service.
Audio = tuple[np.ndarray, int]


def project_embedder(encoder_name: str) -> Callable[[list[Audio]], np.ndarray]:
    encoder = load_encoder(encoder_name)

    def embed(items: list[Audio]) -> np.ndarray:
        wavs = []
        for samples, rate in items:
            voiced = encoder_input(track(samples, rate), encoder.sample_rate)
            # Very short clips (spoken digits) can lose most frames to the VAD;
            # the encoder still needs its minimum, so fall back to the whole clip.
            if voiced.size < encoder.sample_rate // 2:
                voiced = resample(to_float(samples), rate, encoder.sample_rate)
            # ... and zero-pad below it, as Resemblyzer pads its last partial window.
            wavs.append(np.pad(voiced, (0, max(0, encoder.sample_rate // 4 - voiced.size))))
        return np.concatenate([encoder.embed_batch(wavs[i : i + 16]) for i in range(0, len(wavs), 16)])

    return embed


def resemblyzer_embedder() -> Callable[[list[Audio]], np.ndarray]:
    import librosa
    from resemblyzer import VoiceEncoder, preprocess_wav
    from resemblyzer.audio import normalize_volume

    encoder = VoiceEncoder("cpu", verbose=False)

    def embed(items: list[Audio]) -> np.ndarray:
        out = []
        for samples, rate in items:
            wav = preprocess_wav(to_float(samples), source_sr=rate)
            if wav.size < 1600:  # its VAD removed (nearly) everything: its steps minus the trimming
                wav = librosa.resample(to_float(samples), orig_sr=rate, target_sr=16000)
                wav = normalize_volume(wav, -30, increase_only=True)
            out.append(encoder.embed_utterance(wav))
        return np.stack(out)

    return embed


def all_pairs(emb: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    scores = emb @ emb.T
    same = np.equal.outer(labels, labels)
    upper = np.triu(np.ones_like(same), k=1).astype(bool)
    return scores[upper & same], scores[upper & ~same]


def pairs_of(scores: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    same = np.equal.outer(labels, labels)
    upper = np.triu(np.ones_like(same), k=1).astype(bool)
    return scores[upper & same], scores[upper & ~same]


def cohort_conditions(
    wavs: list[np.ndarray], embed: Callable[[list[Audio]], np.ndarray]
) -> dict[str, Cohort]:
    """The normalisation cohort heard in each trial condition."""
    tel = []
    for w in wavs:
        t = telephone(w)
        _, used = track_until(t, 8000, CONTACT_CENTRE_PROBE_S)
        tel.append((t[:used], 8000))
    heard = {
        "librispeech_clean_16k": [(to_int16(w), 16000) for w in wavs],
        "librispeech_mulaw_8k": [(telephone(w), 8000) for w in wavs],
        "librispeech_first_3s": [(to_int16(w[: 3 * 16000]), 16000) for w in wavs],
        "telephone_3s": tel,
    }
    return {name: Cohort(embed(items), top_k=COHORT_TOP_K) for name, items in heard.items()}


def normed(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def run(data_dir: Path, out: Path) -> dict:
    libri = data_dir / "speech" / "librispeech-test-other-10"
    files = sorted(libri.glob("*/*.flac"))
    labels = [f.parent.name for f in files]
    clean = [load_16k(f) for f in files]
    fsdd_files = sorted((data_dir / "speech" / "fsdd").glob("*.wav"))[::10]
    fsdd_labels = [f.stem.split("_")[1] for f in fsdd_files]
    fsdd = [(to_int16(sf.read(f, dtype="float32")[0]), 8000) for f in fsdd_files]

    conditions: dict[str, list[Audio]] = {
        "librispeech_clean_16k": [(to_int16(w), 16000) for w in clean],
        "librispeech_mulaw_8k": [(telephone(w), 8000) for w in clean],
        "librispeech_first_3s": [(to_int16(w[: 3 * 16000]), 16000) for w in clean],
    }
    # Contact-centre probes: the audio a live call has sent when net speech reaches 3 s.
    cc_probes: list[Audio] = []
    for w in clean:
        tel = telephone(w)
        _, used = track_until(tel, 8000, CONTACT_CENTRE_PROBE_S)
        cc_probes.append((tel[:used], 8000))

    pipelines = {"project": project_embedder("ge2e"), "resemblyzer": resemblyzer_embedder()}
    cohort_wavs = [
        load_16k(f) for f in sorted((data_dir / "speech" / "librispeech-cohort-251").glob("*.flac"))
    ]
    results: dict = {"conditions": {}, "machine": machine(), "data_dir": str(data_dir)}
    for name, embed in pipelines.items():
        t0 = time.perf_counter()
        cohorts = cohort_conditions(cohort_wavs, embed) if name == "project" else {}
        for cond, items in [*conditions.items(), ("fsdd_every10th_8k", fsdd)]:
            lab = fsdd_labels if cond.startswith("fsdd") else labels
            emb = embed(items)
            gen, imp = all_pairs(emb, lab)
            entry = results["conditions"].setdefault(
                cond, {"genuine_trials": len(gen), "impostor_trials": len(imp)}
            )
            entry[name] = round(eer(gen, imp), 4)
            if cohorts:
                c = cohorts["telephone_3s" if cond.startswith("fsdd") else cond]
                gen_n, imp_n = pairs_of(as_norm(emb, emb, c, c), lab)
                entry["project_asnorm"] = round(eer(gen_n, imp_n), 4)
        # Contact centre: enroll on clean full utterances, probe with telephone 3 s prefixes.
        enroll_emb = embed(conditions["librispeech_clean_16k"])
        probe_emb = embed(cc_probes)
        gen, imp, gen_n, imp_n = [], [], [], []
        speakers = sorted(set(labels))
        for fold in (slice(0, 5), slice(5, 10)):
            models, probes, probe_labels = [], [], []
            for spk in speakers:
                idx = [i for i, lab in enumerate(labels) if lab == spk]
                enrolled = idx[fold]
                models.append(normed(normed(enroll_emb[enrolled]).mean(axis=0)))
                rest = [i for i in idx if i not in enrolled]
                probes.extend(probe_emb[rest])
                probe_labels.extend([spk] * len(rest))
            scores = np.stack(probes) @ np.stack(models).T
            same = np.equal.outer(probe_labels, speakers)
            gen.extend(scores[same])
            imp.extend(scores[~same])
            if cohorts:
                normed_scores = as_norm(
                    np.stack(models),
                    np.stack(probes),
                    cohorts["telephone_3s"],
                    cohorts["librispeech_clean_16k"],
                ).T
                gen_n.extend(normed_scores[same])
                imp_n.extend(normed_scores[~same])
        entry = results["conditions"].setdefault(
            "contact_centre_5enroll_3s_mulaw", {"genuine_trials": len(gen), "impostor_trials": len(imp)}
        )
        entry[name] = round(eer(np.array(gen), np.array(imp)), 4)
        if cohorts:
            entry["project_asnorm"] = round(eer(np.array(gen_n), np.array(imp_n)), 4)
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)

    for entry in results["conditions"].values():
        p, r = entry["project"], entry["resemblyzer"]
        entry["relative_change"] = round((p - r) / r, 3) if r else 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "voice_eer.json")
    args = parser.parse_args()
    results = run(args.data_dir, args.out)
    print(f"{'condition':36} {'trials':>12} {'project':>8} {'as-norm':>8} {'resemblyzer':>11} {'change':>7}")
    for cond, e in results["conditions"].items():
        trials = f"{e['genuine_trials']}/{e['impostor_trials']}"
        print(
            f"{cond:36} {trials:>12} {e['project']:8.2%} {e['project_asnorm']:8.2%} {e['resemblyzer']:11.2%} "
            f"{e['relative_change']:+7.1%}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
