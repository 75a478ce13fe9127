"""A model in worker processes of its own: the event loop and the model stop sharing one GIL.

In the server's own thread a GE2E batch computed 2.4x slower than the encoder
alone (bench/load.py at 200 calls: 32 ms against 13 ms per batch), because
every torch op hands the GIL back and then waits for the event loop, gRPC's
threads and the store's thread to let go of it. A child process has its own
interpreter, so the operating system, not the GIL, shares the cores.

`ProcessEncoder` is a `SpeakerEncoder` (or a countermeasure: anything with
`embed_batch`) whose model runs in `workers` spawned children, each loading
the model itself from a `ModelSpec` (so nothing unpicklable crosses, and the
children never inherit the server's gRPC threads or sockets, as a fork would).
`concurrency` tells the batcher how many batches may compute at once.

Transfer: each child has a `multiprocessing.shared_memory` block. The parent
writes a batch's waveforms into it and sends only their lengths down the
pipe; the child embeds views of the block (no copy, no pickling of audio) and
writes the embeddings back after the input. The block grows when a batch
does not fit. Callers' audio passes through it, so it is created mode 0600 (only
the service's user can map it) and unlinked when replaced or closed.

Faults: a model that fails to load raises `ConfigError` at start, as it would
in-process. Audio the model refuses comes back as the same `InvalidInput`. A
child that dies or stops answering within `reply_timeout_s` fails that call
with `RuntimeError` and is replaced before the next one, so one crash costs
one batch (which the batcher then retries item by item), not the service.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from authsvc.errors import ConfigError, InvalidInput

log = logging.getLogger(__name__)

#: The loaders a child may run: "module:function" -> the model. Named, not passed as
#: callables, so a spec is plain data.
LOADERS = {
    "encoder": "authsvc.voice.registry:load_encoder",
    "countermeasure": "authsvc.voice.countermeasure:load_countermeasure",
}
#: First shared block: 8 requests of 30 s at 16 kHz, float32 (grown on demand).
INITIAL_BYTES = 8 * 30 * 16000 * 4
#: A block grown past this (long enrollments) goes back to INITIAL_BYTES on a small batch.
SHRINK_ABOVE_BYTES = 4 * INITIAL_BYTES
_ALIGN = 64


@dataclass(frozen=True)
class ModelSpec:
    """What a child loads: LOADERS[kind](**kwargs), then float16 when `half` (CUDA only)."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    half: bool = False
    # torch's intra-op threads in the child (a loader without a threads argument would
    # otherwise get one per core, beside the event loop's).
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LOADERS:
            raise ConfigError(f"unknown model kind {self.kind!r}; known: {', '.join(LOADERS)}")


class WorkerLost(RuntimeError):
    """The child died or stopped answering: it is replaced before the next batch."""


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


# -- the child ------------------------------------------------------------------------------


def _load(spec: ModelSpec) -> Any:
    if spec.torch_threads is not None:
        import torch

        torch.set_num_threads(spec.torch_threads)
    module, name = LOADERS[spec.kind].split(":")
    model = getattr(importlib.import_module(module), name)(**spec.kwargs)
    if spec.half:
        from authsvc.voice.device import enable_half

        enable_half(model)
    return model


def _describe(model: Any) -> dict[str, Any]:
    return {
        "encoder_id": model.encoder_id,
        "version": model.version,
        "sample_rate": int(model.sample_rate),
        "embedding_dim": int(model.embedding_dim),
        "min_samples": int(getattr(model, "min_samples", 0)),
        "device": str(getattr(model, "device", "cpu")),
    }


