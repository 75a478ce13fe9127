"""AASIST (Jung et al., 2022): a spectro-temporal graph attention countermeasure against
synthetic and converted speech, inference only, for the published clovaai weights.

This is the project's own module: the layer and parameter names follow the published
state dict (clovaai/aasist, MIT) so its weights load strictly, and two behaviours of the
published model are kept because the weights were trained with them: the first
residual block's pre-activation is computed and discarded, and the learnt master
nodes are shared across the batch. Dropout and frequency masking are training-only and
left out.

Input: 16 kHz waveforms in windows of `nb_samp` samples (64,600, about 4 s); shorter
audio is repeated to fill a window, as the reference does. Output per window: two
logits, [spoof, bona fide].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual alias


def _sinc_filters(channels: int, kernel: int, rate: int = 16000) -> torch.Tensor:
    """Fixed mel-spaced band-pass sinc filters (AASIST does not learn them)."""
    if kernel % 2 == 0:
        kernel += 1
    hz = rate / 2 * np.linspace(0, 1, 257)
    mel = 2595 * np.log10(1 + hz / 700)
    edges = 700 * (10 ** (np.linspace(mel.min(), mel.max(), channels + 1) / 2595) - 1)
    t = np.arange(-(kernel - 1) / 2, (kernel - 1) / 2 + 1)
    bank = np.empty((channels, kernel), np.float32)
    for i in range(channels):
        lo, hi = edges[i], edges[i + 1]
        ideal = 2 * hi / rate * np.sinc(2 * hi * t / rate) - 2 * lo / rate * np.sinc(2 * lo * t / rate)
        bank[i] = np.hamming(kernel) * ideal
    return torch.from_numpy(bank).unsqueeze(1)


class _GraphAttention(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(torch.empty(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.temp = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = x.unsqueeze(2) * x.unsqueeze(1)  # (B, N, N, D)
        att = torch.tanh(self.att_proj(pairs)) @ self.att_weight
        att = F.softmax(att / self.temp, dim=-2).squeeze(-1)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(self.bn(out.reshape(-1, out.shape[-1])).reshape(out.shape))


class _HeteroGraphAttention(nn.Module):
    """Attention over spectral and temporal nodes together, with a master node."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight22 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight12 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weightM = nn.Parameter(torch.empty(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.temp = temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor):
        n1 = x1.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        # The master node attends to every node.
        m_att = F.softmax((torch.tanh(self.att_projM(x * master)) @ self.att_weightM) / self.temp, dim=-2)
        master = self.proj_with_attM(m_att.squeeze(-1).unsqueeze(1) @ x) + self.proj_without_attM(master)
        # Node attention, with its own weights within and across the two node types.
        proj = torch.tanh(self.att_proj(x.unsqueeze(2) * x.unsqueeze(1)))
        att = torch.empty((*proj.shape[:3], 1), dtype=x.dtype, device=x.device)
        att[:, :n1, :n1] = proj[:, :n1, :n1] @ self.att_weight11
        att[:, n1:, n1:] = proj[:, n1:, n1:] @ self.att_weight22
        att[:, :n1, n1:] = proj[:, :n1, n1:] @ self.att_weight12
        att[:, n1:, :n1] = proj[:, n1:, :n1] @ self.att_weight12
        att = F.softmax(att / self.temp, dim=-2).squeeze(-1)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        out = F.selu(self.bn(out.reshape(-1, out.shape[-1])).reshape(out.shape))
        return out[:, :n1], out[:, n1:], master


class _GraphPool(nn.Module):
    def __init__(self, ratio: float, in_dim: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(h))
        keep = max(int(h.shape[1] * self.ratio), 1)
        idx = torch.topk(scores, keep, dim=1).indices.expand(-1, -1, h.shape[-1])
        return torch.gather(h * scores, 1, idx)


class _Residual(nn.Module):
    def __init__(self, filts: list[int], first: bool = False) -> None:
        super().__init__()
        self.first = first
        if not first:
            self.bn1 = nn.BatchNorm2d(filts[0])
        self.conv1 = nn.Conv2d(filts[0], filts[1], kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(filts[1])
        self.conv2 = nn.Conv2d(filts[1], filts[1], kernel_size=(2, 3), padding=(0, 1))
        self.downsample = filts[0] != filts[1]
        if self.downsample:
            self.conv_downsample = nn.Conv2d(filts[0], filts[1], kernel_size=(1, 3), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As published (and trained): conv1 sees the block's input, not its pre-activation.
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))
        identity = self.conv_downsample(x) if self.downsample else x
        return F.max_pool2d(out + identity, (1, 3))


