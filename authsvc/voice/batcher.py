"""Dynamic micro-batching of embedding requests from all live sessions.

Sessions `await batcher.embed(wav)`; a worker thread per encoder packs queued
requests into one `embed_batch` call, the way Triton's dynamic batcher and Ray
Serve's `@serve.batch` do. Two knobs, as there: a batch is formed as soon as
`max_batch` requests wait or the oldest has waited `max_wait_ms`. While a
batch computes, new requests queue, so under load batches fill by themselves
and `max_wait_ms` only matters when the service is nearly idle.

Why a thread, not an asyncio task: compute must stay off the event loop, and
torch releases the GIL during a forward pass, so the loop keeps serving
streams while the worker computes. Results go back with one
`call_soon_threadsafe` per loop and batch, not one per request.

Back-pressure: the queue is bounded; a request that would exceed `max_queue`
is refused at once with `Overloaded` (RESOURCE_EXHAUSTED + RetryInfo) instead
of growing memory and latency without bound. Requests whose deadline passed or
whose caller stopped waiting (stream cancelled) are dropped before compute;
requests already in a batch complete and are delivered.

Within a batch, requests are handed to the encoder in order of length; an
encoder that pads (ECAPA) cuts the batch into sub-batches of similar length.
Across batches the order is first-in first-out, so no request can be passed
over repeatedly for having an unusual length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from authsvc.errors import ConfigError, Overloaded
from authsvc.metrics import Metrics
from authsvc.voice.encoder import MIN_AUDIO_SECONDS, SpeakerEncoder, check_wavs

log = logging.getLogger(__name__)

#: Bounds on the retry hint sent with RESOURCE_EXHAUSTED: soon enough to use
#: capacity that frees up, late enough not to hammer a saturated server.
MIN_RETRY_S = 0.1
MAX_RETRY_S = 10.0


@dataclass(frozen=True)
class BatchConfig:
    """The batcher's knobs; defaults from bench/results/batching.json (2 CPU cores, GE2E).

    max_batch: most requests per encoder call. Chosen as the largest batch
        that computes within 150 ms (half of the 300 ms decision budget, since
        every member of a batch waits for all of it): 8 GE2E requests of 3-8 s
        take 138 ms on one CPU thread, 16 take 266 ms. Throughput is within
        2 % of the best batch size there (276 vs 281 audio s/s of speech; one
        at a time: 176).
    max_wait_ms: longest the oldest request waits for company. 0: while a
        batch computes, the next one fills by itself; waiting only added
        latency (2 ms and 10 ms lowered throughput at 8 requesters).
    max_queue: requests waiting (not yet computing) before new ones are
        refused: at ~55 GE2E requests/s, 1024 is ~20 s of work, past any
        caller's patience, so refusing beyond it loses nothing useful.
    """

    max_batch: int = 8
    max_wait_ms: float = 0.0
    max_queue: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if not self.max_wait_ms >= 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ConfigError(f"max_queue must be a positive integer, got {self.max_queue!r}")


def default_config(encoder: SpeakerEncoder) -> BatchConfig:
    """The measured defaults for `encoder` on its device (bench/results/batching.json).

    `BatchConfig()` everywhere except ECAPA on the CPU: there a batch buys no
    throughput (its items run one after another, since padding would cost
    more than it saves) while every item's result waits for the whole batch,
    so requests are taken one at a time.
    """
    device = str(getattr(encoder, "device", "cpu"))
    if encoder.encoder_id == "ecapa" and device.startswith("cpu"):
        return BatchConfig(max_batch=1, max_wait_ms=0.0)
    return BatchConfig()


class _Request:
    __slots__ = ("abandoned", "deadline", "enqueued", "future", "loop", "wav")

    def __init__(
        self,
        wav: np.ndarray,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[np.ndarray],
    ) -> None:
        self.wav = wav
        self.deadline = deadline
        self.loop = loop
        self.future = future
        self.enqueued = time.monotonic()
        # Why the caller stopped waiting ("deadline" or "cancelled"), set on
        # the event loop and read by the worker: a single reference store,
        # atomic under the GIL, so no lock is needed.
        self.abandoned: str | None = None


def _resolve(items: list[tuple[asyncio.Future[np.ndarray], np.ndarray | BaseException]]) -> None:
    """Runs on the requests' event loop: completes their futures unless the caller gave up."""
    for future, outcome in items:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class MicroBatcher:
    """Batches `embed` calls for one encoder; see the module docstring for the policy."""

    def __init__(
        self,
        encoder: SpeakerEncoder,
        config: BatchConfig | None = None,
        metrics: Metrics | None = None,
        *,
        warm_up: bool = True,
    ) -> None:
        self.encoder = encoder
        self.config = config or BatchConfig()
        self.metrics = metrics or Metrics()
        self._label = encoder.encoder_id
        self._min_samples = int(getattr(encoder, "min_samples", MIN_AUDIO_SECONDS * encoder.sample_rate))
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # Exponential average of compute seconds per request, for the retry hint.
        self._per_item_s = 0.05
        self.metrics.queue_depth.labels(self._label).set(0)
        # One worker thread per batch the encoder can compute at once: an encoder in worker
        # processes (authsvc.voice.worker_process) says how many; an in-process one computes one.
        workers = int(getattr(encoder, "concurrency", 1))
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(warm_up and i == 0,),
                name=f"embed-{encoder.encoder_id}-{i}" if workers > 1 else f"embed-{encoder.encoder_id}",
                daemon=True,
            )
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the event-loop side -------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def embed(self, wav: np.ndarray, *, deadline: float | None = None) -> np.ndarray:
        """The (D,) embedding of `wav`, exactly as `encoder.embed_batch([wav])[0]` would give.

        `deadline` is a `time.monotonic()` instant: past it the call raises
        `TimeoutError` and, if still queued, the request is never computed.
        Raises `Overloaded` when the queue is full, `InvalidInput` for audio
        the encoder refuses (checked here, so one bad request cannot fail a
        whole batch).
        """
        (arr,) = check_wavs([wav], min_samples=self._min_samples)
        if deadline is not None and deadline <= time.monotonic():
            self.metrics.dropped.labels(self._label, "deadline").inc()
            raise TimeoutError("deadline passed before the embedding was requested")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        request = _Request(arr, deadline, loop, future)
        with self._cond:
            if self._closed:
                raise Overloaded("the embedding service is shutting down", retry_after_s=MIN_RETRY_S)
            if len(self._queue) >= self.config.max_queue:
                self.metrics.refused.labels(self._label).inc()
                raise Overloaded(
                    f"{self._label} embedding queue is full ({self.config.max_queue} waiting)",
                    retry_after_s=self._retry_after(),
                )
            self._queue.append(request)
            self.metrics.queue_depth.labels(self._label).set(len(self._queue))
            self._cond.notify()
        try:
            if deadline is None:
                return await future
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await future
        except TimeoutError:
            request.abandoned = "deadline"
            raise
        except BaseException:
            # Cancelled stream or loop shutting down: the worker drops the
            # request if it has not taken it yet.
            request.abandoned = "cancelled"
            raise

    def _retry_after(self) -> float:
        """Roughly how long until the queue has drained to half its bound."""
        estimate = 0.5 * self.config.max_queue * self._per_item_s
        return min(MAX_RETRY_S, max(MIN_RETRY_S, estimate))

    def close(self, timeout_s: float = 5.0) -> None:
        """Refuse new work, let the worker finish what is queued, and stop it."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if threading.current_thread() is not thread:
                thread.join(timeout_s)

    # -- the worker thread ---------------------------------------------------

    def _run(self, warm_up: bool) -> None:
        if warm_up:
            from authsvc.voice.device import warm_up as do_warm_up

            try:
                do_warm_up(self.encoder)
            except Exception:
                log.exception("warm-up of %s failed; the first requests may be slow", self._label)
        while True:
            try:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._compute(batch)
            except Exception:  # a bug here must not silently stop all embedding
                log.exception("%s batcher worker error", self._label)

    def _next_batch(self) -> list[_Request] | None:
        """Blocks until a batch is due; [] when everything taken was dropped, None once closed and empty."""
        max_batch = self.config.max_batch
        max_wait = self.config.max_wait_ms / 1000.0
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            while len(self._queue) < max_batch and not self._closed:
                remaining = self._queue[0].enqueued + max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[_Request] = []
            while self._queue and len(taken) < max_batch:
                taken.append(self._queue.popleft())
            self.metrics.queue_depth.labels(self._label).set(len(self._queue))
        return self._drop_dead(taken)

    def _drop_dead(self, taken: list[_Request]) -> list[_Request]:
        """Removes requests nobody waits for any more, failing the expired ones."""
        now = time.monotonic()
        live: list[_Request] = []
        expired: list[_Request] = []
        for request in taken:
            if request.abandoned is not None:
                self.metrics.dropped.labels(self._label, request.abandoned).inc()
            elif request.deadline is not None and request.deadline <= now:
                self.metrics.dropped.labels(self._label, "deadline").inc()
                expired.append(request)
            else:
                live.append(request)
        if expired:
            self._deliver(
                expired, [TimeoutError("deadline passed before the embedding was computed") for _ in expired]
            )
        return live

    def _compute(self, batch: list[_Request]) -> None:
        batch.sort(key=lambda r: r.wav.shape[0])
        started = time.monotonic()
        for request in batch:
            self.metrics.queue_wait.labels(self._label).observe(started - request.enqueued)
        self.metrics.batch_size.labels(self._label).observe(len(batch))
        outcomes: Sequence[np.ndarray | BaseException]
        try:
            # Copies: a caller keeping its row must not pin the whole batch array.
            outcomes = [row.copy() for row in self.encoder.embed_batch([r.wav for r in batch])]
        except Exception:
            # Inputs were validated on submission, so this is unexpected: embed
            # one by one so a single poisonous request fails only itself.
            log.exception("%s batch of %d failed; retrying items one by one", self._label, len(batch))
            outcomes = [self._retry_one(r) for r in batch]
        elapsed = time.monotonic() - started
        self.metrics.compute.labels(self._label).observe(elapsed)
        self.metrics.audio_seconds.labels(self._label).inc(
            sum(r.wav.shape[0] for r in batch) / self.encoder.sample_rate
        )
        self._per_item_s = 0.8 * self._per_item_s + 0.2 * (elapsed / len(batch))
        self._deliver(batch, outcomes)

    def _retry_one(self, request: _Request) -> np.ndarray | BaseException:
        # A failed batch may have taken long (a hung worker process): its callers that gave
        # up meanwhile are not computed again.
        if request.abandoned is not None:
            return TimeoutError("the caller stopped waiting")
        if request.deadline is not None and request.deadline <= time.monotonic():
            return TimeoutError("deadline passed before the embedding was computed")
        return self._embed_one(request.wav)

    def _embed_one(self, wav: np.ndarray) -> np.ndarray | BaseException:
        try:
            return self.encoder.embed_batch([wav])[0]
        except Exception as exc:
            return exc

    @staticmethod
    def _deliver(batch: Sequence[_Request], outcomes: Sequence[np.ndarray | BaseException]) -> None:
        per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[np.ndarray], object]]] = {}
        for request, outcome in zip(batch, outcomes, strict=True):
            per_loop.setdefault(request.loop, []).append((request.future, outcome))
        for loop, items in per_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is left to tell
                loop.call_soon_threadsafe(_resolve, items)