def _child_main(conn: Connection, spec: ModelSpec) -> None:
    # The parent decides when the service stops (it ends this child through the pipe, and the
    # pipe's EOF ends it if the parent dies): a Ctrl-C or SIGTERM to the process group must not
    # kill the model under calls that are still being answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        model = _load(spec)
        conn.send(("ready", 0, _describe(model)))
    except ConfigError as exc:
        conn.send(("config", 0, str(exc)))
        return
    except Exception as exc:  # reported to the parent, which raises it at start
        conn.send(("error", 0, f"{type(exc).__name__}: {exc}"))
        return
    shm: SharedMemory | None = None
    try:
        while True:
            try:
                op, seq, arg = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if op == "close":
                return
            if op == "map":
                if shm is not None:
                    shm.close()
                shm = SharedMemory(name=arg)
                conn.send(("mapped", seq, shm.size))
            elif op == "embed" and shm is not None:
                kind, *rest = _embed_shared(model, shm, arg)
                conn.send((kind, seq, *rest))
    finally:
        if shm is not None:
            shm.close()


def _embed_shared(model: Any, shm: SharedMemory, lengths: Sequence[int]) -> tuple:
    total = sum(lengths)
    flat = np.ndarray((total,), np.float32, buffer=shm.buf)
    bounds = np.cumsum([0, *lengths])
    try:
        out = np.asarray(model.embed_batch([flat[a:b] for a, b in itertools.pairwise(bounds)]), np.float32)
        rows, dim = out.shape
        offset = _aligned(total * 4)
        if offset + out.nbytes > shm.size:
            return ("error", f"embeddings ({out.nbytes} bytes) do not fit the shared block")
        np.ndarray((rows, dim), np.float32, buffer=shm.buf, offset=offset)[:] = out
        return ("ok", rows, dim)
    except InvalidInput as exc:
        return ("invalid", exc.field, exc.description)
    except Exception as exc:  # the parent fails this batch; the child keeps serving
        return ("error", f"{type(exc).__name__}: {exc}")
    finally:
        del flat  # no view may outlive the call: the block is closed on remap


# -- the parent -----------------------------------------------------------------------------


