"""Makes the voice score calibration the service ships (authsvc/scoring/calibrations/<encoder>.json).

On speakers that no test or benchmark uses as a target: each of the 251
LibriSpeech cohort utterances (~14 s) is cut in two halves; every first half is
enrolled from clean 16 kHz audio and every second half is a probe streamed, as a
live call would be, after an 8 kHz G.711 mu-law round trip, up to 3 s of net
speech (the service's first decision). Same utterance = genuine trial (251),
different speakers = impostor trials (62,750). Short telephone probes are the
hardest case the service decides on, so thresholds from them are the
conservative ones. Impostor quantiles give FAR -> threshold; both sets fit the
score -> LLR map used for fusion.

    python bench/calibrate_voice.py [DATA_DIR] [--encoder ge2e] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.scoring.calibration import Calibration, calibration_path
from authsvc.voice.pipeline import encoder_input, track_until
from authsvc.voice.registry import load_encoder
from bench.common import (
    clean_input,
    default_data_dir,
    embed_all,
    fsdd_speakers,
    load_16k,
    telephone,
    voiceprint,
)

PROBE_NET_SPEECH_S = 3.0
# Two probes per cohort utterance double the impostor trials (to resolve smaller FARs); the
# trials of one speaker pair are not independent, so the pair count is recorded too.
PROBES_PER_UTTERANCE = 2
MIN_PROBE_S = 2.0
TARGETS = (0.1, 0.01, 1e-3, 1e-4, 3.3e-5)


def probes_of(wav8k: np.ndarray, encoder_rate: int, count: int = PROBES_PER_UTTERANCE) -> list[np.ndarray]:
    """Successive, non-overlapping probes of `PROBE_NET_SPEECH_S` net speech, as a call's first
    decision hears them; a remainder with less than MIN_PROBE_S of speech is not a probe."""
    out, start = [], 0
    while len(out) < count and start < wav8k.size:
        tracker, used = track_until(wav8k[start:], 8000, PROBE_NET_SPEECH_S)
        if tracker.net_speech_s < MIN_PROBE_S:
            break
        out.append(encoder_input(tracker, encoder_rate))
        start += used
    return out


def fit(files: list[Path], encoder, name: str) -> tuple[Calibration, np.ndarray]:
    """The calibration of `encoder` on `files` (one speaker each), by the protocol above;
    -> (calibration, genuine scores)."""
    enroll, probe, owner = [], [], []
    for i, f in enumerate(files):
        wav = load_16k(f)
        half = wav.size // 2
        enroll.append(clean_input(encoder, wav[:half]))
        for p in probes_of(telephone(wav[half:]), encoder.sample_rate):
            probe.append(p)
            owner.append(i)
    scores = embed_all(encoder, enroll) @ embed_all(encoder, probe).T
    same = np.asarray(owner)[None, :] == np.arange(len(files))[:, None]
    impostor, genuine = scores[~same], scores[same]
    cal = Calibration.from_impostor_scores(
        impostor,
        encoder.encoder_id,
        encoder.version,
        data=f"{name} ({len(files)} speakers): clean 16 kHz first-half enrollment vs up to "
        f"{PROBES_PER_UTTERANCE} successive {PROBE_NET_SPEECH_S:g} s net-speech 8 kHz mu-law probes from "
        f"the second half, {impostor.size} impostor trials ({len(files) * (len(files) - 1)} speaker "
        f"pairs) and {genuine.size} genuine trials",
    ).with_llr_fit(genuine, impostor)
    return cal, genuine


def validate(cal: Calibration, encoder, data_dir: Path) -> list[dict]:
    """Observed FAR and FRR at each target on speech not used to fit `cal`."""
    out = []
    for name, (templates, probes, owner) in (
        ("librispeech-test-other-10", _test_other(encoder, data_dir)),
        ("fsdd", _fsdd(encoder, data_dir)),
    ):
        scores = templates @ probes.T
        same = np.asarray(owner)[None, :] == np.arange(len(templates))[:, None]
        impostor, genuine = scores[~same], scores[same]
        points = []
        for far in TARGETS:
            if far < 1.0 / cal.impostor_trials:
                continue
            t = cal.threshold_for(far)
            points.append(
                {
                    "target_far": far,
                    "observed_far": float((impostor >= t).mean()),
                    "false_accepts": int((impostor >= t).sum()),
                    "frr": float((genuine < t).mean()),
                    "resolvable": bool(far >= 3.0 / impostor.size),
                }
            )
        out.append(
            {
                "data": name,
                "protocol": VALIDATION_PROTOCOL[name],
                "impostor_trials": int(impostor.size),
                "speaker_pairs": len(templates) * (len(templates) - 1),
                "genuine_trials": int(genuine.size),
                "points": points,
            }
        )
    return out


VALIDATION_PROTOCOL = {
    "librispeech-test-other-10": "mean of 3 clean 16 kHz utterances enrolled; probes: up to 2 successive "
    "3 s net-speech 8 kHz mu-law probes of each other utterance",
    "fsdd": "3 enrollment samples of 5 spoken digits (8 kHz); probes: 6 other digits, 3 s net speech, mu-law",
}


def _test_other(encoder, data_dir: Path):
    templates, probes, owner = [], [], []
    folders = sorted(p for p in (data_dir / "speech" / "librispeech-test-other-10").iterdir() if p.is_dir())
    for i, folder in enumerate(folders):
        wavs = [load_16k(f) for f in sorted(folder.glob("*.flac"))]
        templates.append(voiceprint(encoder, wavs[:3]))
        for w in wavs[3:]:
            for p in probes_of(telephone(w), encoder.sample_rate):
                probes.append(p)
                owner.append(i)
    return np.stack(templates), embed_all(encoder, probes), owner


def _fsdd(encoder, data_dir: Path):
    rng = np.random.default_rng(0)
    templates, probes, owner = [], [], []
    for i, files in enumerate(fsdd_speakers(data_dir).values()):
        clips = [load_16k(files[j]) for j in rng.permutation(len(files))[:135]]
        templates.append(voiceprint(encoder, [np.concatenate(clips[k : k + 5]) for k in range(0, 15, 5)]))
        for k in range(15, 135, 6):
            probes.extend(probes_of(telephone(np.concatenate(clips[k : k + 6])), encoder.sample_rate, 1))
            owner.extend([i] * (len(probes) - len(owner)))
    return np.stack(templates), embed_all(encoder, probes), owner


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--encoder", default="ge2e")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    encoder = load_encoder(args.encoder, model_dir=args.model_dir)
    files = sorted((args.data_dir / "speech" / "librispeech-cohort-251").glob("*.flac"))
    if len(files) < 50:
        raise SystemExit(f"{args.data_dir}: librispeech-cohort-251 not found")
    cal, genuine = fit(files, encoder, "librispeech-cohort-251")
    cal = replace(cal, validation=tuple(validate(cal, encoder, args.data_dir)))
    out = args.out or calibration_path(encoder.encoder_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cal.to_json() + "\n")
    for far in (0.1, 0.01, 0.001, 1e-4):
        try:
            t = cal.threshold_for(far)
            frr = float((genuine < t).mean())
            print(f"FAR {far:g}: threshold {t:.4f} (LLR {cal.llr(t):+.2f}), FRR on genuine trials {frr:.3f}")
        except Exception as exc:
            print(f"FAR {far:g}: {exc}")
    for v in cal.validation:
        print(
            v["data"],
            v["impostor_trials"],
            "impostor trials:",
            [(p["target_far"], p["observed_far"]) for p in v["points"]],
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
