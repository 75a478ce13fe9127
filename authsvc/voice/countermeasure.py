"""The synthetic-speech countermeasure, loaded from a model folder in clovaai/aasist's layout.

A folder holds `<name>.conf` (JSON with `model_config` and `model_path`) and the weights
it names, either flat (`AASIST.conf`, `AASIST.pth`) or as in the repository
(`config/AASIST.conf`, `models/weights/AASIST.pth`). A missing, unreadable or
mismatched file refuses start-up with a message naming it.

The countermeasure is shaped like a speaker encoder (`embed_batch`, `sample_rate`,
`encoder_id`, `version`) so it runs through the same batching core: its "embedding" is
one number per waveform, the mean over 4 s windows of logit(bona fide) - logit(spoof).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from authsvc.errors import ConfigError
from authsvc.voice.aasist import AASIST, windows
from authsvc.voice.encoder import check_wavs

SAMPLE_RATE = 16000
# Less voiced audio than this is not judged (a fraction of one AASIST window).
MIN_SECONDS = 1.5


def _find_config(folder: Path) -> Path:
    for where in (folder, folder / "config"):
        confs = sorted(where.glob("*.conf")) if where.is_dir() else []
        preferred = [c for c in confs if c.stem == "AASIST"]
        if preferred or confs:
            return (preferred or confs)[0]
    raise ConfigError(
        f"countermeasure folder {folder}: no AASIST .conf file (looked in {folder} and config/)"
    )


def _find_weights(folder: Path, conf: Path, model_path: str) -> Path:
    named = Path(model_path) if model_path else Path(f"{conf.stem}.pth")
    for candidate in (folder / named, folder / named.name, folder / "models" / "weights" / named.name):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"countermeasure folder {folder}: weights file {named.name} (named by {conf.name}) is missing"
    )


class Countermeasure:
    encoder_id = "aasist"
    sample_rate = SAMPLE_RATE
    embedding_dim = 1

    def __init__(self, net: AASIST, version: str, device: str = "cpu") -> None:
        self.net = net.eval().to(device)
        self.version = version
        self.device = device
        self.min_samples = int(MIN_SECONDS * SAMPLE_RATE)

    @torch.inference_mode()
    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """-> (B, 1): the bona fide margin of each waveform (16 kHz float), higher = more human."""
        checked = check_wavs(wavs, min_samples=self.min_samples)
        parts = [windows(w, self.net.nb_samp) for w in checked]
        batch = torch.from_numpy(np.concatenate(parts)).to(self.device)
        logits = self.net(batch).float().cpu().numpy()
        margin = logits[:, 1] - logits[:, 0]
        out, start = [], 0
        for p in parts:
            out.append(margin[start : start + len(p)].mean())
            start += len(p)
        return np.asarray(out, np.float32).reshape(-1, 1)


def load_countermeasure(folder: str | Path, device: str = "cpu") -> Countermeasure:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"countermeasure folder {folder} does not exist")
    conf = _find_config(folder)
    try:
        doc = json.loads(conf.read_text(encoding="utf-8"))
        model_config = doc["model_config"]
        if model_config.get("architecture", "AASIST") != "AASIST":
            raise ConfigError(f"{conf}: architecture {model_config['architecture']!r} is not AASIST")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{conf}: not an AASIST config ({exc})") from None
    weights = _find_weights(folder, conf, str(doc.get("model_path", "")))
    data = weights.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        net = AASIST(model_config)
        net.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ConfigError(f"{weights}: does not fit {conf.name} ({first})") from None
    return Countermeasure(net, f"aasist-{conf.stem}-{hashlib.sha256(data).hexdigest()[:12]}", device)
