"""GE2E encoder: equal to Resemblyzer's own encoder, batch-independent, safe on bad input.

The reference tests need the shared LibriSpeech clips and the resemblyzer
package (imported here only as the reference); the synthetic tests run
anywhere so CI without data still checks shapes, norms and batching.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from authsvc.errors import ConfigError, InvalidInput
from authsvc.voice import ge2e as ge2e_mod
from authsvc.voice.registry import load_encoder

ROOT = Path(__file__).resolve().parent.parent
SR = 16000

# Measured on this project's pinned versions: max |diff| 5.2e-7, min cosine
# 0.99999994 over 20 utterances of 0.25 s to 13 s. The bounds leave room for
# other BLAS/FFT builds while still catching any front-end or slicing change.
MAX_ABS_DIFF = 1e-5
MIN_COSINE = 0.99999


def data_dir() -> Path:
    return Path(os.environ.get("AUTHSVC_DATA", ROOT.parent / "shared" / "data"))


LIBRISPEECH = data_dir() / "speech" / "librispeech-test-other-10"
needs_speech = pytest.mark.skipif(not LIBRISPEECH.is_dir(), reason=f"no shared speech at {LIBRISPEECH}")


def synthetic_voice(seconds: float, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A crude voiced signal: harmonics with vibrato, syllable-like bursts and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.3 * t + rng.uniform(0, np.pi))
    wav = 0.1 * voiced * envelope + 0.003 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("ge2e", threads=2)


# ---------------------------------------------------------------- no shared data needed


def test_embeddings_are_unit_rows_of_the_declared_shape(encoder):
    wavs = [synthetic_voice(s, seed=i) for i, s in enumerate([0.3, 1.0, 2.5, 7.0])]
    emb = encoder.embed_batch(wavs)
    assert emb.shape == (4, 256) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert encoder.encoder_id == "ge2e" and encoder.sample_rate == SR and encoder.embedding_dim == 256


def test_synthetic_row_does_not_depend_on_the_rest_of_the_batch(encoder):
    specs = [(0.4, 100), (3.1, 180), (9.7, 140)]
    wavs = [synthetic_voice(s, f0=f0, seed=i) for i, (s, f0) in enumerate(specs)]
    batched = encoder.embed_batch(wavs)
    for i, wav in enumerate(wavs):
        np.testing.assert_allclose(encoder.embed_batch([wav])[0], batched[i], atol=1e-5)
    np.testing.assert_allclose(encoder.embed_batch(wavs[::-1])[::-1], batched, atol=1e-5)


def test_different_voices_give_different_embeddings_and_repeats_are_identical(encoder):
    low, high = synthetic_voice(3.0, f0=100), synthetic_voice(3.0, f0=220)
    first = encoder.embed_batch([low, high])
    np.testing.assert_array_equal(encoder.embed_batch([low, high]), first)
    assert float(first[0] @ first[1]) < 0.99


def test_quiet_audio_is_volume_normalised_before_embedding(encoder):
    at_target = ge2e_mod.normalize_volume(synthetic_voice(4.0), -30.0, increase_only=False)
    quiet = at_target * np.float32(0.01)  # -70 dBFS: must be raised back to -30 dBFS
    emb_quiet, emb_target = encoder.embed_batch([quiet, at_target])
    np.testing.assert_allclose(emb_quiet, emb_target, atol=1e-5)


def test_normalize_volume_reaches_target_raises_only_and_keeps_silence():
    wav = synthetic_voice(2.0) * np.float32(0.01)
    out = ge2e_mod.normalize_volume(wav, -30.0)
    dbfs = 20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2)))
    assert dbfs == pytest.approx(-30.0, abs=1e-3)
    loud = synthetic_voice(2.0) * np.float32(5.0)
    np.testing.assert_array_equal(ge2e_mod.normalize_volume(loud, -30.0), loud)
    silence = np.zeros(SR, dtype=np.float32)
    np.testing.assert_array_equal(ge2e_mod.normalize_volume(silence), silence)


def test_digital_silence_gives_a_finite_unit_embedding(encoder):
    emb = encoder.embed_batch([np.zeros(SR, dtype=np.float32)])
    assert np.isfinite(emb).all()
    assert np.linalg.norm(emb[0]) == pytest.approx(1.0, abs=1e-5)


def test_mel_front_end_matches_librosa():
    librosa = pytest.importorskip("librosa")
    wav = synthetic_voice(1.37)
    expected = librosa.feature.melspectrogram(y=wav, sr=SR, n_fft=400, hop_length=160, n_mels=40).T
    ours = ge2e_mod.MelFrontEnd()(torch.from_numpy(wav)).numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


@pytest.mark.parametrize("n_samples", [4000, 16000, 25599, 25600, 30000, 31999, 160000])
def test_partial_windows_are_160_frames_77_apart_and_start_inside_the_audio(n_samples):
    wav_slices, mel_slices = ge2e_mod.compute_partial_slices(n_samples)
    assert len(wav_slices) == len(mel_slices) >= 1
    assert [s.start for s in mel_slices] == [77 * i for i in range(len(mel_slices))]
    assert all(s.stop - s.start == 160 for s in mel_slices)
    assert wav_slices == [slice(m.start * 160, m.stop * 160) for m in mel_slices]
    assert wav_slices[-1].start < n_samples


def test_empty_batch_gives_an_empty_matrix(encoder):
    assert encoder.embed_batch([]).shape == (0, 256)


@pytest.mark.parametrize(
    ("wav", "words"),
    [
        (np.zeros(3999, dtype=np.float32), "shorter than the minimum 4000"),
        (np.zeros(0, dtype=np.float32), "shorter than the minimum"),
        (np.full(8000, np.nan, dtype=np.float32), "NaN"),
        (np.zeros((2, 8000), dtype=np.float32), "mono"),
        (np.zeros(8000, dtype=np.int16), "float"),
        (np.full(8000, 1000.0, dtype=np.float32), "outside [-1, 1]"),
    ],
    ids=["too-short", "empty", "nan", "stereo", "int16", "unscaled"],
)
def test_bad_audio_is_invalid_input_on_the_audio_field(encoder, wav, words):
    with pytest.raises(InvalidInput) as info:
        encoder.embed_batch([synthetic_voice(1.0), wav])
    assert info.value.field == "audio"
    assert words in info.value.description
    assert "item 1" in info.value.description


def test_version_names_the_weight_file_hash(encoder):
    digest = hashlib.sha256(ge2e_mod.resemblyzer_weights_path().read_bytes()).hexdigest()
    assert encoder.version == f"resemblyzer-pretrained-{digest[:12]}"


def test_modified_weight_file_changes_version_and_output(tmp_path, encoder):
    same, changed = tmp_path / "same", tmp_path / "changed"
    same.mkdir()
    changed.mkdir()
    shutil.copy(ge2e_mod.resemblyzer_weights_path(), same / "pretrained.pt")
    checkpoint = torch.load(same / "pretrained.pt", map_location="cpu", weights_only=True)
    checkpoint["model_state"]["linear.bias"] = checkpoint["model_state"]["linear.bias"] + 0.05
    torch.save(checkpoint, changed / "pretrained.pt")

    copy_enc = load_encoder("ge2e", model_dir=same)
    changed_enc = load_encoder("ge2e", model_dir=changed)
    assert copy_enc.version == encoder.version
    assert changed_enc.version != encoder.version
    assert changed_enc.version.startswith("resemblyzer-pretrained-")
    wav = [synthetic_voice(2.0)]
    np.testing.assert_array_equal(copy_enc.embed_batch(wav), encoder.embed_batch(wav))
    assert np.abs(changed_enc.embed_batch(wav) - encoder.embed_batch(wav)).max() > 1e-3


def test_unusable_model_folders_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"pretrained\.pt"):
        load_encoder("ge2e", model_dir=tmp_path)
    (tmp_path / "pretrained.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="readable torch checkpoint"):
        load_encoder("ge2e", model_dir=tmp_path)
    torch.save({"model_state": {"lstm.weight_ih_l0": torch.zeros(1024, 40)}}, tmp_path / "pretrained.pt")
    with pytest.raises(ConfigError, match=r"linear\.weight"):
        load_encoder("ge2e", model_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder("ge2e", model_dir=tmp_path / "nowhere")


def test_unknown_encoder_name_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load_encoder("xvector")
    assert "ge2e" in str(info.value) and "ecapa" in str(info.value)


def test_running_ge2e_never_imports_resemblyzer_modules():
    code = (
        "import sys, numpy as np\n"
        "from authsvc.voice.registry import load_encoder\n"
        "enc = load_encoder('ge2e')\n"
        "enc.embed_batch([np.random.default_rng(0).uniform(-.1, .1, 20000).astype(np.float32)])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('resemblyzer', 'webrtcvad', 'librosa'))\n"
        "assert not bad, bad\n"
    )
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------ Resemblyzer reference


@pytest.fixture(scope="module")
def resemblyzer():
    return pytest.importorskip("resemblyzer", reason="resemblyzer (the reference) is not importable")


@pytest.fixture(scope="module")
def reference(resemblyzer):
    return resemblyzer.VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def preprocessed(resemblyzer) -> list[np.ndarray]:
    """Preprocessed utterances of many lengths: the shortest, a middle and the longest
    file, plus cuts of 0.6, 1.0, 1.7 and 3 s that exercise padding and window dropping."""
    import soundfile as sf

    files = sorted(LIBRISPEECH.glob("*/*.flac"), key=lambda f: sf.info(f).frames)
    chosen = [files[0], files[len(files) // 2], files[-1]]
    wavs = [resemblyzer.preprocess_wav(f) for f in chosen]
    raw, rate = sf.read(files[len(files) // 3], dtype="float32")
    assert rate == SR
    for seconds in (0.6, 1.0, 1.7, 3.0):
        wavs.append(resemblyzer.preprocess_wav(raw[SR : SR + int(seconds * SR)]))
    assert all(len(w) >= 4000 for w in wavs)
    assert len({len(w) for w in wavs}) == len(wavs)
    return wavs


@needs_speech
def test_embeddings_equal_resemblyzers_on_real_speech(encoder, reference, preprocessed):
    ours = encoder.embed_batch(preprocessed)
    for wav, row in zip(preprocessed, ours, strict=True):
        expected = reference.embed_utterance(wav)
        cosine = float(row @ expected) / float(np.linalg.norm(expected))
        assert cosine >= MIN_COSINE, (len(wav), cosine)
        assert np.abs(row - expected).max() <= MAX_ABS_DIFF, len(wav)


@needs_speech
def test_real_speech_row_does_not_depend_on_the_rest_of_the_batch(encoder, preprocessed):
    batched = encoder.embed_batch(preprocessed)
    for i, wav in enumerate(preprocessed):
        np.testing.assert_allclose(encoder.embed_batch([wav])[0], batched[i], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_partial_slices_equal_resemblyzers(reference):
    for n in [*range(0, 120_000, 997), 25_600, 25_599, 31_999, 32_000, 1_000_000]:
        assert ge2e_mod.compute_partial_slices(n) == reference.compute_partial_slices(n, 1.3, 0.75), n


def test_normalize_volume_equals_resemblyzers(resemblyzer):
    from resemblyzer.audio import normalize_volume as reference_normalize

    for gain in (0.001, 0.1, 3.0):
        wav = synthetic_voice(1.5) * np.float32(gain)
        np.testing.assert_allclose(
            ge2e_mod.normalize_volume(wav, -30.0, increase_only=True),
            reference_normalize(wav, -30, increase_only=True),
            rtol=1e-5,
        )
