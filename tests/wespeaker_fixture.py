"""Writes a small WeSpeaker-format model folder for tests: `config.yaml` + one `.onnx`.

The layout is what WeSpeaker publishes (wenet-e2e/wespeaker): the training
configuration `config.yaml` (dataset_args.fbank_args, model_args.feat_dim/embed_dim)
beside the runtime model that `wespeaker/bin/export_onnx.py` writes (input "feats"
(B, T, n_mels), output "embs" (B, D), dynamic B and T, opset 14). The network is a
tiny random stand-in for a ResNet: a convolution over the filterbank, temporal mean
and standard deviation pooling (WeSpeaker's TSTP) and a projection. Its embeddings
carry no speaker information; it exists so the loader's real code path runs offline.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import yaml
from torch import nn

EMBED_DIM = 32
N_MELS = 80
MODEL_FILE = "tiny_resnet_stand_in.onnx"


class TinySpeakerNet(nn.Module):
    def __init__(self, feat_dim: int = N_MELS, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.conv = nn.Conv1d(feat_dim, 48, kernel_size=3, padding=1)
        self.proj = nn.Linear(96, embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) normalised fbank -> (B, D) raw embeddings (not normalised, as WeSpeaker's)."""
        h = torch.relu(self.conv(feats.transpose(1, 2)))
        return self.proj(torch.cat([h.mean(dim=-1), h.std(dim=-1)], dim=1))


def make_net(seed: int = 0, feat_dim: int = N_MELS, embed_dim: int = EMBED_DIM) -> TinySpeakerNet:
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = TinySpeakerNet(feat_dim, embed_dim).eval()
    finally:
        torch.random.set_rng_state(state)
    return net


def wespeaker_config(feat_dim: int = N_MELS, embed_dim: int = EMBED_DIM, **fbank: object) -> dict:
    """A config.yaml in WeSpeaker's recipe shape (training settings included, as published)."""
    return {
        "exp_dir": "exp/TinyStandIn-TSTP-emb32-fbank80",
        "num_avg": 10,
        "dataset_args": {
            "resample_rate": 16000,
            "speed_perturb": True,
            "num_frms": 200,
            "aug_prob": 0.6,
            "fbank_args": {"num_mel_bins": feat_dim, "frame_shift": 10, "frame_length": 25, "dither": 1.0}
            | fbank,
            "spec_aug": False,
        },
        "model": "TinyStandIn",
        "model_args": {"feat_dim": feat_dim, "embed_dim": embed_dim, "pooling_func": "TSTP"},
        "projection_args": {"project_type": "arc_margin", "scale": 32.0},
    }


def export(net: nn.Module, path: Path, *, feat_dim: int = N_MELS, input_name: str = "feats") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.ones(1, 200, feat_dim),),
            str(path),
            dynamo=False,
            do_constant_folding=True,
            opset_version=14,
            input_names=[input_name],
            output_names=["embs"],
            dynamic_axes={input_name: {0: "B", 1: "T"}, "embs": {0: "B"}},
        )
    return path


def make_wespeaker_folder(
    path: Path,
    *,
    seed: int = 0,
    feat_dim: int = N_MELS,
    embed_dim: int = EMBED_DIM,
    config: dict | None = None,
    input_name: str = "feats",
) -> Path:
    """Write the folder at `path` (created if needed) and return it. Same seed, same .onnx bytes."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    export(make_net(seed, feat_dim, embed_dim), path / MODEL_FILE, feat_dim=feat_dim, input_name=input_name)
    cfg = config if config is not None else wespeaker_config(feat_dim, embed_dim)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path
