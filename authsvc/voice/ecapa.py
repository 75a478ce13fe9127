"""ECAPA-TDNN speaker encoder through SpeechBrain's `EncoderClassifier`.

A model folder in the `speechbrain/spkrec-ecapa-voxceleb` layout is
self-describing (hyperparams.yaml builds the modules, the .ckpt files hold the
weights), so any ECAPA size loads through the same code, including the small
random one the tests write.

Batch independence: SpeechBrain's ECAPA is not independent of padding. Its
Fbank, sentence normalisation and "same" convolutions (reflect padding at the
tensor's end) see the zeros appended to shorter items even when relative
lengths are passed (a 1 s utterance padded to 2 s moves by up to 0.016 per
dimension with the real weights). `embed_batch` batches utterances of
different lengths anyway, with the result each would get alone:

- features and their sentence normalisation are computed per utterance
  (cheap next to the TDNN), so no frame or statistic sees another's audio;
- frames are padded to a common length, and before every convolution wider
  than one frame a forward pre-hook overwrites each item's padded tail with
  the reflection of its own last frames: exactly the values the convolution's
  reflect padding would have supplied had the item been alone;
- SE and attentive-pooling statistics get lengths that mask the tail.

Positions past an item's end are otherwise never read by anything that feeds
its valid frames (all other layers work frame by frame), so the embedding
matches the alone one to float rounding. Utterances are sorted by length and
cut into sub-batches whose padding stays under `max_padding`, so the masking
costs little compute. Measured alternatives are in bench/results/batching.json.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from authsvc.errors import ConfigError
from authsvc.voice.device import to_device
from authsvc.voice.encoder import MIN_AUDIO_SECONDS, check_wavs

log = logging.getLogger(__name__)

HUB_ID = "speechbrain/spkrec-ecapa-voxceleb"
SAMPLE_RATE = 16000
HPARAMS_FILE = "hyperparams.yaml"
EMBEDDING_FILE = "embedding_model.ckpt"
REQUIRED_FILES = (HPARAMS_FILE, EMBEDDING_FILE)
VERSION_PREFIX = "speechbrain-ecapa"
# Files the yaml names as "<pretrained_path>/file" (the hub layout).
_REF_FILE = re.compile(r"<pretrained_path>/([^\s'\"#]+)")
_HAS_PRETRAINED_PATH = re.compile(r"^pretrained_path\s*:", re.MULTILINE)


class _TailState(threading.local):
    """Per-thread description of the batch now in the model, read by the conv hooks.

    Thread-local so two threads may run the same encoder (the batcher's worker
    and, say, a CLI call) without one seeing the other's lengths.
    """

    # reflect pad width -> (batch index, tail position, mirrored source position)
    tails: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None


def _reflect_pad(conv: torch.nn.Module) -> int:
    """Frames a SpeechBrain "same"/reflect Conv1d pads on each side (0 when it does not)."""
    if getattr(conv, "padding", None) != "same" or getattr(conv, "padding_mode", None) != "reflect":
        return 0
    if getattr(conv, "stride", 1) != 1:
        return 0
    return int(conv.dilation) * (int(conv.kernel_size) - 1) // 2


class EcapaEncoder:
    """`SpeakerEncoder` over a loaded SpeechBrain `EncoderClassifier`."""

    encoder_id = "ecapa"
    sample_rate = SAMPLE_RATE
    min_samples = int(MIN_AUDIO_SECONDS * SAMPLE_RATE)
    #: Most utterances per forward pass; bounds memory only, results do not
    #: depend on it beyond float rounding.
    max_batch = 32
    #: Largest share of padded frames a sub-batch may carry (relative to its
    #: real frames). Padding costs compute but, thanks to the tail hooks, never
    #: changes a result. Set per device in __init__: on the CPU, batching buys
    #: ECAPA no throughput (its layers are already large matrix products) so
    #: any padding is a loss, measured in bench/results/batching.json; on CUDA,
    #: where a batch runs in about the time of one item, 25 % is cheap.
    max_padding = 0.25

    def __init__(self, classifier: Any, version: str, embedding_dim: int) -> None:
        self.classifier = classifier
        self.version = version
        self.embedding_dim = embedding_dim
        self.device = torch.device(getattr(classifier, "device", "cpu"))
        if self.device.type == "cpu":
            self.max_padding = 0.0
        #: Autocast dtype of the TDNN (float16 on CUDA, see
        #: `authsvc.voice.device.enable_half`). Autocast rather than converting
        #: the weights: features, length masks and pooling statistics stay
        #: float32, and a relative length like 0.9994 keeps its precision.
        self.compute_dtype = torch.float32
        self._state = _TailState()
        self._pad_widths: set[int] = set()
        model = classifier.mods.embedding_model
        for module in model.modules():
            width = _reflect_pad(module)
            if width > 0:
                module.register_forward_pre_hook(self._make_tail_hook(width))
                self._pad_widths.add(width)
        self._max_pad = max(self._pad_widths, default=0)

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run the TDNN's convolutions and matmuls in `dtype` (float16 on CUDA)."""
        self.compute_dtype = dtype

    def _make_tail_hook(self, width: int) -> Any:
        state = self._state

        def refill_tail(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            # Writes in place: tail positions are read by nothing but the
            # convolutions, each of which gets them refilled first (see module doc).
            if state.tails is None:
                return
            b, dst, src = state.tails[width]
            x = args[0]  # (B, C, T): ECAPA's convs skip the transpose
            x[b, :, dst] = x[b, :, src]

        return refill_tail

    def _tail_indices(self, frames: list[int], total: int) -> dict[int, tuple[torch.Tensor, ...]]:
        """For each pad width p: positions n..n+p-1 of each item and their mirror n-2-j."""
        out: dict[int, tuple[torch.Tensor, ...]] = {}
        for width in self._pad_widths:
            b: list[int] = []
            dst: list[int] = []
            src: list[int] = []
            for i, n in enumerate(frames):
                for j in range(min(width, total - n)):
                    b.append(i)
                    dst.append(n + j)
                    src.append(n - 2 - j)
            out[width] = tuple(torch.tensor(v, dtype=torch.long, device=self.device) for v in (b, dst, src))
        return out

    def _features(self, wav: np.ndarray) -> torch.Tensor:
        """(n_samples,) -> (frames, n_mels), computed alone exactly as `encode_batch` does."""
        x = to_device(wav, self.device)[None]
        mods = self.classifier.mods
        feats = mods.compute_features(x)
        return mods.mean_var_norm(feats, torch.ones(1, device=self.device))[0]

    def _embed_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Per-item features -> (B, D) unit-norm embeddings, each as if computed alone."""
        frames = [f.shape[0] for f in feats]
        longest = max(frames)
        model = self.classifier.mods.embedding_model
        autocast = torch.autocast(
            self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32
        )
        if min(frames) == longest:
            with autocast:
                emb = model(torch.stack(feats), torch.ones(len(feats), device=self.device))
        else:
            # Room for every item's reflected tail, the longest one's included.
            total = longest + self._max_pad
            stacked = torch.zeros(len(feats), total, feats[0].shape[1], device=self.device)
            for i, f in enumerate(feats):
                stacked[i, : f.shape[0]] = f
            # Half a frame short of each end, so rounding in SpeechBrain's
            # relative-length masks can neither drop a real frame nor admit padding.
            lengths = (torch.tensor(frames, dtype=torch.float32, device=self.device) - 0.5) / total
            self._state.tails = self._tail_indices(frames, total)
            try:
                with autocast:
                    emb = model(stacked, lengths)
            finally:
                self._state.tails = None
        emb = emb.reshape(len(feats), -1).float()
        return emb / torch.norm(emb, dim=1, keepdim=True).clamp_min(1e-12)

    @torch.inference_mode()
    def _embed_equal_lengths(self, stacked: np.ndarray) -> torch.Tensor:
        """(B, T) equal-length waveforms -> (B, D) unit-norm embeddings, no padding."""
        return self._embed_features([self._features(row) for row in stacked])

    def sub_batches(self, frames: Sequence[int]) -> list[list[int]]:
        """Indices grouped by similar length: sorted, then cut where padding would exceed the budget."""
        order = sorted(range(len(frames)), key=lambda i: frames[i])
        groups: list[list[int]] = []
        current: list[int] = []
        real = 0
        for i in order:
            n = frames[i]
            # n is the largest so far (sorted), so it sets the padded length;
            # equal lengths need no tail room.
            tail = self._max_pad if current and frames[current[0]] != n else 0
            padded = (len(current) + 1) * (n + tail)
            if current and (len(current) >= self.max_batch or padded > (1 + self.max_padding) * (real + n)):
                groups.append(current)
                current, real = [], 0
            current.append(i)
            real += n
        if current:
            groups.append(current)
        return groups

    @torch.inference_mode()
    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """Embed utterances of any lengths; a row never depends on the other rows (module doc)."""
        arrays = check_wavs(wavs, min_samples=self.min_samples)
        out = np.zeros((len(arrays), self.embedding_dim), dtype=np.float32)
        if not arrays:
            return out
        feats = [self._features(arr) for arr in arrays]
        for group in self.sub_batches([f.shape[0] for f in feats]):
            out[group] = self._embed_features([feats[i] for i in group]).cpu().numpy()
        return out


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _check_local_folder(folder: Path) -> str:
    """Fail early, naming the file, for folders SpeechBrain would half-load."""
    if not folder.is_dir():
        raise ConfigError(f"ECAPA model folder {folder} does not exist or is not a folder")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise ConfigError(f"ECAPA model folder {folder} is missing {name}")
    try:
        text = (folder / HPARAMS_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {folder / HPARAMS_FILE}: {exc}") from exc
    for name in _REF_FILE.findall(text):
        if not (folder / name).is_file():
            raise ConfigError(f"ECAPA model folder {folder} is missing {name} (named in {HPARAMS_FILE})")
    return text


def load_ecapa(
    model_dir: str | Path | None = None, *, device: str = "cpu", threads: int | None = None
) -> EcapaEncoder:
    """Load ECAPA from a local folder (offline) or, with no folder, from the hub.

    Local folders never touch the network: `pretrained_path` in the yaml (the
    hub id in the published file) is overridden with the folder and network
    fetching is disabled. SpeechBrain's collection directory is a temporary
    folder of symlinks that is deleted once the weights are in memory, so the
    model folder may be read-only and nothing is written next to it or into
    the repository. The hub path honours HF_HUB_OFFLINE and HF_HUB_CACHE
    (read at call time), so an offline machine with a warm cache still works.
    """
    from speechbrain.inference.classifiers import EncoderClassifier
    from speechbrain.utils.fetching import FetchConfig, LocalStrategy

    overrides: dict[str, str] = {}
    if model_dir is not None:
        folder = Path(model_dir).expanduser().resolve()
        text = _check_local_folder(folder)
        if _HAS_PRETRAINED_PATH.search(text):
            overrides["pretrained_path"] = str(folder)
        source = str(folder)
        fetch_config = FetchConfig(allow_network=False, overwrite=True)
        where = f"model folder {folder}"
    else:
        source = HUB_ID
        fetch_config = FetchConfig(
            allow_network=not _env_flag("HF_HUB_OFFLINE"),
            huggingface_cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
        where = f"hub model {HUB_ID}"

    with tempfile.TemporaryDirectory(prefix="authsvc-ecapa-") as savedir:
        try:
            classifier = EncoderClassifier.from_hparams(
                source=source,
                savedir=savedir,
                overrides=overrides,
                run_opts={"device": device},
                local_strategy=LocalStrategy.SYMLINK,
                fetch_config=fetch_config,
            )
        except Exception as exc:  # yaml, fetch, pickle and shape errors all mean "unusable"
            if model_dir is None:
                raise ConfigError(
                    f"could not load {HUB_ID} from the Hugging Face hub ({type(exc).__name__}: "
                    f"{exc}). Offline machines need a local copy: download the repository's "
                    "hyperparams.yaml, embedding_model.ckpt, mean_var_norm_emb.ckpt, "
                    "classifier.ckpt and label_encoder.txt into a folder (see models/ecapa.md) "
                    "and pass it as model_dir"
                ) from exc
            raise ConfigError(f"cannot load ECAPA from {where}: {type(exc).__name__}: {exc}") from exc
        weights = _embedding_weights_path(classifier, savedir, where)
        _check_weights_cover_model(classifier, weights)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]

    if threads is not None:
        torch.set_num_threads(threads)
    encoder = EcapaEncoder(classifier, f"{VERSION_PREFIX}-{digest}", embedding_dim=0)
    encoder.embedding_dim = _probe_dim(encoder, where)
    return encoder


def _embedding_weights_path(classifier: Any, savedir: str, where: str) -> Path:
    """The embedding_model.ckpt SpeechBrain actually loaded (symlinks resolved)."""
    pretrainer = getattr(classifier.hparams, "pretrainer", None)
    paths = getattr(pretrainer, "paths", {}) or {}
    loaded = paths.get("embedding_model")
    path = Path(loaded) if loaded else Path(savedir) / EMBEDDING_FILE
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"{where}: no embedding_model weights were loaded")
    return path


def _check_weights_cover_model(classifier: Any, weights: Path) -> None:
    """SpeechBrain loads checkpoints non-strictly; a partial file would give a
    half-random model that still produces plausible-looking embeddings."""
    from speechbrain.utils.checkpoints import torch_patched_state_dict_load

    model = getattr(classifier.mods, "embedding_model", None)
    if model is None:
        raise ConfigError(f"{HPARAMS_FILE} defines no 'embedding_model' module")
    state = torch_patched_state_dict_load(str(weights), "cpu")
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ConfigError(f"{weights.name} lacks {len(missing)} embedding_model parameters: {shown}")
    unexpected = sorted(set(state) - expected)
    if unexpected:
        log.warning("%s has %d parameters the model does not use", weights.name, len(unexpected))


def _probe_dim(encoder: EcapaEncoder, where: str) -> int:
    """Run one short seeded signal through the model: learns the embedding size
    and makes a folder whose yaml and weights disagree fail at load, not on a call."""
    probe = np.random.default_rng(0).uniform(-0.1, 0.1, encoder.min_samples * 2).astype(np.float32)
    try:
        return int(encoder._embed_equal_lengths(probe[None, :]).shape[1])
    except Exception as exc:
        raise ConfigError(f"{where} loads but cannot embed: {type(exc).__name__}: {exc}") from exc
