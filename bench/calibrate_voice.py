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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.audio.codecs import to_int16
from authsvc.scoring.calibration import Calibration, calibration_path
from authsvc.voice.pipeline import encoder_input, track, track_until
from authsvc.voice.registry import load_encoder
from bench.common import default_data_dir, load_16k, telephone

PROBE_NET_SPEECH_S = 3.0


def fit(files: list[Path], encoder, name: str) -> tuple[Calibration, np.ndarray]:
    """The calibration of `encoder` on `files` (one speaker each), by the protocol above;
    -> (calibration, genuine scores)."""
    enroll, probe = [], []
    for f in files:
        wav = load_16k(f)
        half = wav.size // 2
        enroll.append(encoder_input(track(to_int16(wav[:half]), 16000), encoder.sample_rate))
        tracker, _ = track_until(telephone(wav[half:]), 8000, PROBE_NET_SPEECH_S)
        probe.append(encoder_input(tracker, encoder.sample_rate))
    e = np.concatenate([encoder.embed_batch(enroll[i : i + 16]) for i in range(0, len(enroll), 16)])
    p = np.concatenate([encoder.embed_batch(probe[i : i + 16]) for i in range(0, len(probe), 16)])
    scores = e @ p.T
    impostor = scores[~np.eye(len(files), dtype=bool)]
    genuine = np.diag(scores)
    cal = Calibration.from_impostor_scores(
        impostor,
        encoder.encoder_id,
        encoder.version,
        data=f"{name} ({len(files)} speakers): clean 16 kHz first-half enrollment vs "
        f"{PROBE_NET_SPEECH_S:g} s net-speech 8 kHz mu-law second-half probes, {impostor.size} impostor "
        f"and {genuine.size} genuine trials",
    ).with_llr_fit(genuine, impostor)
    return cal, genuine


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
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
