"""Speaker encoders on ONNX Runtime: GE2E exported at load, and WeSpeaker model folders.

`ge2e-onnx` runs the GE2E network of `authsvc.voice.ge2e` (the very weights, from the
resemblyzer wheel or `<model_dir>/pretrained.pt`) in ONNX Runtime. The network is exported
with `torch.onnx.export` (TorchScript exporter, `dynamo=False`: the dynamo exporter needs
onnxscript) into memory at every load, about 1.3 s on a 2-core CPU, and never written
anywhere: nothing to download, no cache to go stale when torch or the weights change. The
mel front end, the windowing and the pooling are the torch encoder's own functions
(`ge2e.mel_windows`, `ge2e.pool_windows`); only the LSTM + Linear + ReLU + L2 runs in
ONNX Runtime. Its embeddings equal the torch encoder's to float rounding, so it keeps
`encoder_id` "ge2e" and the same `version`: templates enrolled with either are scored
by the other, and the GE2E score calibration applies. That is checked, not assumed:
at load, probe signals go through both and the lowest cosine must reach `MIN_COSINE`,
else the load fails (tests/test_onnx_encoder.py checks the same on recorded speech).

`wespeaker` loads a model folder in the layout WeSpeaker publishes (wenet-e2e/wespeaker:
`config.yaml`, the training configuration, beside the runtime model exported by
`wespeaker/bin/export_onnx.py`: input "feats" (B, T, n_mels), output "embs" (B, D)). The
front end is the one WeSpeaker trains and extracts with (`wespeaker/dataset/processor.py`):
Kaldi-compatible log mel filterbank (`torchaudio.compliance.kaldi.fbank`) of the waveform
scaled to int16 range, `num_mel_bins`/`frame_length`/`frame_shift` from
`dataset_args.fbank_args`, Hamming window, no energy, dither 0 (as `extract.py` sets for
inference), then per-utterance mean normalisation (`dataset_args.cmvn`, default on). Its
id is "wespeaker" and its version is `wespeaker-<sha256[:12] of the .onnx>-<sha256[:8] of
the front-end settings used>`: templates of two models, or of one model behind two front
ends, are never compared. No calibration ships for it: a tenant policy must set
`voice.threshold` (models/onnx.md) until one is made with bench/calibrate_voice.py.

Both release the GIL for the whole `session.run`, and `threads` sets ONNX Runtime's
intra-op threads (its pool does not spin between runs, so idle threads leave the other
core to the event loop). `device="cuda[:N]"` uses `CUDAExecutionProvider`, which needs the
onnxruntime-gpu build in place of onnxruntime.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from authsvc.errors import ConfigError
from authsvc.voice import ge2e
from authsvc.voice.device import probe_signals
from authsvc.voice.encoder import MIN_AUDIO_SECONDS, check_wavs

log = logging.getLogger(__name__)

#: Least cosine between the ONNX Runtime and the torch GE2E embedding of any probe signal
#: for the ONNX one to pass as the same encoder (same id and version, same templates).
#: Measured: 0.9999998 on LibriSpeech (tests/test_onnx_encoder.py); anything below 0.9999
#: would be a different function, not rounding.
MIN_COSINE = 0.9999

#: ONNX opset of the GE2E export (LSTM has been stable since opset 14; 17 is widely supported).
OPSET = 17

CONFIG_FILE = "config.yaml"
INPUT_NAME = "feats"
OUTPUT_NAME = "embs"
WINDOW_TYPES = ("hamming", "povey", "hanning", "rectangular", "blackman")
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def _providers(device: str) -> tuple[list[Any], str]:
    """ONNX Runtime execution providers for a device name -> (providers, canonical device)."""
    import onnxruntime as ort

    if device == "auto":
        device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    match = _CUDA.match(device)
    if match is None:
        raise ConfigError(
            f"device {device!r} is not supported by ONNX Runtime here (use 'cpu' or 'cuda[:N]')"
        )
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigError(
            f"device {device!r} requested but this onnxruntime has no CUDAExecutionProvider "
            f"(it has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu in place "
            "of onnxruntime, or pass device 'cpu'"
        )
    index = int(match.group(1) or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"


def make_session(model: bytes | Path, *, device: str = "cpu", threads: int | None = None) -> Any:
    """An `onnxruntime.InferenceSession` of `model` (file or serialized bytes).

    `threads`: intra-op threads (None: ONNX Runtime's default, one per physical core).
    Errors (unreadable model, missing provider) are `ConfigError`.
    """
    import onnxruntime as ort

    providers, _ = _providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    # Spinning pool threads would burn the core the event loop and the other sessions need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initializers etc. are not ours to fix
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        where = model if isinstance(model, Path) else "the exported model"
        raise ConfigError(f"ONNX Runtime cannot load {where}: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------- GE2E


def export_ge2e(net: ge2e.GE2ENet) -> bytes:
    """The GE2E network as a serialized ONNX model: "mels" (N, T, 40) -> "embeds" (N, 256)."""
    net = net.to("cpu").float().eval()
    dummy = torch.rand(2, ge2e.PARTIAL_FRAMES, ge2e.N_MELS)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and its LSTM batch_first remark.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (dummy,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=["mels"],
            output_names=["embeds"],
            dynamic_axes={"mels": {0: "N", 1: "T"}, "embeds": {0: "N"}},
        )
    return buffer.getvalue()


class OnnxGE2EEncoder:
    """`SpeakerEncoder`: GE2E with the LSTM in ONNX Runtime; same id, version and embeddings."""

    encoder_id = ge2e.GE2EEncoder.encoder_id
    sample_rate = ge2e.SAMPLE_RATE
    embedding_dim = ge2e.EMBEDDING_DIM
    min_samples = ge2e.GE2EEncoder.min_samples
    max_windows_per_forward = ge2e.GE2EEncoder.max_windows_per_forward
    backend = "onnxruntime"

    def __init__(self, session: Any, version: str, device: str = "cpu") -> None:
        self.session = session
        self.version = version
        self.device = device
        # The front end runs in torch on the CPU whatever the device: it is ~1 % of the work.
        self.mel = ge2e.MelFrontEnd()

    @torch.inference_mode()
    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """As `GE2EEncoder.embed_batch`: all windows of the batch in one run, averaged per utterance."""
        arrays = check_wavs(wavs, min_samples=self.min_samples)
        if not arrays:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        stacked, counts = ge2e.mel_windows(self.mel, arrays, torch.device("cpu"))
        windows = stacked.numpy()
        partials = np.concatenate(
            [
                self.session.run(["embeds"], {"mels": windows[i : i + self.max_windows_per_forward]})[0]
                for i in range(0, windows.shape[0], self.max_windows_per_forward)
            ]
        )
        pooled = ge2e.pool_windows(torch.from_numpy(partials), counts)
        return pooled.numpy().astype(np.float32, copy=False)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Lowest row cosine between two (B, D) embedding matrices."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return float(np.min(np.sum(a * b, axis=1)))


def load_ge2e_onnx(
    model_dir: str | Path | None = None, *, device: str = "cpu", threads: int | None = None
) -> OnnxGE2EEncoder:
    """GE2E (resemblyzer's weights or `<model_dir>/pretrained.pt`) exported to and run in ONNX Runtime.

    Refuses with `ConfigError` when its probe embeddings drift from the torch encoder's
    beyond `MIN_COSINE`, since it claims the torch encoder's id and version.
    """
    _, canonical = _providers(device)
    reference = ge2e.load_ge2e(model_dir, device="cpu", threads=threads)
    session = make_session(export_ge2e(reference.net), device=canonical, threads=threads)
    encoder = OnnxGE2EEncoder(session, reference.version, device=canonical)
    probes = probe_signals(ge2e.SAMPLE_RATE)
    cosine = agreement(encoder.embed_batch(probes), reference.embed_batch(probes))
    if cosine < MIN_COSINE:
        raise ConfigError(
            f"GE2E on ONNX Runtime ({canonical}) moves probe embeddings to cosine {cosine:.6f} of "
            f"the torch encoder, beyond {MIN_COSINE}; use encoder 'ge2e'"
        )
    log.info("ge2e on onnxruntime (%s), cosine to torch >= %.7f on probes", canonical, cosine)
    return encoder


# ----------------------------------------------------------------------------- WeSpeaker


def _section(config: dict, name: str, where: Path) -> dict:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping, got {type(value).__name__}")
    return value


def _positive(value: Any, name: str, where: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where}: {name} must be a positive number, got {value!r}")
    return value


def read_frontend(config: dict, where: Path) -> dict[str, Any]:
    """The inference front end a WeSpeaker `config.yaml` describes, with WeSpeaker's defaults."""
    data = _section(config, "dataset_args", where)
    model_args = _section(config, "model_args", where)
    frontend = data.get("frontend", "fbank")
    if frontend != "fbank":
        raise ConfigError(
            f"{where}: dataset_args.frontend is {frontend!r}; only 'fbank' models can run here "
            "(self-supervised front ends such as s3prl are not part of the exported ONNX model)"
        )
    fbank = _section(data, "fbank_args", where)
    cmvn_args = _section(data, "cmvn_args", where)
    settings = {
        "sample_rate": int(_positive(data.get("resample_rate", 16000), "dataset_args.resample_rate", where)),
        "num_mel_bins": int(
            _positive(fbank.get("num_mel_bins", model_args.get("feat_dim", 80)), "num_mel_bins", where)
        ),
        "frame_length": float(_positive(fbank.get("frame_length", 25), "fbank_args.frame_length", where)),
        "frame_shift": float(_positive(fbank.get("frame_shift", 10), "fbank_args.frame_shift", where)),
        "window_type": fbank.get("window_type", "hamming"),
        "norm_mean": bool(cmvn_args.get("norm_mean", True)) and bool(data.get("cmvn", True)),
        "norm_var": bool(cmvn_args.get("norm_var", False)) and bool(data.get("cmvn", True)),
    }
    if settings["sample_rate"] not in (8000, 16000):
        raise ConfigError(f"{where}: resample_rate {settings['sample_rate']} is not 8000 or 16000")
    if settings["window_type"] not in WINDOW_TYPES:
        raise ConfigError(f"{where}: window_type {settings['window_type']!r} is not one of {WINDOW_TYPES}")
    feat_dim = model_args.get("feat_dim")
    if feat_dim is not None and feat_dim != settings["num_mel_bins"]:
        raise ConfigError(
            f"{where}: model_args.feat_dim {feat_dim} differs from fbank_args.num_mel_bins "
            f"{settings['num_mel_bins']}"
        )
    return settings


class WeSpeakerEncoder:
    """`SpeakerEncoder` over a WeSpeaker runtime model (see the module docstring)."""

    encoder_id = "wespeaker"
    backend = "onnxruntime"
    #: Most utterances of one length per run; bounds memory only.
    max_batch = 32

    def __init__(self, session: Any, version: str, frontend: dict[str, Any], device: str = "cpu") -> None:
        self.session = session
        self.version = version
        self.frontend = dict(frontend)
        self.device = device
        self.sample_rate = int(frontend["sample_rate"])
        frame_samples = int(frontend["frame_length"] * self.sample_rate / 1000)
        self.min_samples = max(int(MIN_AUDIO_SECONDS * self.sample_rate), frame_samples)
        self.embedding_dim = 0  # set by the loader's probe

    def features(self, wav: np.ndarray) -> np.ndarray:
        """(n_samples,) float32 in [-1, 1] -> (frames, num_mel_bins) normalised log mel filterbank."""
        import torchaudio.compliance.kaldi as kaldi

        f = self.frontend
        with torch.inference_mode():
            feats = kaldi.fbank(
                torch.from_numpy(wav)[None] * (1 << 15),  # WeSpeaker's features are of int16-range audio
                num_mel_bins=f["num_mel_bins"],
                frame_length=f["frame_length"],
                frame_shift=f["frame_shift"],
                dither=0.0,
                sample_frequency=self.sample_rate,
                window_type=f["window_type"],
                use_energy=False,
            )
            if f["norm_mean"]:
                feats = feats - feats.mean(dim=0, keepdim=True)
            if f["norm_var"]:
                feats = feats / torch.sqrt(feats.var(dim=0, keepdim=True) + 1e-7)
        return feats.numpy()

    def _run(self, feats: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: feats})[0]

    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """Embed utterances; equal-length ones share a run, so no row ever sees another's padding."""
        arrays = check_wavs(wavs, min_samples=self.min_samples)
        out = np.zeros((len(arrays), self.embedding_dim), dtype=np.float32)
        if not arrays:
            return out
        feats = [self.features(a) for a in arrays]
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            groups.setdefault(f.shape[0], []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.max_batch):
                idx = members[start : start + self.max_batch]
                emb = np.asarray(self._run(np.stack([feats[i] for i in idx])), dtype=np.float32)
                out[idx] = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
        return out


def _find_onnx(folder: Path) -> Path:
    found = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    if not found:
        raise ConfigError(
            f"WeSpeaker model folder {folder} has no .onnx model (the runtime model WeSpeaker "
            "publishes, or wespeaker/bin/export_onnx.py's output)"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"WeSpeaker model folder {folder} has several .onnx models ({names}); keep one")
    return found[0]


def _check_signature(session: Any, n_mels: int, where: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ConfigError(
            f"{where} takes inputs {[i.name for i in inputs]}, not one input {INPUT_NAME!r} "
            "(B, T, n_mels) as wespeaker/bin/export_onnx.py writes"
        )
    shape = inputs[0].shape
    if len(shape) != 3 or (isinstance(shape[2], int) and shape[2] != n_mels):
        raise ConfigError(f"{where}: input {INPUT_NAME!r} has shape {shape}, expected (B, T, {n_mels})")
    if OUTPUT_NAME not in [o.name for o in outputs]:
        raise ConfigError(f"{where} has outputs {[o.name for o in outputs]}, none named {OUTPUT_NAME!r}")


def load_wespeaker(
    model_dir: str | Path | None, *, device: str = "cpu", threads: int | None = None
) -> WeSpeakerEncoder:
    """Load a WeSpeaker-format folder (`config.yaml` + one `.onnx`); every defect is a `ConfigError`."""
    import yaml

    if model_dir is None:
        raise ConfigError("encoder 'wespeaker' needs a model folder (config.yaml and the .onnx model)")
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"WeSpeaker model folder {folder} does not exist or is not a folder")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"WeSpeaker model folder {folder} is missing {CONFIG_FILE}")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {config_path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{config_path} is not a mapping of settings")
    frontend = read_frontend(config, config_path)

    model_path = _find_onnx(folder)
    data = model_path.read_bytes()
    _, canonical = _providers(device)
    if threads is not None:
        torch.set_num_threads(threads)  # the fbank front end runs in torch
    session = make_session(data, device=canonical, threads=threads)
    _check_signature(session, frontend["num_mel_bins"], model_path)

    settings = json.dumps(frontend, sort_keys=True).encode()
    version = f"wespeaker-{hashlib.sha256(data).hexdigest()[:12]}-{hashlib.sha256(settings).hexdigest()[:8]}"
    encoder = WeSpeakerEncoder(session, version, frontend, device=canonical)
    encoder.embedding_dim = _probe_dim(encoder, model_path)
    declared = _section(config, "model_args", config_path).get("embed_dim")
    if declared is not None and declared != encoder.embedding_dim:
        raise ConfigError(
            f"{model_path} gives {encoder.embedding_dim}-dimensional embeddings but {CONFIG_FILE} "
            f"declares model_args.embed_dim {declared}: the config is not this model's"
        )
    log.info(
        "wespeaker model %s (%s, %d-d, %s) on onnxruntime %s",
        model_path.name,
        config.get("model", "?"),
        encoder.embedding_dim,
        version,
        canonical,
    )
    return encoder


def _probe_dim(encoder: WeSpeakerEncoder, where: Path) -> int:
    """One seeded signal through the model: learns the embedding size and makes a model that
    cannot run on these features fail at load, not on a caller's first request."""
    probe = np.random.default_rng(0).uniform(-0.1, 0.1, encoder.min_samples * 4).astype(np.float32)
    try:
        emb = np.asarray(encoder._run(encoder.features(probe)[None]))
    except Exception as exc:
        raise ConfigError(f"{where} loads but cannot embed: {type(exc).__name__}: {exc}") from exc
    if emb.ndim != 2 or emb.shape[0] != 1 or emb.shape[1] < 2:
        raise ConfigError(f"{where}: output {OUTPUT_NAME!r} has shape {emb.shape}, expected (B, D)")
    if not np.isfinite(emb).all():
        raise ConfigError(f"{where}: the probe embedding is not finite")
    return int(emb.shape[1])
