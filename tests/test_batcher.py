"""The micro-batcher's policy, with a gated fake encoder so every step is deterministic.

The fake's `embed_batch` can be held at a gate: while it is held, the worker is
provably busy, so the tests can queue exactly the requests they want before a
batch is formed. No test depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from authsvc.errors import ConfigError, InvalidInput, Overloaded
from authsvc.metrics import Metrics
from authsvc.server.errors import to_status
from authsvc.voice.batcher import BatchConfig, MicroBatcher, default_config
from authsvc.voice.runner import EmbeddingRunner

SR = 16000
HANG_GUARD_S = 30  # only against a hung test; no assertion depends on time


class GatedEncoder:
    """Embeds wav(tag) -> [tag, seconds, 1]; records every batch it sees."""

    version = "test"
    sample_rate = SR
    embedding_dim = 3
    min_samples = SR // 4

    def __init__(self, encoder_id: str = "fake", fail_on: float | None = None) -> None:
        self.encoder_id = encoder_id
        self.batches: list[list[float]] = []  # first-sample values per batch
        self.lengths: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(HANG_GUARD_S)
        values = [tag_of(w) for w in wavs]
        if self.fail_on is not None and self.fail_on in values:
            raise RuntimeError("poisoned input")
        self.batches.append(values)
        self.lengths.append([len(w) for w in wavs])
        return np.array([[tag_of(w), len(w) / SR, 1.0] for w in wavs], dtype=np.float32)

    def computed(self) -> list[float]:
        return [v for batch in self.batches for v in batch]


def wav(tag: float, seconds: float = 1.0) -> np.ndarray:
    """A constant signal that identifies the request: tag / 100, inside the accepted [-2, 2]."""
    return np.full(int(seconds * SR), tag / 100, dtype=np.float32)


def tag_of(w: np.ndarray) -> float:
    return round(float(w[0]) * 100, 3)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def encoder() -> GatedEncoder:
    return GatedEncoder()


@pytest.fixture
def make_batcher(encoder) -> Iterator:
    made: list[MicroBatcher] = []

    def make(enc: GatedEncoder | None = None, **knobs) -> MicroBatcher:
        enc = enc or encoder
        batcher = MicroBatcher(enc, BatchConfig(**knobs), Metrics(), warm_up=False)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.encoder.gate.set()
        batcher.close()


async def hold_worker(encoder: GatedEncoder, batcher: MicroBatcher, value: float = -1.0) -> asyncio.Task:
    """Starts one request and returns once the worker is inside embed_batch, held at the gate."""
    encoder.gate.clear()
    encoder.entered.clear()
    task = asyncio.create_task(batcher.embed(wav(value)))
    assert await asyncio.to_thread(encoder.entered.wait, HANG_GUARD_S)
    return task


async def test_each_caller_gets_its_own_embedding_in_submission_order_independent_batches(make_batcher):
    batcher = make_batcher(max_batch=8, max_wait_ms=1000)
    values = [float(i) for i in range(20)]
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.embed(wav(v, 0.5 + (i % 3))) for i, v in enumerate(values))), HANG_GUARD_S
    )
    for i, (v, emb) in enumerate(zip(values, results, strict=True)):
        assert emb[0] == v
        assert emb[1] == pytest.approx(0.5 + (i % 3))


async def test_requests_queued_during_compute_form_one_batch_up_to_max_batch(encoder, make_batcher):
    batcher = make_batcher(max_batch=4, max_wait_ms=0)
    first = await hold_worker(encoder, batcher)
    queued = [asyncio.create_task(batcher.embed(wav(float(i)))) for i in range(10)]
    while batcher.queue_depth < 10:
        await asyncio.sleep(0)
    encoder.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), HANG_GUARD_S)
    assert encoder.batches == [[-1.0], [0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]
    assert sample(batcher.metrics, "authsvc_embed_batch_size_count", encoder="fake") == 4
    assert sample(batcher.metrics, "authsvc_embed_batch_size_sum", encoder="fake") == 11


async def test_a_full_batch_does_not_wait_for_max_wait(encoder, make_batcher):
    # With an hour of max_wait, only reaching max_batch can release these.
    batcher = make_batcher(max_batch=3, max_wait_ms=3_600_000)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.embed(wav(float(i))) for i in range(3))), HANG_GUARD_S
    )
    assert [r[0] for r in results] == [0.0, 1.0, 2.0]
    assert encoder.batches == [[0.0, 1.0, 2.0]]


async def test_a_batch_is_handed_to_the_encoder_sorted_by_length(encoder, make_batcher):
    batcher = make_batcher(max_batch=8, max_wait_ms=0)
    first = await hold_worker(encoder, batcher)
    seconds = [3.0, 0.5, 2.0, 1.0]
    queued = [asyncio.create_task(batcher.embed(wav(float(i), s))) for i, s in enumerate(seconds)]
    while batcher.queue_depth < len(seconds):
        await asyncio.sleep(0)
    encoder.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*queued), HANG_GUARD_S)
    await first
    assert encoder.lengths[1] == sorted(int(s * SR) for s in seconds)
    assert [r[0] for r in results] == [0.0, 1.0, 2.0, 3.0]  # each caller still gets its own


async def test_full_queue_refuses_with_overloaded_and_a_retry_hint(encoder, make_batcher):
    batcher = make_batcher(max_batch=1, max_wait_ms=0, max_queue=2)
    first = await hold_worker(encoder, batcher)
    queued = [asyncio.create_task(batcher.embed(wav(float(i)))) for i in range(2)]
    while batcher.queue_depth < 2:
        await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await batcher.embed(wav(99.0))
    assert info.value.reason == "OVERLOADED"
    assert info.value.retry_after_s > 0
    assert sample(batcher.metrics, "authsvc_embed_refused_total", encoder="fake") == 1
    assert sample(batcher.metrics, "authsvc_embed_queue_depth", encoder="fake") == 2
    # Work already admitted keeps flowing.
    encoder.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued), HANG_GUARD_S)
    assert [r[0] for r in results] == [-1.0, 0.0, 1.0]
    assert 99.0 not in encoder.computed()


def test_overloaded_maps_to_resource_exhausted_with_retry_info():
    status = to_status(Overloaded("queue full", retry_after_s=1.25))
    assert status.code.value[0] == code_pb2.RESOURCE_EXHAUSTED
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    parsed = status_pb2.Status.FromString(details)
    retry = [d for d in parsed.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    info = error_details_pb2.RetryInfo()
    retry[0].Unpack(info)
    assert info.retry_delay.ToNanoseconds() == 1_250_000_000
    reasons = []
    for d in parsed.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            e = error_details_pb2.ErrorInfo()
            d.Unpack(e)
            reasons.append(e.reason)
    assert reasons == ["OVERLOADED"]


async def test_cancelled_callers_are_dropped_before_compute(encoder, make_batcher):
    batcher = make_batcher(max_batch=8, max_wait_ms=0)
    first = await hold_worker(encoder, batcher)
    doomed = asyncio.create_task(batcher.embed(wav(7.0)))
    kept = asyncio.create_task(batcher.embed(wav(8.0)))
    while batcher.queue_depth < 2:
        await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    encoder.gate.set()
    await asyncio.wait_for(asyncio.gather(first, kept), HANG_GUARD_S)
    assert 7.0 not in encoder.computed() and 8.0 in encoder.computed()
    assert sample(batcher.metrics, "authsvc_embed_dropped_total", encoder="fake", reason="cancelled") == 1


async def test_requests_past_their_deadline_are_dropped_before_compute(encoder, make_batcher):
    batcher = make_batcher(max_batch=8, max_wait_ms=0)
    first = await hold_worker(encoder, batcher)
    with pytest.raises(TimeoutError):
        await batcher.embed(wav(5.0), deadline=time.monotonic() + 0.05)
    with pytest.raises(TimeoutError):  # already past: refused without queueing
        await batcher.embed(wav(6.0), deadline=time.monotonic() - 1)
    encoder.gate.set()
    await asyncio.wait_for(first, HANG_GUARD_S)
    # Queued behind the expired request, so it completes only after that one was taken.
    assert (await asyncio.wait_for(batcher.embed(wav(9.0)), HANG_GUARD_S))[0] == 9.0
    assert 5.0 not in encoder.computed() and 6.0 not in encoder.computed()
    assert sample(batcher.metrics, "authsvc_embed_dropped_total", encoder="fake", reason="deadline") == 2


async def test_a_request_within_its_deadline_is_computed(make_batcher):
    batcher = make_batcher(max_batch=8, max_wait_ms=0)
    emb = await batcher.embed(wav(3.0), deadline=time.monotonic() + HANG_GUARD_S)
    assert emb[0] == 3.0


async def test_bad_audio_is_refused_on_submission_and_does_not_touch_a_batch(encoder, make_batcher):
    batcher = make_batcher(max_batch=8, max_wait_ms=0)
    with pytest.raises(InvalidInput):
        await batcher.embed(np.zeros(100, dtype=np.float32))  # shorter than min_samples
    with pytest.raises(InvalidInput):
        await batcher.embed(np.full(SR, np.nan, dtype=np.float32))
    assert encoder.batches == [] and batcher.queue_depth == 0


async def test_a_failing_batch_is_retried_one_by_one_so_only_the_culprit_fails(make_batcher):
    encoder = GatedEncoder(fail_on=13.0)
    batcher = make_batcher(encoder, max_batch=8, max_wait_ms=0)
    first = await hold_worker(encoder, batcher)
    tasks = [asyncio.create_task(batcher.embed(wav(v))) for v in (12.0, 13.0, 14.0)]
    while batcher.queue_depth < 3:
        await asyncio.sleep(0)
    encoder.gate.set()
    await first
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD_S)
    assert results[0][0] == 12.0 and results[2][0] == 14.0
    assert isinstance(results[1], RuntimeError)


async def test_the_event_loop_keeps_running_while_a_batch_computes(encoder, make_batcher):
    batcher = make_batcher(max_batch=8, max_wait_ms=0)
    first = await hold_worker(encoder, batcher)
    ticks = 0
    for _ in range(5):  # would never return if compute held the loop
        await asyncio.sleep(0.001)
        ticks += 1
    assert ticks == 5 and not first.done()
    encoder.gate.set()
    await asyncio.wait_for(first, HANG_GUARD_S)


async def test_close_finishes_queued_work_then_refuses_new_work(encoder, make_batcher):
    batcher = make_batcher(max_batch=2, max_wait_ms=0)
    first = await hold_worker(encoder, batcher)
    queued = [asyncio.create_task(batcher.embed(wav(float(i)))) for i in range(3)]
    while batcher.queue_depth < 3:
        await asyncio.sleep(0)
    closing = asyncio.create_task(asyncio.to_thread(batcher.close))
    await asyncio.sleep(0)
    encoder.gate.set()
    await closing
    results = await asyncio.wait_for(asyncio.gather(first, *queued), HANG_GUARD_S)
    assert [r[0] for r in results] == [-1.0, 0.0, 1.0, 2.0]
    with pytest.raises(Overloaded):
        await batcher.embed(wav(4.0))


async def test_warm_up_runs_before_the_first_request():
    encoder = GatedEncoder()
    batcher = MicroBatcher(encoder, BatchConfig(max_wait_ms=0), Metrics(), warm_up=True)
    try:
        emb = await asyncio.wait_for(batcher.embed(wav(42.0)), HANG_GUARD_S)
    finally:
        batcher.close()
    assert emb[0] == 42.0
    assert len(encoder.batches) >= 2 and 42.0 not in encoder.batches[0]  # probes came first


async def test_two_encoders_share_one_registry_under_their_own_labels():
    metrics = Metrics()
    a, b = GatedEncoder("enc-a"), GatedEncoder("enc-b")
    batchers = [MicroBatcher(e, BatchConfig(max_wait_ms=0), metrics, warm_up=False) for e in (a, b)]
    try:
        ra, rb = await asyncio.wait_for(
            asyncio.gather(batchers[0].embed(wav(1.0)), batchers[1].embed(wav(2.0, 2.0))), HANG_GUARD_S
        )
    finally:
        for batcher in batchers:
            batcher.close()
    assert ra[0] == 1.0 and rb[0] == 2.0
    assert sample(metrics, "authsvc_embed_audio_seconds_total", encoder="enc-a") == 1.0
    assert sample(metrics, "authsvc_embed_audio_seconds_total", encoder="enc-b") == 2.0
    for name in ("authsvc_embed_queue_wait_seconds_count", "authsvc_embed_compute_seconds_count"):
        assert sample(metrics, name, encoder="enc-a") == 1 and sample(metrics, name, encoder="enc-b") == 1


async def test_runner_keeps_the_old_embed_signature_and_adds_a_deadline(encoder):
    runner = EmbeddingRunner(encoder, BatchConfig(max_wait_ms=0), warm_up=False)
    try:
        assert (await runner.embed(wav(4.0)))[0] == 4.0
        assert (await runner.embed(wav(5.0), deadline=time.monotonic() + HANG_GUARD_S))[0] == 5.0
    finally:
        runner.close()


def test_metrics_endpoint_serves_the_batcher_series():
    metrics = Metrics()
    metrics.batch_size.labels("ge2e").observe(4)
    metrics.refused.labels("ge2e").inc()
    url = metrics.serve("127.0.0.1", 0)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as reply:
            text = reply.read().decode()
    finally:
        metrics.close()
    assert 'authsvc_embed_batch_size_count{encoder="ge2e"} 1.0' in text
    assert 'authsvc_embed_refused_total{encoder="ge2e"} 1.0' in text
    for name in ("queue_wait_seconds", "compute_seconds", "queue_depth", "dropped"):
        assert f"authsvc_embed_{name}" in text


def test_separate_metrics_do_not_collide():
    first, second = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    first.refused.labels("x").inc()
    assert sample(second, "authsvc_embed_refused_total", encoder="x") == 0


@pytest.mark.parametrize(
    "knobs", [{"max_batch": 0}, {"max_wait_ms": -1}, {"max_queue": 0}, {"max_wait_ms": float("nan")}]
)
def test_invalid_knobs_are_config_errors(knobs):
    with pytest.raises(ConfigError):
        BatchConfig(**knobs)


def test_measured_defaults_take_ecapa_one_at_a_time_on_the_cpu_only(encoder):
    assert default_config(encoder) == BatchConfig()  # any other encoder: the general defaults
    ecapa_cpu = GatedEncoder("ecapa")
    assert default_config(ecapa_cpu).max_batch == 1
    ecapa_cpu.device = "cuda:0"  # type: ignore[attr-defined]
    assert default_config(ecapa_cpu) == BatchConfig()


async def test_service_context_builds_its_batcher_from_the_config(tmp_path, ge2e, speech):
    from authsvc.context import ServiceConfig, build_context

    config = ServiceConfig(data_dir=tmp_path, max_batch=3, max_wait_ms=1.5, max_queue=7, warm_up=False)
    ctx = await build_context(config, encoder=ge2e)
    try:
        assert ctx.runner.batcher.config == BatchConfig(max_batch=3, max_wait_ms=1.5, max_queue=7)
        utterance = next(iter(speech.values()))[0]
        emb = await asyncio.wait_for(ctx.runner.embed(utterance), HANG_GUARD_S)
        np.testing.assert_allclose(emb, ge2e.embed_batch([utterance])[0], atol=1e-5)
        assert sample(ctx.metrics, "authsvc_embed_batch_size_count", encoder="ge2e") == 1
    finally:
        await ctx.close()
    defaults = await build_context(ServiceConfig(data_dir=tmp_path / "d", warm_up=False), encoder=ge2e)
    try:
        assert defaults.runner.batcher.config == default_config(ge2e)
    finally:
        await defaults.close()


class _MetricsOnly:
    """The part of a ServiceContext that `authsvc serve` needs for the endpoint."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        self.metrics.close()


