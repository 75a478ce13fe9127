"""Load a speaker encoder by name.

The encoder modules are imported lazily so that choosing "ge2e" never pays
for importing SpeechBrain, and importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from authsvc.errors import ConfigError
from authsvc.voice.encoder import SpeakerEncoder

#: "ge2e-onnx": the GE2E weights run in ONNX Runtime (same embeddings, id and templates as "ge2e");
#: "wespeaker": a WeSpeaker-format ONNX model folder (models/onnx.md).
KNOWN_ENCODERS = ("ge2e", "ecapa", "ge2e-onnx", "wespeaker")
#: Encoders whose devices ONNX Runtime, not torch, has to provide.
ONNX_ENCODERS = ("ge2e-onnx", "wespeaker")


def load_encoder(
    name: str,
    *,
    model_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> SpeakerEncoder:
    """Return the encoder `name` (one of `KNOWN_ENCODERS`) ready to embed.

    `model_dir` overrides where the weights come from (see models/*.md; "wespeaker"
    needs one); `threads` sets torch's intra-op thread count for the whole process,
    and ONNX Runtime's for the ONNX encoders' session.
    Unusable names, devices or model folders raise `ConfigError`.
    """
    if name not in KNOWN_ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; known encoders: {', '.join(KNOWN_ENCODERS)}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    if name in ONNX_ENCODERS:
        from authsvc.voice import onnx_encoder

        load = onnx_encoder.load_ge2e_onnx if name == "ge2e-onnx" else onnx_encoder.load_wespeaker
        return load(model_dir, device=device, threads=threads)
    _check_device(device)

    if name == "ge2e":
        from authsvc.voice.ge2e import load_ge2e

        return load_ge2e(model_dir, device=device, threads=threads)
    from authsvc.voice.ecapa import load_ecapa

    return load_ecapa(model_dir, device=device, threads=threads)


def _check_device(device: str) -> None:
    """Refuse a device torch cannot use now, rather than failing on first embed."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid torch device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported (use 'cpu' or 'cuda[:N]')")
