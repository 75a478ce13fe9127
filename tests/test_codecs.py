"""G.711 tables against the standard library's reference codec, PCM16 framing, rates,
resampling and audio-file reading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from authsvc.audio.codecs import Encoding, check_rate, count_encoded_peaks, decode, encode
from authsvc.audio.files import read_audio_file
from authsvc.audio.resample import resample
from authsvc.cli.audio_files import file_to_wire
from authsvc.errors import InvalidInput

with warnings.catch_warnings():
    # audioop is deprecated (removed in 3.13) but is the reference G.711 codec on 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_CODES = bytes(range(256))
ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
G711 = [
    pytest.param(Encoding.MULAW, audioop.ulaw2lin, audioop.lin2ulaw, id="mulaw"),
    pytest.param(Encoding.ALAW, audioop.alaw2lin, audioop.lin2alaw, id="alaw"),
]


def _reference_decode(ref_decode, codes: bytes) -> np.ndarray:
    return np.frombuffer(ref_decode(codes, 2), dtype="<i2")


@pytest.mark.parametrize(("encoding", "ref_decode", "ref_encode"), G711)
def test_g711_decode_matches_audioop_for_all_256_codes(encoding, ref_decode, ref_encode):
    ours = decode(ALL_CODES, encoding)
    ref = _reference_decode(ref_decode, ALL_CODES)
    assert ours.dtype == np.int16
    mismatched = np.nonzero(ours != ref)[0]
    assert mismatched.size == 0, f"codes {mismatched[:8].tolist()} decode differently from audioop"


def test_alaw_encode_matches_audioop_on_every_int16_value():
    ours = np.frombuffer(encode(ALL_PCM, Encoding.ALAW), dtype=np.uint8)
    ref = np.frombuffer(audioop.lin2alaw(ALL_PCM.astype("<i2").tobytes(), 2), dtype=np.uint8)
    mismatched = ALL_PCM[ours != ref]
    assert mismatched.size == 0, f"inputs {mismatched[:8].tolist()} encode differently from audioop"


def test_mulaw_encode_differs_from_audioop_only_by_its_14_bit_truncation_of_negatives():
    """audioop.lin2ulaw drops the two low bits in two's complement (`pcm >> 2`) before
    taking the magnitude, so a negative input is rounded away from zero; G.711 (and
    authsvc) quantise the magnitude itself. The two agree everywhere except on a few
    hundred negative inputs lying just inside a quantisation step, where they pick
    neighbouring codes, and authsvc's code is never further from the input."""
    ours = np.frombuffer(encode(ALL_PCM, Encoding.MULAW), dtype=np.uint8)
    ref = np.frombuffer(audioop.lin2ulaw(ALL_PCM.astype("<i2").tobytes(), 2), dtype=np.uint8)
    differ = ours != ref
    inputs = ALL_PCM[differ]

    # The whole difference is audioop's truncation: it equals authsvc on x with bits 0-1 cleared.
    truncated = (ALL_PCM.astype(np.int32) & ~3).astype(np.int16)
    assert np.array_equal(ref, np.frombuffer(encode(truncated, Encoding.MULAW), dtype=np.uint8))

    assert (inputs < 0).all(), f"non-negative inputs {inputs[inputs >= 0][:8].tolist()} differ"
    assert differ.sum() <= 512, f"{differ.sum()} of 65536 inputs differ from audioop"
    assert (np.abs(ours[differ].astype(int) - ref[differ].astype(int)) == 1).all(), "not neighbouring codes"
    table = decode(ALL_CODES, Encoding.MULAW).astype(np.int32)
    err_ours = np.abs(table[ours[differ]] - inputs)
    err_ref = np.abs(table[ref[differ]] - inputs)
    assert (err_ours <= err_ref).all()


CHUNK_SIZES = (0, 1, 159, 160, 161, 240, 481, 4000)  # samples: odd, around 20 ms and 30 ms, large
ENCODINGS = [
    pytest.param(Encoding.PCM16_LE, id="pcm16"),
    pytest.param(Encoding.MULAW, id="mulaw"),
    pytest.param(Encoding.ALAW, id="alaw"),
]


def _reference_samples(data: bytes, encoding: Encoding) -> np.ndarray:
    """The decoded samples by another route: audioop for G.711, plain little-endian PCM16."""
    if encoding is Encoding.PCM16_LE:
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    ref_decode = audioop.ulaw2lin if encoding is Encoding.MULAW else audioop.alaw2lin
    return _reference_decode(ref_decode, data).astype(np.int16)