def _serve_args(**overrides):
    import argparse

    from authsvc.cli.serve import add_serve_args

    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    args = parser.parse_args([])
    vars(args).update(overrides)
    return args


def test_serve_flags_default_to_the_measured_batching_knobs():
    args = _serve_args()
    assert args.max_batch is None and args.max_wait_ms is None  # None: default_config(encoder)
    assert args.max_queue == BatchConfig().max_queue and args.device == "auto"
    assert not args.no_metrics and args.metrics_port is None


def test_serve_prints_where_the_metrics_endpoint_is(caplog):
    from authsvc.cli.serve import _serve_metrics

    ctx = _MetricsOnly()
    with caplog.at_level("INFO", logger="authsvc"):
        asyncio.run(_serve_metrics(ctx, _serve_args(metrics_port=0)))
    try:
        (url,) = [r.args[0] for r in caplog.records if r.msg.startswith("Prometheus metrics at")]
        with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as reply:
            assert "authsvc_embed_queue_depth" in reply.read().decode()
    finally:
        asyncio.run(ctx.close())


def test_a_taken_default_metrics_port_only_warns_but_a_chosen_one_is_fatal(monkeypatch, caplog):
    import socket

    from authsvc.cli import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(serve, "DEFAULT_METRICS_PORT", port)
        ctx = _MetricsOnly()
        with caplog.at_level("WARNING", logger="authsvc"):
            asyncio.run(serve._serve_metrics(ctx, _serve_args()))
        assert any("no Prometheus endpoint" in r.getMessage() for r in caplog.records)
        assert not ctx.closed
        with pytest.raises(SystemExit, match="cannot serve metrics"):
            asyncio.run(serve._serve_metrics(ctx, _serve_args(metrics_port=port)))
        assert ctx.closed


def test_no_metrics_serves_nothing(caplog):
    from authsvc.cli.serve import _serve_metrics

    ctx = _MetricsOnly()
    with caplog.at_level("INFO", logger="authsvc"):
        asyncio.run(_serve_metrics(ctx, _serve_args(no_metrics=True)))
    assert ctx.metrics._server is None
    assert not any("Prometheus" in r.getMessage() for r in caplog.records)
