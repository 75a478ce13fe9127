"""Synthetic-speech detection (issue 11): the AASIST countermeasure, its model folder, and the
synthetic risk beside each decision.

Loading is tested with small AASIST models made here in the publisher's layouts; detection
with the published weights in ../shared/models/aasist where present.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.resample import resample
from authsvc.errors import ConfigError
from authsvc.fraud import synthetic
from authsvc.policy.risk import HIGH, LOW, NOT_ENOUGH_AUDIO, UNAVAILABLE
from authsvc.voice.aasist import AASIST
from authsvc.voice.countermeasure import load_countermeasure
from authsvc.voice.runner import EmbeddingRunner
from tests.conftest import ROOT
from tests.test_fraud_replay import _telephone
from tests.test_service_assurance import _enroll_voice, _speakers
from tests.wire import call_requests, stream

TINY = {
    "architecture": "AASIST",
    "nb_samp": 64600,
    "first_conv": 128,
    "filts": [70, [1, 4], [4, 4], [4, 8], [8, 8]],
    "gat_dims": [8, 4],
    "pool_ratios": [0.5, 0.7, 0.5, 0.5],
    "temperatures": [2.0, 2.0, 100.0, 100.0],
}
PUBLISHED = Path(os.environ.get("AUTHSVC_AASIST_DIR", ROOT.parent / "shared" / "models" / "aasist"))
needs_published = pytest.mark.skipif(not (PUBLISHED / "AASIST.pth").is_file(), reason="no published AASIST")


def _folder(root: Path, layout: str, config: dict = TINY, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = AASIST(config)
    for p in net.parameters():
        if p.dim() >= 2:
            torch.nn.init.xavier_normal_(p)
    conf = {"model_path": "./models/weights/AASIST.pth", "model_config": config}
    if layout == "flat":
        root.mkdir(parents=True, exist_ok=True)
        (root / "AASIST.conf").write_text(json.dumps(conf))
        torch.save(net.state_dict(), root / "AASIST.pth")
    else:  # clovaai/aasist's repository layout
        (root / "config").mkdir(parents=True)
        (root / "models" / "weights").mkdir(parents=True)
        (root / "config" / "AASIST.conf").write_text(json.dumps(conf))
        torch.save(net.state_dict(), root / "models" / "weights" / "AASIST.pth")
    return root


@pytest.mark.parametrize("layout", ["flat", "repository"])
def test_a_model_folder_in_either_published_layout_loads_and_scores_each_waveform_alone(tmp_path, layout):
    cm = load_countermeasure(_folder(tmp_path / "m", layout))
    assert cm.version.startswith("aasist-AASIST-") and cm.sample_rate == 16000
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, 40000).astype(np.float32), rng.normal(0, 0.1, 90000).astype(np.float32)
    both = cm.embed_batch([a, b])
    assert both.shape == (2, 1) and np.isfinite(both).all()
    assert np.allclose(cm.embed_batch([a]), both[:1], atol=1e-5), "a row must not depend on its batch"
    from authsvc.voice.device import warm_up

    assert warm_up(cm) > 0, "the batcher's warm-up fits the countermeasure's minimum length"


def test_missing_or_mismatched_model_files_refuse_start_up_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"\.conf"):
        load_countermeasure(tmp_path)
    folder = _folder(tmp_path / "a", "flat")
    (folder / "AASIST.pth").unlink()
    with pytest.raises(ConfigError, match=r"AASIST\.pth.*missing"):
        load_countermeasure(folder)
    other = dict(TINY, gat_dims=[6, 4])  # weights of another shape
    torch.save(AASIST(other).state_dict(), folder / "AASIST.pth")
    with pytest.raises(ConfigError, match=r"AASIST\.pth: does not fit AASIST\.conf"):
        load_countermeasure(folder)
    (folder / "AASIST.pth").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"AASIST\.pth"):
        load_countermeasure(folder)
    (folder / "AASIST.conf").write_text("{not json")
    with pytest.raises(ConfigError, match=r"AASIST\.conf: not an AASIST config"):
        load_countermeasure(folder)


def test_the_synthetic_risk_fails_closed_and_never_reads_short_audio_as_low():
    assert synthetic.assess(float("nan"), "v").level == HIGH
    assert synthetic.assess(synthetic.MIN_MARGIN, "v").level == LOW
    assert synthetic.assess(synthetic.MIN_MARGIN - 0.01, "v").level == HIGH
    assert synthetic.not_enough(0.8, 1.5, "v").level == NOT_ENOUGH_AUDIO
    assert synthetic.unavailable().level == UNAVAILABLE and "countermeasure" in synthetic.unavailable().reason


def _tts(text: str) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    raw = subprocess.run([exe, "-v", "en-us", "--stdout", text], capture_output=True, check=True).stdout
    pcm = np.frombuffer(raw[44:], "<i2").astype(np.float32) / 32768  # a 22,050 Hz WAV
    return resample(pcm, 22050, 16000)


@needs_published
async def test_a_tts_caller_gets_a_synthetic_risk_and_a_real_one_a_low_risk(svc, speech):
    _, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    await _enroll_voice(svc[0], "shop", "carol", target[:4])
    cm = await asyncio.to_thread(load_countermeasure, PUBLISHED)
    ctx.countermeasure = EmbeddingRunner(cm, warm_up=False)
    try:
        text = "Hello, I would like to check the balance of my account, and move some money to savings."
        fake = resample(_telephone(_tts(text)), 8000, 16000)
        decisions = await asyncio.to_thread(stream, address, call_requests("shop", "carol", fake))
        risks = [r for d in decisions for r in d.fraud.risks if r.detector == "synthetic"]
        # general flags the risk, so a look may go ahead of a window still being judged; every
        # judged window is high, and the call's last decision carries it.
        judged = [r for r in risks if r.level != V.RISK_LEVEL_UNAVAILABLE]
        assert judged and all(r.level == V.RISK_LEVEL_HIGH for r in judged), [r.reason for r in risks]
        assert all("being judged" in r.reason for r in risks if r.level == V.RISK_LEVEL_UNAVAILABLE)
        assert decisions[-1].fraud.risks and any(
            r.detector == "synthetic" and r.level == V.RISK_LEVEL_HIGH for r in decisions[-1].fraud.risks
        )
        assert all(r.version == cm.version for r in risks)
        assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in decisions)
    finally:
        ctx.countermeasure.close()
        ctx.countermeasure = None


async def test_without_a_model_folder_the_decision_and_health_say_synthetic_speech_is_not_assessed(
    svc, speech
):
    channel, _, _, address, _ = svc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "dan", target[:4])
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "dan", target[4]))
    synth = [r for d in decisions for r in d.fraud.risks if r.detector == "synthetic"]
    assert synth and all(r.level == V.RISK_LEVEL_UNAVAILABLE for r in synth)
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, "not assessed is no reason to refuse"
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="authsvc.fraud.synthetic")
    )
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_each_look_is_judged_once_and_from_before_the_look_so_it_need_not_wait(svc, speech, tmp_path):
    """The countermeasure costs more than a decision may wait: a look's window is started ahead
    of it, beside the call, and a call costs one judgement per look, not one per chunk."""
    channel, ctx, data_dir, address, _ = svc
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "ivy", target[:4])
    cm = load_countermeasure(_folder(tmp_path / "cm", "flat"))
    ctx.countermeasure = EmbeddingRunner(cm, warm_up=False)
    started: list[float] = []
    real = ctx.countermeasure.embed

    async def spy(wav, deadline=None):
        started.append(len(wav) / cm.sample_rate)  # the judged window, in seconds of speech
        return await real(wav, deadline=deadline)

    ctx.countermeasure.embed = spy
    # Rejecting synthetic speech: every look waits for its window (started ahead of it).
    (data_dir / "policies" / "shop.toml").write_text('sector = "general"\n[fraud]\nsynthetic = "reject"\n')
    try:
        decisions = await asyncio.to_thread(stream, address, call_requests("shop", "ivy", target[5]))
    finally:
        ctx.countermeasure.close()
        ctx.countermeasure = None
    looks = [d for d in decisions if any(r.detector == "synthetic" for r in d.fraud.risks)]
    assert looks and len(started) == len(looks), (len(started), len(looks))
    first = await ctx.policy_for("shop")
    # The first look comes at min_net_speech_s; its window was taken a lead earlier.
    assert started[0] < first.voice.min_net_speech_s - 0.5, started
    assert all(
        r.level in (V.RISK_LEVEL_LOW, V.RISK_LEVEL_HIGH)
        for d in looks
        for r in d.fraud.risks
        if r.detector == "synthetic"
    ), "a policy that acts on the risk never decides ahead of the judgement"