class AASIST(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        filts, gat, pools, temps = (
            config["filts"],
            config["gat_dims"],
            config["pool_ratios"],
            config["temperatures"],
        )
        self.nb_samp = int(config.get("nb_samp", 64600))
        self.register_buffer("sinc", _sinc_filters(filts[0], config["first_conv"]), persistent=False)
        self.first_bn = nn.BatchNorm2d(1)
        blocks = [_Residual(filts[1], first=True), _Residual(filts[2]), _Residual(filts[3])]
        blocks += [_Residual(filts[4]) for _ in range(3)]
        self.encoder = nn.Sequential(*(nn.Sequential(b) for b in blocks))
        last = filts[-1][-1]
        self.pos_S = nn.Parameter(torch.zeros(1, 23, last))
        self.master1 = nn.Parameter(torch.zeros(1, 1, gat[0]))
        self.master2 = nn.Parameter(torch.zeros(1, 1, gat[0]))
        self.GAT_layer_S = _GraphAttention(last, gat[0], temps[0])
        self.GAT_layer_T = _GraphAttention(last, gat[0], temps[1])
        self.HtrgGAT_layer_ST11 = _HeteroGraphAttention(gat[0], gat[1], temps[2])
        self.HtrgGAT_layer_ST12 = _HeteroGraphAttention(gat[1], gat[1], temps[2])
        self.HtrgGAT_layer_ST21 = _HeteroGraphAttention(gat[0], gat[1], temps[2])
        self.HtrgGAT_layer_ST22 = _HeteroGraphAttention(gat[1], gat[1], temps[2])
        self.pool_S = _GraphPool(pools[0], gat[0])
        self.pool_T = _GraphPool(pools[1], gat[0])
        self.pool_hS1 = _GraphPool(pools[2], gat[1])
        self.pool_hT1 = _GraphPool(pools[2], gat[1])
        self.pool_hS2 = _GraphPool(pools[2], gat[1])
        self.pool_hT2 = _GraphPool(pools[2], gat[1])
        self.out_layer = nn.Linear(5 * gat[1], 2)

    def _branch(self, first, second, master, t, s):
        t1, s1, m1 = first(t, s, master)
        s1, t1 = getattr(self, second[0])(s1), getattr(self, second[1])(t1)
        t_aug, s_aug, m_aug = second[2](t1, s1, m1)
        return t1 + t_aug, s1 + s_aug, m1 + m_aug

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, nb_samp) -> (B, 2) logits [spoof, bona fide]."""
        x = F.conv1d(wav.unsqueeze(1), self.sinc).unsqueeze(1)
        x = F.selu(self.first_bn(F.max_pool2d(torch.abs(x), (3, 3))))
        e = self.encoder(x)
        e_s = torch.amax(torch.abs(e), dim=3).transpose(1, 2) + self.pos_S
        e_t = torch.amax(torch.abs(e), dim=2).transpose(1, 2)
        out_s = self.pool_S(self.GAT_layer_S(e_s))
        out_t = self.pool_T(self.GAT_layer_T(e_t))
        t1, s1, m1 = self._branch(
            self.HtrgGAT_layer_ST11,
            ("pool_hS1", "pool_hT1", self.HtrgGAT_layer_ST12),
            self.master1,
            out_t,
            out_s,
        )
        t2, s2, m2 = self._branch(
            self.HtrgGAT_layer_ST21,
            ("pool_hS2", "pool_hT2", self.HtrgGAT_layer_ST22),
            self.master2,
            out_t,
            out_s,
        )
        out_t, out_s, master = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)
        hidden = torch.cat(
            [
                torch.amax(torch.abs(out_t), dim=1),
                out_t.mean(dim=1),
                torch.amax(torch.abs(out_s), dim=1),
                out_s.mean(dim=1),
                master.squeeze(1),
            ],
            dim=1,
        )
        return self.out_layer(hidden)


def windows(wav: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping windows of `size` samples; the tail, and audio shorter than a window, are
    filled by repeating the audio (the reference's padding)."""
    if wav.size == 0:
        raise ValueError("no audio")
    count = max(1, math.ceil(wav.size / size - 0.25))  # a tail under a quarter window is dropped
    reps = math.ceil(count * size / wav.size)
    tiled = np.tile(wav, reps)[: count * size]
    return tiled.reshape(count, size)
