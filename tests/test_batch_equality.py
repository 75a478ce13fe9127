"""An utterance's embedding must not depend on what else is in its batch (issue 5).

Both encoders, real speech cropped to many different lengths (so a batch mixes
lengths the way live sessions do), compared with the same utterance embedded
alone. GE2E uses its real weights; ECAPA the small random model of
tests/ecapa_fixture.py (same architecture and code path as the real one).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from authsvc.errors import ConfigError
from authsvc.metrics import Metrics
from authsvc.voice.batcher import BatchConfig, MicroBatcher
from authsvc.voice.device import HALF_MIN_COSINE, enable_half, half_agreement
from authsvc.voice.registry import load_encoder
from tests.ecapa_fixture import make_small_ecapa_folder

SR = 16000
MIN_COSINE = 0.9999
# Distinct lengths from the encoders' floor to whole utterances (None), plus a
# repeated length so the equal-length path is covered too.
CROP_SECONDS = [0.25, 0.8, 1.0, 1.37, 2.0, 2.0, 2.9, 3.3, 4.1, 5.0, None]


@pytest.fixture(scope="module")
def mixed(speech) -> list[np.ndarray]:
    utterances = [u for spk in sorted(speech) for u in speech[spk]]
    out = []
    for i, seconds in enumerate(CROP_SECONDS):
        u = utterances[i % len(utterances)]
        out.append(u if seconds is None else u[: int(seconds * SR)])
    assert len({len(w) for w in out}) >= len(out) - 1
    return out


@pytest.fixture(scope="module")
def ecapa(tmp_path_factory):
    return load_encoder("ecapa", model_dir=make_small_ecapa_folder(tmp_path_factory.mktemp("ecapa") / "m"))


def alone(encoder, wavs: list[np.ndarray]) -> np.ndarray:
    return np.stack([encoder.embed_batch([w])[0] for w in wavs])


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def test_ge2e_row_is_the_same_alone_and_in_a_mixed_batch(ge2e, mixed):
    assert min_cosine(ge2e.embed_batch(mixed), alone(ge2e, mixed)) >= MIN_COSINE


@pytest.mark.parametrize("max_padding", [0.25, float("inf")], ids=["sub-batched", "one-padded-batch"])
def test_ecapa_row_is_the_same_alone_and_in_a_mixed_batch(ecapa, mixed, max_padding, monkeypatch):
    # inf puts every length, 0.25 s next to a whole utterance, into one padded forward pass.
    monkeypatch.setattr(ecapa, "max_padding", max_padding)
    batched = ecapa.embed_batch(mixed)
    reference = alone(ecapa, mixed)
    assert min_cosine(batched, reference) >= MIN_COSINE
    np.testing.assert_allclose(batched, reference, atol=1e-5)


def test_ecapa_alone_is_speechbrains_own_embedding(ecapa, mixed):
    """Batching must not redefine the embedding: alone, it is `encode_batch` of the utterance."""
    for w in mixed[:4]:
        with torch.inference_mode():
            ref = ecapa.classifier.encode_batch(torch.from_numpy(w)[None]).reshape(-1)
        ref = (ref / ref.norm()).numpy()
        np.testing.assert_allclose(ecapa.embed_batch([w])[0], ref, atol=1e-6)


def test_naive_zero_padding_would_fail_the_equality_check(ecapa, mixed):
    """Guards the test data: SpeechBrain's own padded batch (relative lengths) does move rows."""
    longest = max(len(w) for w in mixed)
    padded = torch.from_numpy(np.stack([np.pad(w, (0, longest - len(w))) for w in mixed]))
    lengths = torch.tensor([len(w) / longest for w in mixed])
    with torch.inference_mode():
        naive = ecapa.classifier.encode_batch(padded, lengths).reshape(len(mixed), -1)
    naive = torch.nn.functional.normalize(naive, dim=1).numpy()
    reference = alone(ecapa, mixed)
    assert np.abs(naive - reference).max() > 1e-4
    assert np.abs(ecapa.embed_batch(mixed) - reference).max() < 1e-5


@pytest.mark.parametrize("max_padding", [0.0, 0.25])
def test_ecapa_sub_batches_cover_every_item_and_bound_padding(ecapa, max_padding, monkeypatch):
    monkeypatch.setattr(ecapa, "max_padding", max_padding)
    rng = np.random.default_rng(3)
    frames = [int(n) for n in rng.integers(26, 400, size=300)]
    groups = ecapa.sub_batches(frames)
    assert sorted(i for g in groups for i in g) == list(range(len(frames)))
    for group in groups:
        lengths = [frames[i] for i in group]
        assert len(group) <= ecapa.max_batch
        tail = ecapa._max_pad if len(set(lengths)) > 1 else 0
        assert len(group) * (max(lengths) + tail) <= (1 + max_padding) * sum(lengths)
    if max_padding == 0.0:  # only equal lengths share a pass, and they all do
        assert all(len({frames[i] for i in g}) == 1 for g in groups)
        assert len(groups) == len(set(frames))
    else:
        assert len(groups) < len(set(frames))


def test_ecapa_pads_nothing_on_the_cpu(ecapa):
    # Measured: on the CPU a padded ECAPA batch is slower than its items one by one.
    assert ecapa.device.type == "cpu" and ecapa.max_padding == 0.0


@pytest.mark.parametrize("name", ["ge2e", "ecapa"])
async def test_batcher_delivers_each_caller_its_alone_embedding(name, ge2e, ecapa, mixed):
    encoder = {"ge2e": ge2e, "ecapa": ecapa}[name]
    batcher = MicroBatcher(encoder, BatchConfig(max_batch=16, max_wait_ms=50), Metrics(), warm_up=False)
    try:
        results = await asyncio.wait_for(asyncio.gather(*(batcher.embed(w) for w in mixed)), 120)
    finally:
        batcher.close()
    assert min_cosine(np.stack(results), alone(encoder, mixed)) >= MIN_COSINE
    # They really were batched: fewer encoder calls than requests.
    calls = batcher.metrics.registry.get_sample_value("authsvc_embed_batch_size_count", {"encoder": name})
    assert calls is not None and calls < len(mixed)


@pytest.mark.parametrize("name", ["ge2e", "ecapa"])
def test_float16_stays_within_the_stated_tolerance_emulated_on_cpu(name, ge2e, ecapa, mixed):
    encoder = {"ge2e": ge2e, "ecapa": ecapa}[name]
    assert half_agreement(encoder, mixed) >= HALF_MIN_COSINE
    assert encoder.compute_dtype == torch.float32  # the check leaves the encoder as it was


def test_half_precision_is_refused_on_the_cpu(ge2e):
    with pytest.raises(ConfigError, match="CUDA"):
        enable_half(ge2e)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["ge2e", "ecapa"])
def test_float16_on_cuda_stays_within_tolerance_of_float32_on_cpu(name, ecapa, mixed, tmp_path):
    cpu = load_encoder("ge2e") if name == "ge2e" else ecapa
    if name == "ge2e":
        gpu = load_encoder("ge2e", device="cuda")
    else:
        gpu = load_encoder("ecapa", model_dir=make_small_ecapa_folder(tmp_path / "m"), device="cuda")
    assert enable_half(gpu) >= HALF_MIN_COSINE
    assert min_cosine(gpu.embed_batch(mixed), cpu.embed_batch(mixed)) >= HALF_MIN_COSINE
