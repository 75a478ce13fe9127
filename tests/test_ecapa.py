"""ECAPA encoder, loaded offline from a small random model folder through load_encoder.

The folder is written by `ecapa_fixture.make_small_ecapa_folder`: same layout and
yaml shape as speechbrain/spkrec-ecapa-voxceleb, tiny random weights, so these
tests check loading, batching and error handling, not recognition accuracy.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from authsvc.errors import ConfigError, InvalidInput
from authsvc.voice.registry import load_encoder
from tests.ecapa_fixture import EMBEDDING_DIM, make_small_ecapa_folder

SR = 16000


def noise_speech(seconds: float, seed: int) -> np.ndarray:
    """Band-limited noise bursts: enough structure for a random model to tell apart."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    tone = np.sin(2 * np.pi * rng.uniform(90, 250) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return (0.2 * tone + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: loading must be offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted during an ECAPA test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_small_ecapa_folder(tmp_path_factory.mktemp("ecapa") / "small")


@pytest.fixture(scope="module")
def encoder(model_dir):
    return load_encoder("ecapa", model_dir=model_dir, threads=2)


def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_embeddings_are_unit_rows_of_the_model_size(encoder):
    emb = encoder.embed_batch([noise_speech(s, i) for i, s in enumerate([0.25, 1.0, 2.3])])
    assert emb.shape == (3, EMBEDDING_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert encoder.encoder_id == "ecapa" and encoder.sample_rate == SR
    assert encoder.embedding_dim == EMBEDDING_DIM


def test_repeated_calls_are_identical(encoder):
    wavs = [noise_speech(1.5, 1), noise_speech(0.7, 2)]
    np.testing.assert_array_equal(encoder.embed_batch(wavs), encoder.embed_batch(wavs))


def test_row_does_not_depend_on_the_rest_of_a_mixed_length_batch(encoder):
    # Two pairs of equal length share a forward pass; the others run alone.
    lengths = [1.0, 2.0, 1.0, 0.5, 2.0, 3.3]
    wavs = [noise_speech(s, seed=i) for i, s in enumerate(lengths)]
    batched = encoder.embed_batch(wavs)
    for i, wav in enumerate(wavs):
        alone = encoder.embed_batch([wav])[0]
        assert float(alone @ batched[i]) >= 0.9999, i
        np.testing.assert_allclose(alone, batched[i], atol=1e-5)


def test_different_inputs_give_different_embeddings(encoder):
    a, b = encoder.embed_batch([noise_speech(1.0, 10), noise_speech(1.0, 11)])
    assert np.abs(a - b).max() > 1e-3


def test_too_short_audio_is_invalid_input(encoder):
    with pytest.raises(InvalidInput) as info:
        encoder.embed_batch([np.zeros(SR // 10, dtype=np.float32)])
    assert info.value.field == "audio"


def test_version_is_a_hash_of_the_embedding_weights(encoder, model_dir, tmp_path):
    digest = hashlib.sha256((model_dir / "embedding_model.ckpt").read_bytes()).hexdigest()
    assert encoder.version == f"speechbrain-ecapa-{digest[:12]}"
    other = make_small_ecapa_folder(tmp_path / "other", seed=1)
    assert load_encoder("ecapa", model_dir=other).version != encoder.version


def test_loading_leaves_the_model_folder_untouched(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}
    load_encoder("ecapa", model_dir=folder)
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}
    assert after == before


def test_loaded_weights_are_the_folders_weights(encoder, model_dir):
    state = torch.load(model_dir / "embedding_model.ckpt", map_location="cpu", weights_only=True)
    loaded = encoder.classifier.mods.embedding_model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)


@pytest.mark.parametrize("missing", ["hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt"])
def test_missing_file_is_a_config_error_naming_it(model_dir, tmp_path, missing):
    folder = copy_of(model_dir, tmp_path)
    (folder / missing).unlink()
    with pytest.raises(ConfigError, match=missing.replace(".", r"\.")):
        load_encoder("ecapa", model_dir=folder)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("embedding_model.ckpt", b"\x00garbage\xff" * 100),
        ("hyperparams.yaml", b"embedding_model: !new:no.such.Module\n  x: [\n"),
        ("mean_var_norm_emb.ckpt", b"not a torch file"),
    ],
    ids=["garbled-weights", "garbled-yaml", "garbled-stats"],
)
def test_garbled_file_is_a_config_error(model_dir, tmp_path, name, content):
    folder = copy_of(model_dir, tmp_path)
    (folder / name).write_bytes(content)
    with pytest.raises(ConfigError):
        load_encoder("ecapa", model_dir=folder)


def test_weights_for_another_architecture_are_a_config_error(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    state = torch.load(folder / "embedding_model.ckpt", map_location="cpu", weights_only=True)
    state["fc.conv.weight"] = torch.zeros(16, *state["fc.conv.weight"].shape[1:])
    torch.save(state, folder / "embedding_model.ckpt")
    with pytest.raises(ConfigError, match=r"size mismatch for fc\.conv\.weight"):
        load_encoder("ecapa", model_dir=folder)


def test_partial_weights_are_a_config_error_not_a_half_random_model(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    state = torch.load(folder / "embedding_model.ckpt", map_location="cpu", weights_only=True)
    dropped = sorted(state)[0]
    del state[dropped]
    torch.save(state, folder / "embedding_model.ckpt")
    with pytest.raises(ConfigError, match="lacks 1 embedding_model parameters"):
        load_encoder("ecapa", model_dir=folder)


def test_no_folder_offline_is_a_config_error_pointing_to_model_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(ConfigError, match="model_dir"):
        load_encoder("ecapa")


def test_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder("ecapa", model_dir=tmp_path / "nowhere")
