"""GE2E d-vector encoder: our own torch port of Resemblyzer's inference path.

The weights are the `pretrained.pt` that ships inside the `resemblyzer` wheel;
only that file is read. Resemblyzer's modules are never imported at run time:
they pull in webrtcvad and librosa, run one utterance per call, and their mel
front end is numpy. Here the same computation is done in torch, and all
partial windows of a batch go through the LSTM together.

Pipeline, matching `VoiceEncoder.embed_utterance` (Resemblyzer 0.1.4):
volume-normalise -> zero-pad to whole partial windows -> power mel spectrogram
(25 ms Hann window, 10 ms hop, 40 Slaney mel bands, centred frames with zero
padding, as librosa >= 0.10 computes it by default) -> 160-frame windows at
1.3 windows/s -> 3-layer LSTM -> Linear -> ReLU -> L2 -> mean over windows -> L2.
Resemblyzer's VAD trimming (`preprocess_wav`) is deliberately not part of this:
silence handling belongs to `authsvc.audio`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import nn

from authsvc.errors import ConfigError
from authsvc.voice.device import to_device
from authsvc.voice.encoder import MIN_AUDIO_SECONDS, check_wavs

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial window
PARTIAL_RATE = 1.3  # partial windows per second
MIN_COVERAGE = 0.75  # keep a last, zero-padded window only if this much is real audio
HIDDEN = 256
EMBEDDING_DIM = 256
NUM_LAYERS = 3
TARGET_DBFS = -30.0
WEIGHTS_FILE = "pretrained.pt"
INT16_MAX = (2**15) - 1


def normalize_volume(
    wav: np.ndarray, target_dbfs: float = TARGET_DBFS, increase_only: bool = True
) -> np.ndarray:
    """Scale `wav` so its RMS level is `target_dbfs`, as Resemblyzer does.

    The GE2E model was trained on audio normalised this way and its input is
    a linear (not log) mel power, so an utterance recorded 20 dB quieter would
    otherwise present the LSTM with a very different input range. Increase
    only: loud audio is left alone, so clipping is never made worse. Digital
    silence (RMS 0) is returned unchanged instead of being scaled by infinity.
    """
    wav = np.asarray(wav, dtype=np.float32)
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2)))
    if rms == 0.0:
        return wav
    change_db = target_dbfs - 20.0 * np.log10(rms / INT16_MAX)
    if change_db < 0 and increase_only:
        return wav
    return (wav * np.float32(10.0 ** (change_db / 20.0))).astype(np.float32)


def compute_partial_slices(
    n_samples: int, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE
) -> tuple[list[slice], list[slice]]:
    """Where to cut an utterance into 160-frame windows (Resemblyzer's logic).

    Returns (wav slices, mel-frame slices). The windows may reach past the end
    of the waveform; the caller zero-pads up to `wav_slices[-1].stop`. Copied
    rule for rule so embeddings match Resemblyzer's exactly.
    """
    if not 0 < min_coverage <= 1:
        raise ValueError("min_coverage must be in (0, 1]")
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLE_RATE / rate) / HOP))
    if not 0 < frame_step <= PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a window step of {frame_step} frames")

    wav_slices: list[slice] = []
    mel_slices: list[slice] = []
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    for i in range(0, steps, frame_step):
        mel_slices.append(slice(i, i + PARTIAL_FRAMES))
        wav_slices.append(slice(i * HOP, (i + PARTIAL_FRAMES) * HOP))

    last = wav_slices[-1]
    coverage = (n_samples - last.start) / (last.stop - last.start)
    if coverage < min_coverage and len(mel_slices) > 1:
        mel_slices = mel_slices[:-1]
        wav_slices = wav_slices[:-1]
    return wav_slices, mel_slices


class MelFrontEnd(nn.Module):
    """Linear-power mel spectrogram equal to librosa.feature.melspectrogram.

    librosa (0.10, 0.11) defaults: periodic Hann window, center=True with
    pad_mode="constant" (zeros), |STFT|**2, Slaney-scale, Slaney-normalised
    filters. Built with torchaudio so librosa is not a run-time dependency.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(
            n_freqs=N_FFT // 2 + 1,
            f_min=0.0,
            f_max=SAMPLE_RATE / 2,
            n_mels=N_MELS,
            sample_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("fbank", fbank.T.contiguous(), persistent=False)  # (n_mels, n_freqs)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(n_samples,) float32 -> (1 + n_samples // 160, 40) mel power frames."""
        spec = torch.stft(
            wav,
            n_fft=N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.abs() ** 2  # (n_freqs, frames), as librosa: abs, then square
        return (self.fbank @ power).T


class GE2ENet(nn.Module):
    """Resemblyzer's speaker LSTM: 3 x LSTM(40->256) -> Linear(256) -> ReLU -> L2."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, NUM_LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING_DIM)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, T, 40) mel power -> (B, 256) embeddings of unit norm (final hidden state)."""
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        # clamp: an all-zero ReLU output stays zero instead of becoming NaN
        return raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12)


class GE2EEncoder:
    """`SpeakerEncoder` over `GE2ENet`; see the module docstring for the pipeline."""

    encoder_id = "ge2e"
    sample_rate = SAMPLE_RATE
    embedding_dim = EMBEDDING_DIM
    min_samples = int(MIN_AUDIO_SECONDS * SAMPLE_RATE)
    #: Partial windows per LSTM call. A batch normally fits in one call; the cap
    #: bounds memory (about 0.7 MB of gate activations per window) for very long
    #: inputs and does not change any result beyond float rounding.
    max_windows_per_forward = 128

    def __init__(self, net: GE2ENet, version: str, device: str = "cpu") -> None:
        self.version = version
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.mel = MelFrontEnd().to(self.device)
        #: dtype of the LSTM (float16 on CUDA, see `authsvc.voice.device.enable_half`).
        #: The mel front end stays float32: its linear power spans ~1e-11..1e2.
        self.compute_dtype = torch.float32

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        self.net.to(dtype)
        self.compute_dtype = dtype

    @torch.inference_mode()
    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """Embed utterances; all their windows share one LSTM batch, averaged per utterance."""
        arrays = check_wavs(wavs, min_samples=self.min_samples)
        if not arrays:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        stacked, counts = mel_windows(self.mel, arrays, self.device)
        stacked = stacked.to(self.compute_dtype)
        partials = torch.cat(
            [
                self.net(stacked[i : i + self.max_windows_per_forward]).float()
                for i in range(0, stacked.shape[0], self.max_windows_per_forward)
            ]
        )
        return pool_windows(partials, counts).cpu().numpy().astype(np.float32, copy=False)


def mel_windows(
    mel: MelFrontEnd, arrays: Sequence[np.ndarray], device: torch.device
) -> tuple[torch.Tensor, list[int]]:
    """Checked waveforms -> ((N, 160, 40) float32 mel windows of all of them, windows per utterance).

    Shared by the torch and the ONNX Runtime GE2E (`authsvc.voice.onnx_encoder`), so both
    feed their networks the very same windows.
    """
    # One host-to-device copy for the whole batch (pinned on CUDA).
    padded: list[np.ndarray] = []
    slices: list[list[slice]] = []
    for wav in arrays:
        wav = normalize_volume(wav)
        wav_slices, mel_slices = compute_partial_slices(len(wav))
        padded.append(np.pad(wav, (0, max(wav_slices[-1].stop, len(wav)) - len(wav))))
        slices.append(mel_slices)
    flat = to_device(np.concatenate(padded), device)

    windows: list[torch.Tensor] = []
    start = 0
    for wav, mel_slices in zip(padded, slices, strict=True):
        frames = mel(flat[start : start + len(wav)])
        start += len(wav)
        windows.extend(frames[s] for s in mel_slices)
    # (N, 160, 40): equal lengths, no padding needed
    return torch.stack(windows), [len(s) for s in slices]


def pool_windows(partials: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """(N, D) window embeddings -> (B, D): each utterance's mean, L2-normalised."""
    embeds = torch.stack([chunk.mean(dim=0) for chunk in torch.split(partials, list(counts))])
    return embeds / torch.norm(embeds, dim=1, keepdim=True).clamp_min(1e-12)


def resemblyzer_weights_path() -> Path:
    """Path of `pretrained.pt` inside the installed resemblyzer wheel.

    Uses `find_spec`, which locates the package without executing its
    `__init__` (that would import webrtcvad, librosa and scipy).
    """
    spec = importlib.util.find_spec("resemblyzer")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "GE2E weights not found: install the 'resemblyzer' wheel (it ships "
        f"{WEIGHTS_FILE}) or pass a model folder that contains {WEIGHTS_FILE}"
    )


def load_ge2e(
    model_dir: str | Path | None = None, *, device: str = "cpu", threads: int | None = None
) -> GE2EEncoder:
    """Build the GE2E encoder from resemblyzer's weights or `<model_dir>/pretrained.pt`.

    The file is read once, so the sha256 in `version` is of exactly the bytes
    that were loaded. `threads` sets torch's intra-op threads process-wide.
    """
    if model_dir is None:
        path = resemblyzer_weights_path()
    else:
        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"GE2E model folder {folder} does not exist or is not a folder")
        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise ConfigError(f"GE2E model folder {folder} has no {WEIGHTS_FILE}")

    data = path.read_bytes()
    version = f"resemblyzer-pretrained-{hashlib.sha256(data).hexdigest()[:12]}"
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for bad files
        raise ConfigError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} has no 'model_state' dict (not a Resemblyzer checkpoint)")

    net = GE2ENet()
    wanted = net.state_dict().keys()
    missing = sorted(k for k in wanted if k not in state)
    if missing:
        raise ConfigError(f"{path} lacks GE2E parameters: {', '.join(missing)}")
    try:
        # Resemblyzer's checkpoint also holds training-only similarity
        # parameters; take exactly the inference ones, strictly.
        net.load_state_dict({k: state[k] for k in wanted}, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path} does not fit the GE2E architecture: {exc}") from exc

    if threads is not None:
        torch.set_num_threads(threads)
    return GE2EEncoder(net, version, device=device)
