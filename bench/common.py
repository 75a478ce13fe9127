"""Shared by the benchmarks: data location, machine description, the wire simulation."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf

from authsvc.audio.codecs import Encoding, decode, encode, to_int16
from authsvc.audio.resample import resample

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def default_data_dir() -> Path:
    return Path(os.environ.get("AUTHSVC_DATA", ROOT.parent / "shared" / "data"))


def create_schema(dsn: str, schema: str) -> str:
    """Creates PostgreSQL schema `schema`; -> a DSN whose connections use it (`authsvc --store`)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return make_conninfo(dsn, options=f"-c search_path={schema}")


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def write_results(results: dict, out: Path, plot: Callable[[dict, Path], None]) -> None:
    """The results JSON at `out` and its plot beside it (same name, .png)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {results['seconds']} s")


def machine() -> dict:
    versions = {}
    packages = ("authsvc", "torch", "numpy", "scipy", "resemblyzer", "speechbrain", "webrtcvad", "matplotlib")
    for pkg in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def load_16k(path: Path) -> np.ndarray:
    wav, rate = sf.read(path, dtype="float32", always_2d=True)
    return resample(wav.mean(axis=1), rate, 16000)


def telephone(wav16k: np.ndarray, encoding: Encoding = Encoding.MULAW) -> np.ndarray:
    """Round trip through 8 kHz G.711: what a caller's voice looks like at the service. -> int16 at 8 kHz."""
    return decode(encode(resample(wav16k, 16000, 8000), encoding), encoding)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate by sweeping every observed score as a threshold."""
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    order = np.argsort(-scores, kind="stable")
    labels = labels[order]
    tp = np.cumsum(labels)
    fp = np.cumsum(1 - labels)
    frr = 1 - tp / len(genuine)
    far = fp / len(impostor)
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2)


def embed_all(encoder, wavs: list[np.ndarray]) -> np.ndarray:
    """Embeddings of encoder-rate waveforms, 16 to a batch."""
    return np.concatenate([encoder.embed_batch(wavs[i : i + 16]) for i in range(0, len(wavs), 16)])


def clean_input(encoder, wav16k: np.ndarray) -> np.ndarray:
    """What an enrollment from a clean 16 kHz recording gives the encoder (VAD, resampling)."""
    from authsvc.voice.pipeline import encoder_input, track

    return encoder_input(track(to_int16(wav16k), 16000), encoder.sample_rate)


def voiceprint(encoder, clips16k: list[np.ndarray]) -> np.ndarray:
    """The enrolled template of clean 16 kHz samples, as enrollment stores it (their aggregate)."""
    from authsvc.scoring.cosine import aggregate

    return aggregate(list(embed_all(encoder, [clean_input(encoder, c) for c in clips16k])))


def fsdd_speakers(data_dir: Path) -> dict[str, list[Path]]:
    """fsdd files by speaker (DIGIT_SPEAKER_TAKE.wav), speakers in name order."""
    by_speaker: dict[str, list[Path]] = {}
    for f in sorted((data_dir / "speech" / "fsdd").glob("*.wav")):
        by_speaker.setdefault(f.stem.split("_")[1], []).append(f)
    return dict(sorted(by_speaker.items()))
