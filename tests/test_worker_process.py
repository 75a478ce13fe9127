"""Models in worker processes (authsvc.voice.worker_process): the same embeddings as in-process,
the same refusals, and a crashed or hung child costs one batch, never the service.

The children load the real GE2E weights (shipped in the resemblyzer wheel). No assertion depends
on how long anything takes; the timeouts given are only what a hung child is allowed.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from authsvc.context import ServiceConfig, build_context
from authsvc.errors import ConfigError, InvalidInput
from authsvc.metrics import Metrics
from authsvc.voice import worker_process
from authsvc.voice.batcher import BatchConfig, MicroBatcher
from authsvc.voice.device import probe_signals
from authsvc.voice.runner import EmbeddingRunner
from authsvc.voice.worker_process import ModelSpec, ProcessEncoder, WorkerLost, encoder_spec

SR = 16000
CLI = [sys.executable, "-m", "authsvc.cli.main"]
HANG_GUARD_S = 60


#: As the ONNX backend is held to: the child computes with one torch thread, the test process with
#: whatever thread count the suite left it, and summation order moves the last float bits. A
#: different waveform's embedding (another caller's) is far below this.
SAME_COSINE = 0.9999


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    got, want = np.atleast_2d(got), np.atleast_2d(want)
    assert got.shape == want.shape
    cosine = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= SAME_COSINE, cosine


def ge2e_spec() -> ModelSpec:
    return encoder_spec("ge2e", model_dir=None, device="cpu", threads=1)


@pytest.fixture(scope="module")
def pooled() -> Iterator[ProcessEncoder]:
    encoder = ProcessEncoder(ge2e_spec(), reply_timeout_s=HANG_GUARD_S)
    yield encoder
    encoder.close()


def waves(*seconds: float) -> list[np.ndarray]:
    return probe_signals(SR, seconds)


def test_embeddings_are_the_in_process_encoders(pooled, ge2e):
    wavs = waves(0.5, 2.3, 7.0, 31.0)
    assert (pooled.encoder_id, pooled.version, pooled.embedding_dim) == (
        ge2e.encoder_id,
        ge2e.version,
        ge2e.embedding_dim,
    )
    assert_same(pooled.embed_batch(wavs), ge2e.embed_batch(wavs))
    # One at a time as well: the shared block is reused, nothing of the last batch leaks in.
    for w in wavs:
        assert_same(pooled.embed_batch([w])[0], ge2e.embed_batch([w])[0])


def test_audio_the_model_refuses_is_the_same_invalid_input(pooled, ge2e):
    short = np.zeros(ge2e.min_samples - 1, np.float32)
    with pytest.raises(InvalidInput) as in_process:
        ge2e.embed_batch([short])
    with pytest.raises(InvalidInput) as in_child:
        pooled.embed_batch([short])
    assert (in_child.value.field, in_child.value.description) == (
        in_process.value.field,
        in_process.value.description,
    )
    loud = np.full(SR, 40.0, np.float32)  # unscaled integer PCM
    with pytest.raises(InvalidInput, match="audio"):
        pooled.embed_batch([loud])
    # The child still serves after refusing.
    assert pooled.embed_batch(waves(1.0)).shape == (1, ge2e.embedding_dim)


def test_a_batch_larger_than_the_shared_block_grows_it(monkeypatch, ge2e):
    monkeypatch.setattr(worker_process, "INITIAL_BYTES", 4096)  # less than one second of audio
    encoder = ProcessEncoder(ge2e_spec())
    try:
        first = encoder._workers[0].shm.size
        wavs = waves(3.0, 9.0)
        assert_same(encoder.embed_batch(wavs), ge2e.embed_batch(wavs))
        assert encoder._workers[0].shm.size > first
    finally:
        encoder.close()


async def test_a_killed_child_costs_no_answer_and_is_replaced(ge2e):
    encoder = ProcessEncoder(ge2e_spec(), reply_timeout_s=HANG_GUARD_S)
    runner = EmbeddingRunner(encoder, BatchConfig(), Metrics(), warm_up=False)
    try:
        (before,) = encoder.pids
        wav = waves(2.0)[0]
        os.kill(before, signal.SIGKILL)
        await asyncio.to_thread(encoder._workers[0].proc.join, HANG_GUARD_S)
        # Found dead before its next batch: replaced, and the caller is answered as before.
        got = await asyncio.wait_for(runner.embed(wav), HANG_GUARD_S)
        assert_same(got, ge2e.embed_batch([wav])[0])
        assert encoder.pids and encoder.pids[0] != before
    finally:
        runner.close()
        encoder.close()


async def test_a_child_killed_mid_batch_costs_no_answer(ge2e):
    encoder = ProcessEncoder(ge2e_spec(), reply_timeout_s=HANG_GUARD_S)
    runner = EmbeddingRunner(encoder, BatchConfig(), Metrics(), warm_up=False)
    try:
        (before,) = encoder.pids
        os.kill(before, signal.SIGSTOP)  # holds the batch in flight
        wav = waves(2.0)[0]
        task = asyncio.create_task(runner.embed(wav))
        while encoder._idle.qsize():  # until the batcher's thread holds the worker
            await asyncio.sleep(0.01)
        os.kill(before, signal.SIGKILL)
        # The batch fails on the dead child; the batcher retries its item on the replacement.
        got = await asyncio.wait_for(task, HANG_GUARD_S)
        assert_same(got, ge2e.embed_batch([wav])[0])
        assert encoder.pids[0] != before
    finally:
        runner.close()
        encoder.close()


def test_a_hung_child_fails_its_batch_within_the_reply_timeout_and_is_replaced(ge2e):
    encoder = ProcessEncoder(ge2e_spec(), reply_timeout_s=2.0)
    try:
        (before,) = encoder.pids
        os.kill(before, signal.SIGSTOP)  # alive, never answering
        wav = waves(1.5)[0]
        with pytest.raises(WorkerLost, match="no answer"):
            encoder.embed_batch([wav])
        (after,) = encoder.pids
        assert after != before
        assert_same(encoder.embed_batch([wav]), ge2e.embed_batch([wav]))
    finally:
        encoder.close()
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)  # the stopped child was killed, not left behind


def test_no_caller_audio_is_left_in_dev_shm_and_close_stops_the_children(ge2e):
    encoder = ProcessEncoder(ge2e_spec())
    name = encoder._workers[0].shm.name
    procs = [w.proc for w in encoder._workers]
    wav = waves(2.0)[0]
    assert_same(encoder.embed_batch([wav]), ge2e.embed_batch([wav]))
    # Mapped by both processes and unlinked at once: no name for anyone to open, nothing left
    # behind if every process of the service is killed.
    assert not Path("/dev/shm", name).exists()
    encoder.close()
    assert not any(p.is_alive() for p in procs)
    with pytest.raises(RuntimeError, match="closed"):
        encoder.embed_batch(waves(1.0))


def test_a_stale_reply_is_never_taken_for_the_next_batchs_embedding(ge2e):
    encoder = ProcessEncoder(ge2e_spec())
    try:
        worker = encoder._workers[0]
        (before,) = encoder.pids
        # An answer the parent did not ask for now (as one that came after its timeout would be).
        worker.conn.send(("embed", 999, [SR]))
        wav = waves(2.5)[0]
        with pytest.raises(WorkerLost, match="out of step"):
            encoder.embed_batch([wav])
        assert encoder.pids[0] != before  # that child was ended and replaced
        assert_same(encoder.embed_batch([wav]), ge2e.embed_batch([wav]))
    finally:
        encoder.close()


def test_close_during_a_batch_ends_that_batch_and_leaves_no_child():
    others = set(mp.active_children())  # other tests' (the module's pooled encoder)
    encoder = ProcessEncoder(ge2e_spec(), reply_timeout_s=HANG_GUARD_S)
    (pid,) = encoder.pids
    procs = [w.proc for w in encoder._workers]
    os.kill(pid, signal.SIGSTOP)  # the batch below stays in flight
    outcome: list[BaseException | np.ndarray] = []

    def embed() -> None:
        try:
            outcome.append(encoder.embed_batch(waves(1.0)))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=embed)
    thread.start()
    while encoder._idle.qsize() and thread.is_alive():  # until the thread holds the worker
        threading.Event().wait(0.01)
    encoder.close(timeout_s=1.0)
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive()
    assert isinstance(outcome[0], RuntimeError)  # WorkerLost or "closed", never an embedding
    assert not any(p.is_alive() for p in procs)
    assert set(mp.active_children()) <= others  # nothing restarted behind the close


def test_a_worker_that_does_not_start_in_time_is_a_config_error_and_leaves_no_child():
    others = set(mp.active_children())
    with pytest.raises(ConfigError, match="did not start"):
        ProcessEncoder(ge2e_spec(), start_timeout_s=0.05)
    assert set(mp.active_children()) <= others


def test_a_model_that_cannot_load_is_a_config_error_at_start(tmp_path):
    with pytest.raises(ConfigError, match=r"WeSpeaker model folder|config\.yaml"):
        ProcessEncoder(encoder_spec("wespeaker", model_dir=tmp_path, device="cpu", threads=1))
    with pytest.raises(ConfigError, match="unknown model kind"):
        ModelSpec("os.system")
    with pytest.raises(ConfigError, match="workers"):
        ProcessEncoder(ge2e_spec(), workers=0)


class _TwoAtOnce:
    """A fake that says it computes two batches at once, and proves it: the first batch waits
    at a gate that only the second one opens."""

    encoder_id = "fake"
    version = "test"
    sample_rate = SR
    embedding_dim = 1
    min_samples = SR // 4
    concurrency = 2

    def __init__(self) -> None:
        self.first_in = threading.Event()
        self.second_in = threading.Event()
        self.overlapped = False

    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        if not self.first_in.is_set():
            self.first_in.set()
            # With one batcher thread the second batch cannot start until this one returns.
            self.overlapped = self.second_in.wait(10)
        else:
            self.second_in.set()
        return np.ones((len(wavs), 1), np.float32)


async def test_the_batcher_computes_as_many_batches_at_once_as_the_encoder_has_workers():
    encoder = _TwoAtOnce()
    batcher = MicroBatcher(encoder, BatchConfig(max_batch=1), Metrics(), warm_up=False)
    try:
        first = asyncio.create_task(batcher.embed(np.ones(SR, np.float32)))
        assert await asyncio.to_thread(encoder.first_in.wait, HANG_GUARD_S)
        second = batcher.embed(np.ones(SR, np.float32))
        results = await asyncio.wait_for(asyncio.gather(first, second), HANG_GUARD_S)
        assert [r.tolist() for r in results] == [[1.0], [1.0]]
        assert encoder.overlapped, "the second batch never ran beside the first"
    finally:
        batcher.close()


async def test_the_service_context_runs_its_encoder_in_a_worker_process_and_stops_it(tmp_path, ge2e):
    ctx = await build_context(ServiceConfig(data_dir=tmp_path / "data", warm_up=False))
    try:
        assert isinstance(ctx.encoder, ProcessEncoder)
        assert ctx.worker_models == [ctx.encoder]
        procs = [w.proc for w in ctx.encoder._workers]
        wav = waves(2.0)[0]
        assert_same(await ctx.runner.embed(wav), ge2e.embed_batch([wav])[0])
    finally:
        await ctx.close()
    assert not any(p.is_alive() for p in procs)


async def test_encoder_workers_zero_keeps_the_model_in_process_and_negative_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="encoder_workers"):
        await build_context(ServiceConfig(data_dir=tmp_path / "bad", encoder_workers=-1))
    ctx = await build_context(ServiceConfig(data_dir=tmp_path / "data", warm_up=False, encoder_workers=0))
    try:
        assert not isinstance(ctx.encoder, ProcessEncoder)
        assert ctx.worker_models == []
    finally:
        await ctx.close()


def test_serve_refuses_bad_worker_and_switch_settings(tmp_path):
    bad_switch = subprocess.run(
        [*CLI, "serve", "--data-dir", str(tmp_path), "--gil-switch-ms", "0"], capture_output=True, text=True
    )
    assert bad_switch.returncode == 2
    assert "--gil-switch-ms" in bad_switch.stderr and "Traceback" not in bad_switch.stderr
    bad_workers = subprocess.run(
        [*CLI, "serve", "--data-dir", str(tmp_path), "--no-metrics", "--encoder-workers", "-1"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert bad_workers.returncode == 1
    assert "encoder_workers must be 0 or more" in bad_workers.stderr
    assert "Traceback" not in bad_workers.stderr