class _Worker:
    """One child process, its pipe and its shared block; used by one thread at a time.

    Every request carries a sequence number that its reply must repeat, and a reply that is
    late, missing, of the wrong kind or shape ends the child (`WorkerLost`): a stale answer
    can never be read as the embedding of the request after it."""

    def __init__(self, spec: ModelSpec, index: int, start_timeout_s: float, reply_timeout_s: float) -> None:
        self.spec = spec
        self.index = index
        self.start_timeout_s = start_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.proc: Any = None
        self.conn: Connection | None = None
        self.shm: SharedMemory | None = None
        self.meta: dict[str, Any] = {}
        self._seq = 0

    def start(self) -> dict[str, Any]:
        """Spawns the child and waits for its model; any failure leaves no child behind."""
        ctx = mp.get_context("spawn")  # never fork a process that runs gRPC's threads
        parent, child = ctx.Pipe()
        self.meta = {}
        self._seq = 0
        self.proc = ctx.Process(
            target=_child_main,
            args=(child, self.spec),
            name=f"authsvc-{self.spec.kind}-{self.index}",
            daemon=True,
        )
        try:
            self.proc.start()
            child.close()
            self.conn = parent
            reply = self._reply(0, self.start_timeout_s, "loading the model")
            if reply[0] == "config":
                raise ConfigError(reply[2])
            if reply[0] != "ready":
                raise ConfigError(f"the {self.spec.kind} worker could not load its model: {reply[2]}")
            self._map(INITIAL_BYTES)
        except BaseException:
            self.stop(timeout_s=1.0)
            raise
        self.meta = reply[2]
        return self.meta

    def _send(self, op: str, arg: Any) -> int:
        assert self.conn is not None
        self._seq += 1
        try:
            self.conn.send((op, self._seq, arg))
        except (OSError, ValueError) as exc:
            raise WorkerLost(f"the {self.spec.kind} worker's pipe is closed ({op})") from exc
        return self._seq

    def _reply(self, seq: int, timeout_s: float, doing: str, *kinds: str) -> tuple:
        """The reply to request `seq`; a missing, late or unexpected one ends the child."""
        assert self.conn is not None
        try:
            if not self.conn.poll(timeout_s):
                raise WorkerLost(f"the {self.spec.kind} worker gave no answer in {timeout_s:g} s ({doing})")
            reply = self.conn.recv()
        except (EOFError, OSError) as exc:
            code = self.proc.exitcode if self.proc is not None else None
            raise WorkerLost(f"the {self.spec.kind} worker exited ({doing}; exit code {code})") from exc
        if (
            not isinstance(reply, tuple)
            or len(reply) < 2
            or reply[1] != seq
            or (kinds and reply[0] not in kinds)
        ):
            self.stop(timeout_s=0.0)
            raise WorkerLost(f"the {self.spec.kind} worker answered out of step ({doing}); it was ended")
        return reply

    def _map(self, size: int) -> None:
        """A new shared block of `size` bytes, backed now (so a full /dev/shm is an error here,
        not a SIGBUS on the first write), mapped by the child, then unlinked: nothing of the
        callers' audio is left in /dev/shm, whatever happens to the processes later."""
        shm = SharedMemory(create=True, size=size)
        try:
            try:
                os.posix_fallocate(shm._fd, 0, size)  # type: ignore[attr-defined]
            except OSError as exc:
                raise RuntimeError(f"cannot back a {size}-byte shared block in /dev/shm: {exc}") from exc
            seq = self._send("map", shm.name)
            self._reply(seq, self.reply_timeout_s, "mapping its shared block", "mapped")
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        shm.unlink()
        self._release_block()
        self.shm = shm

    def _release_block(self) -> None:
        if self.shm is not None:
            self.shm.close()
            self.shm = None

    def embed(self, arrays: Sequence[np.ndarray], dim: int) -> np.ndarray:
        lengths = [int(a.shape[0]) for a in arrays]
        total = sum(lengths)
        offset = _aligned(total * 4)
        needed = offset + len(arrays) * max(dim, 1) * 4
        if self.shm is None or needed > self.shm.size:
            self._map(max(needed, 2 * (self.shm.size if self.shm is not None else INITIAL_BYTES)))
        elif self.shm.size > SHRINK_ABOVE_BYTES and needed <= INITIAL_BYTES:
            self._map(INITIAL_BYTES)  # one long batch does not pin its memory for good
        assert self.shm is not None
        flat = np.ndarray((total,), np.float32, buffer=self.shm.buf)
        start = 0
        for a, n in zip(arrays, lengths, strict=True):
            flat[start : start + n] = a
            start += n
        del flat
        seq = self._send("embed", lengths)
        doing = f"embedding a batch of {len(arrays)}"
        reply = self._reply(seq, self.reply_timeout_s, doing, "ok", "invalid", "error")
        if reply[0] == "invalid":
            raise InvalidInput(reply[2], reply[3])
        if reply[0] == "error":
            raise RuntimeError(f"the {self.spec.kind} worker failed a batch: {reply[2]}")
        rows, out_dim = reply[2], reply[3]
        if (rows, out_dim) != (len(arrays), dim):
            self.stop(timeout_s=0.0)
            raise WorkerLost(f"the {self.spec.kind} worker answered {rows}x{out_dim} for {len(arrays)}x{dim}")
        return np.ndarray((rows, out_dim), np.float32, buffer=self.shm.buf, offset=offset).copy()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def end_process(self) -> None:
        """Kills the child without touching the shared block (another thread may be using it):
        that thread's wait then ends with WorkerLost."""
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("close", 0, None))
        if self.proc is not None:
            self.proc.join(timeout_s)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5.0)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._release_block()


