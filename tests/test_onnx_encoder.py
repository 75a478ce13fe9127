"""ONNX Runtime encoders: GE2E on ONNX Runtime is the torch GE2E, and WeSpeaker model folders load,
embed with WeSpeaker's own front end, and are refused with a clear ConfigError when broken.

The equality test needs the shared LibriSpeech clips; the WeSpeaker tests write a small model
folder in the published layout themselves (tests/wespeaker_fixture.py), so nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import yaml

from authsvc.errors import ConfigError, InvalidInput
from authsvc.scoring.calibration import load_calibration
from authsvc.voice import ge2e, onnx_encoder
from authsvc.voice.batcher import BatchConfig, MicroBatcher
from authsvc.voice.registry import KNOWN_ENCODERS, load_encoder
from tests.conftest import LIBRISPEECH
from tests.test_ge2e import synthetic_voice
from tests.wespeaker_fixture import (
    EMBED_DIM,
    MODEL_FILE,
    export,
    make_net,
    make_wespeaker_folder,
    wespeaker_config,
)

SR = 16000
needs_speech = pytest.mark.skipif(not LIBRISPEECH.is_dir(), reason=f"no shared speech at {LIBRISPEECH}")


@pytest.fixture(scope="module")
def torch_ge2e():
    return load_encoder("ge2e", threads=2)


@pytest.fixture(scope="module")
def onnx_ge2e():
    return load_encoder("ge2e-onnx", threads=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_wespeaker_folder(tmp_path_factory.mktemp("wespeaker") / "tiny")


@pytest.fixture(scope="module")
def wespeaker(model_dir):
    return load_encoder("wespeaker", model_dir=model_dir, threads=1)


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------- GE2E on ONNX Runtime


@needs_speech
def test_onnx_ge2e_equals_torch_ge2e_on_recorded_speech_within_cosine_0_9999(torch_ge2e, onnx_ge2e):
    files = sorted(LIBRISPEECH.glob("*/*.flac"))
    assert len(files) >= 50
    wavs = [sf.read(f, dtype="float32")[0] for f in files]
    # Whole utterances, plus the short looks a live call makes (0.25 s floor, 1 s, 3 s).
    wavs += [w[: int(s * SR)] for w, s in zip(wavs[:30], [0.25, 1.0, 3.0] * 10, strict=True)]
    ours, reference = onnx_ge2e.embed_batch(wavs), torch_ge2e.embed_batch(wavs)
    cosines = np.sum(ours * reference, axis=1)
    assert cosines.min() >= onnx_encoder.MIN_COSINE, f"lowest cosine {cosines.min():.7f}"
    # Templates made by one are scored by the other: the score moves by rounding only.
    scores_torch = reference[:10] @ reference[10:].T
    scores_mixed = reference[:10] @ ours[10:].T
    assert np.abs(scores_torch - scores_mixed).max() < 1e-4


def test_onnx_ge2e_claims_ge2e_id_and_version_and_its_calibration(torch_ge2e, onnx_ge2e):
    assert (onnx_ge2e.encoder_id, onnx_ge2e.version) == (torch_ge2e.encoder_id, torch_ge2e.version)
    assert onnx_ge2e.embedding_dim == 256 and onnx_ge2e.sample_rate == SR
    calibration = load_calibration(onnx_ge2e.encoder_id, onnx_ge2e.version)
    assert calibration.encoder_version == torch_ge2e.version


def test_onnx_ge2e_rows_do_not_depend_on_the_batch_and_match_torch_on_synthetic_voices(torch_ge2e, onnx_ge2e):
    wavs = [
        synthetic_voice(s, f0=f0, seed=i) for i, (s, f0) in enumerate([(0.3, 100), (3.1, 180), (12.0, 140)])
    ]
    batched = onnx_ge2e.embed_batch(wavs)
    for i, wav in enumerate(wavs):
        np.testing.assert_allclose(onnx_ge2e.embed_batch([wav])[0], batched[i], atol=1e-5)
    assert onnx_encoder.agreement(batched, torch_ge2e.embed_batch(wavs)) >= onnx_encoder.MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert onnx_ge2e.embed_batch([]).shape == (0, 256)


def test_onnx_ge2e_refuses_bad_audio_like_torch(onnx_ge2e):
    with pytest.raises(InvalidInput, match="shorter than the minimum 4000"):
        onnx_ge2e.embed_batch([np.zeros(3999, dtype=np.float32)])


def test_an_export_that_drifts_from_torch_is_refused_at_load(monkeypatch):
    real_export = onnx_encoder.export_ge2e

    def drifting_export(net):
        changed = ge2e.GE2ENet()
        changed.load_state_dict(net.state_dict())
        with torch.no_grad():
            changed.linear.bias += 0.05
        return real_export(changed)

    monkeypatch.setattr(onnx_encoder, "export_ge2e", drifting_export)
    with pytest.raises(ConfigError, match=r"beyond 0\.9999"):
        load_encoder("ge2e-onnx")


def test_onnx_ge2e_follows_the_weight_file_of_a_model_folder(tmp_path, torch_ge2e):
    checkpoint = torch.load(ge2e.resemblyzer_weights_path(), map_location="cpu", weights_only=True)
    checkpoint["model_state"]["linear.bias"] = checkpoint["model_state"]["linear.bias"] + 0.05
    torch.save(checkpoint, tmp_path / "pretrained.pt")
    changed = load_encoder("ge2e-onnx", model_dir=tmp_path)
    assert changed.version != torch_ge2e.version
    assert changed.version == load_encoder("ge2e", model_dir=tmp_path).version


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda"])
def test_unusable_onnx_devices_are_config_errors(device, model_dir):
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    for name, folder in (("ge2e-onnx", None), ("wespeaker", model_dir)):
        with pytest.raises(ConfigError, match="device"):
            load_encoder(name, model_dir=folder, device=device)


# ------------------------------------------------------------------------ WeSpeaker folders


def wespeaker_reference(wav: np.ndarray, seed: int = 0) -> np.ndarray:
    """WeSpeaker's own inference recipe (wespeaker/bin/infer_onnx.py's features, CMN) on the torch net."""
    feats = kaldi.fbank(
        torch.from_numpy(wav)[None] * (1 << 15),
        num_mel_bins=80,
        frame_length=25,
        frame_shift=10,
        dither=0.0,
        sample_frequency=SR,
        window_type="hamming",
        use_energy=False,
    )
    feats = feats - feats.mean(dim=0)
    with torch.no_grad():
        emb = make_net(seed)(feats[None])[0].numpy()
    return emb / np.linalg.norm(emb)


def test_wespeaker_folder_embeds_as_wespeakers_own_recipe_does(wespeaker):
    wavs = [
        synthetic_voice(s, f0=f0, seed=i) for i, (s, f0) in enumerate([(0.5, 110), (2.0, 200), (4.3, 150)])
    ]
    emb = wespeaker.embed_batch(wavs)
    assert emb.shape == (3, EMBED_DIM) and emb.dtype == np.float32
    assert wespeaker.embedding_dim == EMBED_DIM and wespeaker.sample_rate == SR
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    for row, wav in zip(emb, wavs, strict=True):
        np.testing.assert_allclose(row, wespeaker_reference(wav), atol=1e-5)


def test_wespeaker_rows_do_not_depend_on_the_rest_of_the_batch(wespeaker):
    wavs = [synthetic_voice(s, seed=i) for i, s in enumerate([1.0, 2.7, 1.0, 6.1, 2.7])]
    batched = wespeaker.embed_batch(wavs)
    for i, wav in enumerate(wavs):
        np.testing.assert_allclose(wespeaker.embed_batch([wav])[0], batched[i], atol=1e-5)
    assert float(batched[0] @ batched[2]) < 0.9999  # same length, different audio: a real computation


def test_wespeaker_refuses_bad_audio_as_invalid_input(wespeaker):
    with pytest.raises(InvalidInput) as info:
        wespeaker.embed_batch([synthetic_voice(1.0), np.full(8000, np.nan, dtype=np.float32)])
    assert info.value.field == "audio" and "item 1" in info.value.description


def test_wespeaker_version_follows_the_model_file_and_the_front_end_not_the_path(
    wespeaker, model_dir, tmp_path
):
    assert wespeaker.encoder_id == "wespeaker" and wespeaker.version.startswith("wespeaker-")
    copy = load_encoder("wespeaker", model_dir=copy_folder(model_dir, tmp_path / "copy"))
    assert copy.version == wespeaker.version

    other = load_encoder("wespeaker", model_dir=make_wespeaker_folder(tmp_path / "seed1", seed=1))
    assert other.version != wespeaker.version
    wav = [synthetic_voice(2.0)]
    assert np.abs(other.embed_batch(wav) - wespeaker.embed_batch(wav)).max() > 1e-3

    povey = copy_folder(model_dir, tmp_path / "povey")
    (povey / "config.yaml").write_text(yaml.safe_dump(wespeaker_config(window_type="povey")))
    povey_enc = load_encoder("wespeaker", model_dir=povey)
    assert povey_enc.version.split("-")[1] == wespeaker.version.split("-")[1]  # same .onnx
    assert povey_enc.version != wespeaker.version
    assert np.abs(povey_enc.embed_batch(wav) - wespeaker.embed_batch(wav)).max() > 1e-4


def test_wespeaker_reads_its_front_end_from_the_config(tmp_path):
    folder = make_wespeaker_folder(tmp_path / "m64", feat_dim=64)
    encoder = load_encoder("wespeaker", model_dir=folder)
    assert encoder.frontend["num_mel_bins"] == 64
    assert encoder.features(synthetic_voice(1.0)).shape == (98, 64)  # 1 s: (16000 - 400) // 160 + 1


def test_wespeaker_has_no_calibration_so_policies_must_fix_a_threshold(wespeaker):
    with pytest.raises(ConfigError, match=r"voice\.threshold"):
        load_calibration(wespeaker.encoder_id, wespeaker.version)


def _rewrite_config(folder: Path, change) -> None:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    change(cfg)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))


def _wrong_input_name(folder: Path) -> None:
    (folder / MODEL_FILE).unlink()
    export(make_net(0), folder / MODEL_FILE, input_name="x")


def _second_model(folder: Path) -> None:
    shutil.copy(folder / MODEL_FILE, folder / "another.onnx")


def _garbled_model(folder: Path) -> None:
    (folder / MODEL_FILE).write_bytes(b"not an onnx model")


BROKEN = {
    "missing-config": (lambda f: (f / "config.yaml").unlink(), "missing config.yaml"),
    "missing-onnx": (lambda f: (f / MODEL_FILE).unlink(), "has no .onnx model"),
    "two-onnx": (_second_model, "several .onnx models"),
    "garbled-onnx": (_garbled_model, "ONNX Runtime cannot load"),
    "wrong-input-name": (_wrong_input_name, "not one input 'feats'"),
    "wrong-embed-dim": (
        lambda f: _rewrite_config(f, lambda c: c["model_args"].update(embed_dim=256)),
        "declares model_args.embed_dim 256",
    ),
    "wrong-feat-dim": (
        lambda f: _rewrite_config(f, lambda c: c["model_args"].update(feat_dim=64)),
        "feat_dim 64 differs",
    ),
    "wrong-n-mels": (
        lambda f: _rewrite_config(
            f,
            lambda c: (
                c["model_args"].pop("feat_dim"),
                c["dataset_args"]["fbank_args"].update(num_mel_bins=64),
            ),
        ),
        r"expected \(B, T, 64\)",
    ),
    "ssl-frontend": (
        lambda f: _rewrite_config(f, lambda c: c["dataset_args"].update(frontend="s3prl")),
        "only 'fbank'",
    ),
    "bad-window": (
        lambda f: _rewrite_config(f, lambda c: c["dataset_args"]["fbank_args"].update(window_type="kaiser")),
        "window_type 'kaiser'",
    ),
    "not-a-mapping": (lambda f: (f / "config.yaml").write_text("- just\n- a list\n"), "not a mapping"),
    "bad-yaml": (lambda f: (f / "config.yaml").write_text("model: [unclosed\n"), "cannot read"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_wespeaker_folders_are_config_errors_that_say_what_is_wrong(case, model_dir, tmp_path):
    folder = copy_folder(model_dir, tmp_path / case)
    breaks, message = BROKEN[case]
    breaks(folder)
    with pytest.raises(ConfigError, match=message):
        load_encoder("wespeaker", model_dir=folder)


def test_wespeaker_needs_an_existing_folder(tmp_path):
    with pytest.raises(ConfigError, match="needs a model folder"):
        load_encoder("wespeaker")
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder("wespeaker", model_dir=tmp_path / "nowhere")


# --------------------------------------------------------------------------- serving them


@pytest.mark.parametrize("which", ["ge2e-onnx", "wespeaker"])
async def test_the_batcher_gives_each_caller_what_the_encoder_gives_alone(which, onnx_ge2e, wespeaker):
    encoder = onnx_ge2e if which == "ge2e-onnx" else wespeaker
    wavs = [
        synthetic_voice(s, f0=f0, seed=i)
        for i, (s, f0) in enumerate([(1.0, 100), (2.5, 170), (1.0, 130), (4.0, 210)])
    ]
    batcher = MicroBatcher(encoder, BatchConfig(max_batch=4, max_wait_ms=50.0), warm_up=False)
    try:
        got = await asyncio.gather(*(batcher.embed(w) for w in wavs))
    finally:
        batcher.close()
    for row, wav in zip(got, wavs, strict=True):
        np.testing.assert_allclose(row, encoder.embed_batch([wav])[0], atol=1e-5)


def test_serve_offers_every_known_encoder():
    import argparse

    from authsvc.cli.serve import add_serve_args

    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    for name in KNOWN_ENCODERS:
        args = parser.parse_args(["--encoder", name, "--model-dir", "/srv/models/x"])
        assert args.encoder == name
    assert {"ge2e-onnx", "wespeaker"} <= set(KNOWN_ENCODERS)


def test_auto_device_is_cuda_only_where_onnxruntime_has_it(model_dir):
    import onnxruntime as ort

    expected = "cuda:0" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    assert load_encoder("wespeaker", model_dir=model_dir, device="auto").device == expected
