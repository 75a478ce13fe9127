"""Sample-rate conversion with a polyphase filter (scipy), exact for integer ratios like 8k->16k."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly


def resample(wav: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    if src_rate == dst_rate:
        return wav.astype(np.float32, copy=False)
    g = gcd(src_rate, dst_rate)
    return resample_poly(wav, dst_rate // g, src_rate // g).astype(np.float32)