class ProcessEncoder:
    """`spec`'s model in `workers` child processes, behind the model's own `embed_batch`."""

    def __init__(
        self,
        spec: ModelSpec,
        workers: int = 1,
        *,
        start_timeout_s: float = 600.0,
        reply_timeout_s: float = 120.0,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        self.spec = spec
        self.concurrency = workers
        self._workers = [_Worker(spec, i, start_timeout_s, reply_timeout_s) for i in range(workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        # The children load their models at the same time.
        errors: list[BaseException] = []

        def start(w: _Worker) -> None:
            try:
                w.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(w,), daemon=True) for w in self._workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for w in self._workers:
                w.stop(timeout_s=1.0)
            first = errors[0]
            if isinstance(first, ConfigError):
                raise first
            # A child killed while loading, a start timeout, no /dev/shm: still the service's
            # configuration or machine, told as one (not a traceback) by `authsvc serve`.
            raise ConfigError(f"the {spec.kind} worker process did not start: {first}") from first
        meta = self._workers[0].meta
        self.encoder_id: str = meta["encoder_id"]
        self.version: str = meta["version"]
        self.sample_rate: int = meta["sample_rate"]
        self.embedding_dim: int = meta["embedding_dim"]
        self.min_samples: int = meta["min_samples"]
        self.device: str = meta["device"]
        for w in self._workers:
            self._idle.put(w)
        log.info(
            "%s %s runs in %d worker process%s (pids %s)",
            self.encoder_id,
            self.version,
            workers,
            "" if workers == 1 else "es",
            ", ".join(str(w.proc.pid) for w in self._workers),
        )

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """As the model's own `embed_batch` (checked the same way, in the child)."""
        arrays = [np.ascontiguousarray(w, dtype=np.float32) for w in wavs]
        if any(a.ndim != 1 for a in arrays):
            raise InvalidInput("audio", "expected 1-D waveforms")
        if not arrays:
            return np.zeros((0, self.embedding_dim), np.float32)
        if self._closed:
            raise RuntimeError(f"the {self.encoder_id} worker processes were closed")
        worker = self._idle.get()
        try:
            if self._closed:
                raise RuntimeError(f"the {self.encoder_id} worker processes were closed")
            if not worker.alive:
                self._restart(worker)
            return worker.embed(arrays, self.embedding_dim)
        except WorkerLost:
            if self._closed:
                raise
            # Dead, hung or out of step: replaced now, so the next batch finds a working child.
            log.exception("%s worker %d failed; restarting it", self.encoder_id, worker.index)
            try:
                self._restart(worker)
            except Exception:
                log.exception(
                    "%s worker %d did not restart; the next batch tries again", self.encoder_id, worker.index
                )
            raise
        finally:
            self._idle.put(worker)

    def _restart(self, worker: _Worker) -> None:
        worker.stop(timeout_s=1.0)
        started = time.perf_counter()
        meta = worker.start()
        if self._closed:  # closed while it loaded: nothing may outlive close()
            worker.stop(timeout_s=1.0)
            raise RuntimeError(f"the {self.encoder_id} worker processes were closed")
        if (meta["encoder_id"], meta["version"]) != (self.encoder_id, self.version):
            worker.stop()
            raise RuntimeError("a restarted worker loaded a different model; its embeddings are not used")
        log.warning(
            "%s worker %d restarted in %.1f s (pid %d)",
            self.encoder_id,
            worker.index,
            time.perf_counter() - started,
            worker.proc.pid,
        )

    def close(self, timeout_s: float = 10.0) -> None:
        """Stops the children. A worker still computing is first taken back from its thread
        (or, past `timeout_s`, its child is killed so that thread's wait ends), so no block is
        unmapped under a thread that is writing or reading it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout_s
        taken: list[_Worker] = []
        for _ in self._workers:
            try:
                taken.append(self._idle.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                for w in self._workers:
                    if w not in taken:
                        w.end_process()
                try:
                    taken.append(self._idle.get(timeout=timeout_s))
                except queue.Empty:
                    break
        for w in taken:
            w.stop()
        if len(taken) < len(self._workers):
            log.error(
                "%s: a worker thread did not give its worker back; its process was killed", self.spec.kind
            )


def encoder_spec(
    name: str, *, model_dir: str | Path | None, device: str, threads: int | None, half: bool = False
) -> ModelSpec:
    """The spec of `authsvc.voice.registry.load_encoder(name, ...)` run in a child."""
    return ModelSpec(
        "encoder",
        {
            "name": name,
            "model_dir": None if model_dir is None else str(model_dir),
            "device": device,
            "threads": threads,
        },
        half=half,
    )


def countermeasure_spec(folder: str | Path, *, device: str, threads: int | None = None) -> ModelSpec:
    return ModelSpec("countermeasure", {"folder": str(folder), "device": device}, torch_threads=threads)