def _reference_peaks(samples: np.ndarray, clip_level: int) -> int:
    """SpeechTracker's clipping count as first written: on the decoded samples."""
    return int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= clip_level))


def _hot_speech_chunks(speech, encoding: Encoding, seed: int) -> list[bytes]:
    """Real speech at 8 kHz, the second utterance 26 dB too hot (hard-clipped), cut into chunks of
    CHUNK_SIZES and random sizes (seeded) in `encoding`."""
    utterances = [u for name in sorted(speech) for u in speech[name]][:2]
    wav = resample(np.concatenate([utterances[0], np.clip(utterances[1] * 20, -1.0, 1.0)]), 16000, 8000)
    data = encode(wav, encoding)
    rng = np.random.default_rng(seed)
    sizes = [*CHUNK_SIZES, *rng.choice(CHUNK_SIZES, 200), *rng.integers(1, 5000, 200)]
    width, chunks, at = encoding.bytes_per_sample, [], 0
    for size in sizes:
        chunks.append(data[at : at + int(size) * width])
        at += int(size) * width
    return [*chunks, data[at:]]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decode_of_real_speech_chunks_of_any_size_matches_the_reference_codec(speech, encoding):
    for chunk in _hot_speech_chunks(speech, encoding, seed=11):
        ours = decode(chunk, encoding)
        assert ours.dtype == np.int16 and ours.flags.writeable and ours.flags.c_contiguous
        assert np.array_equal(ours, _reference_samples(chunk, encoding)), len(chunk)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_peaks_counted_on_the_bytes_equal_peaks_counted_on_the_decoded_speech(speech, encoding):
    chunks = _hot_speech_chunks(speech, encoding, seed=12)
    session_level = int(encoding.full_scale * 0.98)  # what a session counts clipping at
    hits = sum(count_encoded_peaks(c, encoding, session_level) for c in chunks)
    assert hits == sum(_reference_peaks(_reference_samples(c, encoding), session_level) for c in chunks)
    assert hits > 1000, "the hot utterance must clip"
    # Every level where the count can change (each decodable magnitude and its neighbours), and
    # levels outside the sample range, on the speech and on every code / every PCM16 value.
    every = encode(ALL_PCM, encoding) if encoding is Encoding.PCM16_LE else ALL_CODES
    magnitudes = np.unique(np.abs(_reference_samples(every, encoding).astype(np.int32)))
    levels = {-5, 0, 1, 32767, 32768, 40000, *magnitudes.tolist(), *(magnitudes + 1).tolist()}
    if encoding is Encoding.PCM16_LE:
        levels = {level for level in levels if level % 997 == 0 or level < 2 or level > 32000}
    speech_bytes = b"".join(chunks)
    for level in sorted(levels):
        for data in (speech_bytes, every):
            expected = _reference_peaks(_reference_samples(data, encoding), level)
            assert count_encoded_peaks(data, encoding, level) == expected, level
    # decode() takes any bytes-like chunk, so the count must too (a memoryview has no translate()).
    level = int(magnitudes[len(magnitudes) // 2])
    assert count_encoded_peaks(memoryview(every), encoding, level) == count_encoded_peaks(
        every, encoding, level
    )


@pytest.mark.parametrize("encoding", [Encoding.MULAW, Encoding.ALAW], ids=["mulaw", "alaw"])
def test_g711_round_trip_error_stays_within_one_quantisation_step(encoding):
    back = decode(encode(ALL_PCM, encoding), encoding).astype(np.int32)
    err = np.abs(back - ALL_PCM.astype(np.int32))
    magnitude = np.abs(ALL_PCM.astype(np.int32))
    # Logarithmic companding: the step grows with the magnitude, about 1/16 of it (plus clipping
    # at the encoding's full scale, which is below 32767).
    in_range = magnitude <= encoding.full_scale
    assert (err[in_range] <= np.maximum(magnitude[in_range] // 16, 16)).all()


def test_pcm16_round_trips_little_endian():
    data = encode(ALL_PCM, Encoding.PCM16_LE)
    assert data[:2] == (-32768).to_bytes(2, "little", signed=True)
    assert np.array_equal(decode(data, Encoding.PCM16_LE), ALL_PCM)


def test_pcm16_odd_byte_count_is_invalid_input_naming_audio_data():
    with pytest.raises(InvalidInput) as err:
        decode(b"\x00\x01\x02", Encoding.PCM16_LE)
    assert err.value.field == "audio.data"
    assert "even number of bytes" in err.value.description and "3" in err.value.description


@pytest.mark.parametrize("rate", [8000, 16000])
def test_check_rate_accepts_telephony_and_wideband(rate):
    assert check_rate(rate) == rate


def test_check_rate_rejects_44100_naming_the_field():
    with pytest.raises(InvalidInput) as err:
        check_rate(44100, "format.sample_rate_hz")
    assert err.value.field == "format.sample_rate_hz"
    assert "44100" in err.value.description


def _peak_hz(wav: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(wav.size)))
    return float(np.fft.rfftfreq(wav.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000)])
def test_resample_scales_length_and_keeps_a_sines_frequency(src, dst):
    freq = 1234.0
    t = np.arange(src) / src  # one second
    sine = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    out = resample(sine, src, dst)
    assert out.dtype == np.float32
    assert out.size == dst
    assert _peak_hz(out, dst) == pytest.approx(freq, abs=1.0)
    # The level survives too (no gain error from the polyphase filter), away from the edges.
    mid = out[dst // 10 : -dst // 10]
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resample_same_rate_is_identity():
    wav = np.linspace(-1, 1, 800, dtype=np.float32)
    assert np.array_equal(resample(wav, 8000, 8000), wav)


def test_a_stereo_file_needs_its_customer_channel_named_and_is_never_mixed(tmp_path: Path):
    stereo = np.stack([np.full(1600, 0.25), np.full(1600, -0.25)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 8000, subtype="PCM_16")
    with pytest.raises(InvalidInput) as err:
        read_audio_file(path)
    assert "--channel" in err.value.description and "2 channels" in err.value.description
    for channel, level in ((0, 0.25), (1, -0.25)):
        wav, rate = read_audio_file(path, channel)
        assert rate == 8000 and wav.dtype == np.float32 and wav.shape == (1600,)
        assert np.allclose(wav, level, atol=1e-4), "one channel as recorded, not a mix"
    with pytest.raises(InvalidInput, match="does not exist"):
        read_audio_file(path, 2)
    mono = tmp_path / "mono.wav"
    sf.write(mono, stereo[:, 0], 8000, subtype="PCM_16")
    assert read_audio_file(mono)[0].shape == (1600,)


def test_file_to_wire_keeps_telephony_rates_and_brings_others_to_16khz(tmp_path: Path):
    for rate, wire_rate in ((8000, 8000), (16000, 16000), (44100, 16000)):
        path = tmp_path / f"{rate}.wav"
        sf.write(path, np.zeros(rate, dtype=np.float32), rate, subtype="PCM_16")  # one second
        data, got = file_to_wire(path)
        assert got == wire_rate and len(data) == 2 * wire_rate
    data, got = file_to_wire(tmp_path / "16000.wav", Encoding.MULAW, 8000)
    assert got == 8000 and len(data) == 8000


def _assert_invalid_file(path: Path, words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        read_audio_file(path)
    assert err.value.field == "file"
    assert str(path) in err.value.description, "the message must name the file"
    assert words in err.value.description


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_read_audio_file_rejects_non_finite_float_wav(tmp_path: Path, bad):
    wav = np.full(1600, 0.1, dtype=np.float32)
    wav[800] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, wav, 16000, subtype="FLOAT")
    _assert_invalid_file(path, "NaN or infinite")


def test_read_audio_file_rejects_a_zero_byte_file(tmp_path: Path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _assert_invalid_file(path, "cannot read audio")


def test_read_audio_file_rejects_a_wav_without_samples(tmp_path: Path):
    path = tmp_path / "no-frames.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    _assert_invalid_file(path, "no audio samples")


def test_read_audio_file_rejects_a_non_audio_file(tmp_path: Path):
    path = tmp_path / "notes.wav"
    path.write_text("this is a text file, not audio\n" * 20)
    _assert_invalid_file(path, "cannot read audio")


def test_read_audio_file_rejects_a_missing_file(tmp_path: Path):
    _assert_invalid_file(tmp_path / "missing.wav", "cannot read audio")
