"""Batched versus one-at-a-time embedding, both encoders, in the same run.

    python bench/batching.py [--data DIR] [--ecapa-dir DIR] [--out bench/results/batching.json]

What it measures, per encoder:

1. ECAPA padding study (how batch independence is achieved): a batch of
   realistic requests embedded alone (= "group equal lengths", because live
   requests almost never share a length), in one zero-padded SpeechBrain batch
   (relative lengths; the naive way), in one padded batch with authsvc's tail
   masking, and with masking plus sub-batching by length. Deviation from the
   alone embedding and throughput for each.
2. Knob sweep (how the defaults were chosen): open-loop Poisson arrivals at a
   fixed share of the batched capacity, varying max_batch, then max_wait_ms.
3. The main table: audio seconds embedded per wall second and p50/p99 latency
   with 1, 8, 32, 128 and 512 closed-loop requesters (each submits, awaits,
   submits again), batched (`MicroBatcher` with the default knobs) versus one
   at a time (the same batcher with max_batch=1: one worker thread, one
   request per encoder call, as the pre-batching `EmbeddingRunner` did).

Requests are 3-8 s segments (uniform, seeded) of the LibriSpeech utterances in
$AUTHSVC_DATA/speech/librispeech-test-other-10 (or --data).

Time limits (to stay near 10 minutes on 2 CPU cores): each cell runs for a
fixed window (--window-s, longer for ECAPA), then requests still waiting are
cancelled (and dropped by the batcher). Their waits are kept as censored
samples: where more than 1 % (p99) or 50 % (p50) of a cell's samples are
censored, the percentile is only a lower bound and is marked so. At 512
requesters on 2 cores, requests queue far longer than a window, so the latency
that matters there is Little's law (requesters / completion rate), which is
reported too.

ECAPA: with --ecapa-dir, that model folder (spkrec-ecapa-voxceleb layout);
otherwise a randomly initialised full-size ECAPA-TDNN (channels
[1024, 1024, 1024, 1024, 3072], attention/SE 128, 192-d embeddings: the
published model's architecture and compute) written in the test fixture's
folder layout. Its embeddings mean nothing; its speed and padding behaviour are
the real model's.

CPU threads: 1 intra-op thread by default, with OMP_WAIT_POLICY=PASSIVE. On
this shared 2-core machine, two spinning OpenMP threads stall whenever another
process holds a core (measured here: a GE2E LSTM batch 14x slower), which
would make the figures measure the neighbours, not the code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.metrics import Metrics  # noqa: E402
from authsvc.voice.batcher import BatchConfig, MicroBatcher  # noqa: E402
from authsvc.voice.device import warm_up  # noqa: E402
from authsvc.voice.encoder import SpeakerEncoder  # noqa: E402
from authsvc.voice.registry import load_encoder  # noqa: E402
from bench.common import RESULTS, default_data_dir, load_16k, machine  # noqa: E402

SR = 16000
LEVELS = (1, 8, 32, 128, 512)
FULL_ECAPA = {
    "channels": [1024, 1024, 1024, 1024, 3072],
    "kernel_sizes": [5, 3, 3, 3, 1],
    "dilations": [1, 2, 3, 4, 1],
    "attention_channels": 128,
    "se_channels": 128,
    "lin_neurons": 192,
}
# Knob sweep: share of the batched capacity offered as Poisson arrivals.
SWEEP_LOAD = 0.8
SWEEP_MAX_BATCH = (4, 8, 16, 32, 64)
SWEEP_MAX_WAIT_MS = (0.0, 2.0, 10.0)


# -- request audio -------------------------------------------------------------


def request_pool(data: Path, count: int, seed: int) -> list[np.ndarray]:
    """`count` segments of 3-8 s of real speech, from as many different utterances as there are."""
    files = sorted(data.rglob("*.flac"))
    if not files:
        raise SystemExit(f"no .flac files under {data} (set AUTHSVC_DATA or pass --data)")
    rng = np.random.default_rng(seed)
    utterances = [w for w in (load_16k(f) for f in files) if w.size >= 3 * SR]
    pool = []
    for i in range(count):
        wav = utterances[i % len(utterances)]
        seconds = rng.uniform(3.0, min(8.0, wav.size / SR))
        n = int(seconds * SR)
        start = int(rng.integers(0, wav.size - n + 1))
        pool.append(np.ascontiguousarray(wav[start : start + n]))
    return pool


def seconds_of(wavs: list[np.ndarray]) -> float:
    return sum(w.size for w in wavs) / SR


# -- encoders ------------------------------------------------------------------


def make_full_size_ecapa_folder(path: Path, seed: int = 0) -> Path:
    """The test fixture's model folder, at the published model's size (random weights)."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier

    from tests import ecapa_fixture as fx

    yaml = fx.HYPERPARAMS
    swaps = {
        f"emb_dim: {fx.EMBEDDING_DIM}": f"emb_dim: {FULL_ECAPA['lin_neurons']}",
        f"channels: {fx.CHANNELS}": f"channels: {FULL_ECAPA['channels']}",
        "attention_channels: 16": f"attention_channels: {FULL_ECAPA['attention_channels']}",
        "se_channels: 16": f"se_channels: {FULL_ECAPA['se_channels']}",
    }
    for old, new in swaps.items():
        if old not in yaml:
            raise SystemExit(f"tests/ecapa_fixture.py changed; cannot find {old!r} in its hyperparams")
        yaml = yaml.replace(old, new)
    fx.make_small_ecapa_folder(path, seed=seed)  # label encoder and layout
    torch.manual_seed(seed)
    dim = FULL_ECAPA["lin_neurons"]
    model = ECAPA_TDNN(input_size=80, **FULL_ECAPA)
    (path / "hyperparams.yaml").write_text(yaml, encoding="utf-8")
    torch.save(model.state_dict(), path / "embedding_model.ckpt")
    torch.save(Classifier(input_size=dim, out_neurons=fx.N_SPEAKERS).state_dict(), path / "classifier.ckpt")
    stats = {"count": 1000, "glob_mean": torch.zeros(dim), "glob_std": torch.ones(dim)}
    torch.save(stats, path / "mean_var_norm_emb.ckpt")
    return path


def load(name: str, ecapa_dir: Path | None, workdir: Path) -> tuple[SpeakerEncoder, str]:
    if name == "ge2e":
        return load_encoder("ge2e"), "GE2E d-vector LSTM, resemblyzer pretrained weights"
    if ecapa_dir is not None:
        return load_encoder("ecapa", model_dir=ecapa_dir), f"ECAPA-TDNN from {ecapa_dir}"
    folder = make_full_size_ecapa_folder(workdir / "ecapa-full-random")
    encoder = load_encoder("ecapa", model_dir=folder)
    params = sum(p.numel() for p in encoder.classifier.mods.embedding_model.parameters())
    return encoder, (
        f"ECAPA-TDNN, full size ({params / 1e6:.1f} M parameters: channels {FULL_ECAPA['channels']}, "
        f"attention/SE {FULL_ECAPA['attention_channels']}, {FULL_ECAPA['lin_neurons']}-d), RANDOMLY "
        "INITIALISED: real weights are not available offline; speed and padding behaviour are the "
        "real model's, embeddings are meaningless"
    )


# -- measuring -------------------------------------------------------------------


def percentile(samples: list[tuple[float, bool]], q: float) -> dict:
    """q-th percentile of (latency, censored) samples; a lower bound once censored ones could reach it."""
    if not samples:
        return {"s": None, "lower_bound": False}
    values = np.array([v for v, _ in samples])
    censored = sum(c for _, c in samples)
    return {
        "s": round(float(np.percentile(values, q)), 4),
        "lower_bound": censored > (1 - q / 100) * len(samples),
    }


class Cell:
    """One measurement: a batcher, a window, latencies and completed audio."""

    def __init__(self, encoder: SpeakerEncoder, config: BatchConfig, window_s: float) -> None:
        self.metrics = Metrics()
        self.batcher = MicroBatcher(encoder, config, self.metrics, warm_up=False)
        self.window_s = window_s
        self.latencies: list[float] = []
        self.pending: dict[asyncio.Task, float] = {}
        self.audio_s = 0.0
        self.completed = 0

    async def one(self, wav: np.ndarray) -> None:
        started = time.monotonic()
        await self.batcher.embed(wav)
        if time.monotonic() <= self.stop_at:
            self.latencies.append(time.monotonic() - started)
            self.audio_s += wav.size / SR
            self.completed += 1

    def track(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.pending[task] = time.monotonic()
        task.add_done_callback(lambda t: self.pending.pop(t, None))
        return task

    async def closed_loop(self, pool: list[np.ndarray], concurrency: int) -> None:
        counter = iter(range(10**9))

        async def requester() -> None:
            while time.monotonic() < self.stop_at:
                await self.one(pool[next(counter) % len(pool)])

        self.start = time.monotonic()
        self.stop_at = self.start + self.window_s
        self.requesters = [self.track(self._timed(requester())) for _ in range(concurrency)]
        await self._finish()

    async def open_loop(self, pool: list[np.ndarray], rate: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.start = time.monotonic()
        self.stop_at = self.start + self.window_s
        self.requesters = []
        i = 0
        next_at = self.start
        while True:
            next_at += rng.exponential(1 / rate)
            if next_at >= self.stop_at:
                break
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self.requesters.append(self.track(self._timed(self.one(pool[i % len(pool)]))))
            i += 1
        await self._finish()

    async def _timed(self, coro) -> None:
        """Records how long a request was waiting when the window closed (censored sample)."""
        task = asyncio.current_task()
        try:
            await coro
        except asyncio.CancelledError:
            self.censored.append(time.monotonic() - self.current_start.get(task, self.stop_at))
            raise

    async def _finish(self) -> None:
        self.censored: list[float] = []
        self.current_start: dict = {}
        await asyncio.sleep(max(0.0, self.stop_at - time.monotonic()))
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.requesters, return_exceptions=True)
        self.batcher.close(timeout_s=120)

    def result(self, concurrency: int | None = None) -> dict:
        samples = [(v, False) for v in self.latencies] + [(v, True) for v in self.censored]
        reg = self.metrics.registry
        label = {"encoder": self.batcher.encoder.encoder_id}
        batches = reg.get_sample_value("authsvc_embed_batch_size_count", label) or 0
        batched_items = reg.get_sample_value("authsvc_embed_batch_size_sum", label) or 0
        out = {
            "window_s": self.window_s,
            "completed": self.completed,
            "censored": len(self.censored),
            "audio_s_per_s": round(self.audio_s / self.window_s, 2),
            "requests_per_s": round(self.completed / self.window_s, 3),
            "p50": percentile(samples, 50),
            "p99": percentile(samples, 99),
            "mean_batch": round(batched_items / batches, 2) if batches else None,
        }
        if concurrency is not None and self.completed:
            out["little_latency_s"] = round(concurrency / (self.completed / self.window_s), 3)
        return out


async def closed_cell(encoder, config, pool, concurrency, window_s) -> dict:
    cell = Cell(encoder, config, window_s)
    # Censored waits: how long each cancelled requester's current request had waited.
    await _run_closed(cell, pool, concurrency)
    return cell.result(concurrency)


async def _run_closed(cell: Cell, pool: list[np.ndarray], concurrency: int) -> None:
    cell.censored = []
    counter = iter(range(10**9))
    cell.start = time.monotonic()
    cell.stop_at = cell.start + cell.window_s
    waiting_since: dict[int, float] = {}

    async def requester(k: int) -> None:
        try:
            while time.monotonic() < cell.stop_at:
                waiting_since[k] = time.monotonic()
                await cell.one(pool[next(counter) % len(pool)])
                waiting_since.pop(k, None)
        except asyncio.CancelledError:
            if k in waiting_since:
                cell.censored.append(cell.stop_at - waiting_since[k])
            raise

    tasks = [asyncio.create_task(requester(k)) for k in range(concurrency)]
    await asyncio.sleep(max(0.0, cell.stop_at - time.monotonic()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cell.batcher.close(timeout_s=120)


async def open_cell(encoder, config, pool, rate, window_s, seed) -> dict:
    cell = Cell(encoder, config, window_s)
    cell.censored = []
    rng = np.random.default_rng(seed)
    cell.start = time.monotonic()
    cell.stop_at = cell.start + window_s
    submitted: dict[asyncio.Task, float] = {}
    next_at = cell.start
    i = 0
    while True:
        next_at += rng.exponential(1 / rate)
        if next_at >= cell.stop_at:
            break
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        submitted[asyncio.create_task(cell.one(pool[i % len(pool)]))] = time.monotonic()
        i += 1
    await asyncio.sleep(max(0.0, cell.stop_at - time.monotonic()))
    for task, since in submitted.items():
        if not task.done():
            cell.censored.append(cell.stop_at - since)
            task.cancel()
    await asyncio.gather(*submitted, return_exceptions=True)
    cell.batcher.close(timeout_s=120)
    result = cell.result()
    result["offered_requests_per_s"] = round(rate, 3)
    return result


# -- the three parts ---------------------------------------------------------------


def padding_study(encoder, pool: list[np.ndarray], n: int) -> dict:
    """ECAPA: naive zero padding vs tail masking vs alone, on one batch of realistic requests."""
    wavs = pool[:n]
    audio = seconds_of(wavs)

    def timed(fn) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - started

    alone, t_alone = timed(lambda: np.stack([encoder.embed_batch([w])[0] for w in wavs]))
    longest = max(w.size for w in wavs)
    padded = torch.from_numpy(np.stack([np.pad(w, (0, longest - w.size)) for w in wavs]))
    lengths = torch.tensor([w.size / longest for w in wavs])

    def naive_fn() -> np.ndarray:
        with torch.inference_mode():
            e = encoder.classifier.encode_batch(padded, lengths).reshape(len(wavs), -1)
        return torch.nn.functional.normalize(e, dim=1).numpy()

    naive, t_naive = timed(naive_fn)
    saved = encoder.max_padding
    try:
        encoder.max_padding = math.inf
        one_batch, t_one = timed(lambda: encoder.embed_batch(wavs))
    finally:
        encoder.max_padding = saved
    sub, t_sub = timed(lambda: encoder.embed_batch(wavs))
    frames = [w.size // 160 + 1 for w in wavs]
    groups = encoder.sub_batches(frames)

    def row(emb: np.ndarray, seconds: float, note: str) -> dict:
        return {
            "min_cosine_to_alone": round(float(np.min(np.sum(emb * alone, axis=1))), 7),
            "max_abs_diff_to_alone": float(np.abs(emb - alone).max()),
            "audio_s_per_s": round(audio / seconds, 2),
            "note": note,
        }

    return {
        "requests": n,
        "audio_s": round(audio, 2),
        "distinct_lengths": len({w.size for w in wavs}),
        "strategies": {
            "alone (= group equal lengths)": row(
                alone, t_alone, "every live request has its own length, so grouping equal lengths is this"
            ),
            "zero padding, relative lengths (SpeechBrain encode_batch)": row(
                naive, t_naive, "convolutions and Fbank see the padding: rows move"
            ),
            "tail masking, one padded batch": row(one_batch, t_one, "authsvc, max_padding=inf"),
            "tail masking + sub-batches by length (chosen)": row(
                sub, t_sub, f"authsvc default, max_padding={saved}: {len(groups)} sub-batches"
            ),
        },
    }


async def sweep(encoder, pool, capacity_rps: float, window_s: float, seed: int) -> dict:
    """Open-loop arrivals at SWEEP_LOAD of the batched capacity: max_batch, then max_wait_ms."""
    rate = SWEEP_LOAD * capacity_rps
    rows = []
    for max_batch in SWEEP_MAX_BATCH:
        cfg = BatchConfig(max_batch=max_batch, max_wait_ms=0.0, max_queue=100_000)
        r = await open_cell(encoder, cfg, pool, rate, window_s, seed)
        rows.append({"max_batch": max_batch, "max_wait_ms": 0.0, **r})
        print(f"  sweep max_batch={max_batch:3d} wait=0: {_short(r)}", flush=True)
    best = min(
        (r for r in rows if r["p99"]["s"] is not None),
        key=lambda r: (r["p99"]["lower_bound"], r["p99"]["s"]),
    )["max_batch"]
    for wait in SWEEP_MAX_WAIT_MS[1:]:
        cfg = BatchConfig(max_batch=best, max_wait_ms=wait, max_queue=100_000)
        r = await open_cell(encoder, cfg, pool, rate, window_s, seed)
        rows.append({"max_batch": best, "max_wait_ms": wait, **r})
        print(f"  sweep max_batch={best:3d} wait={wait:g}: {_short(r)}", flush=True)
    return {"offered_share_of_capacity": SWEEP_LOAD, "offered_requests_per_s": round(rate, 3), "rows": rows}


def _short(r: dict) -> str:
    def pct(p: dict) -> str:
        return "-" if p["s"] is None else ("≥" if p["lower_bound"] else "") + f"{p['s'] * 1000:.0f}ms"

    return (
        f"{r['audio_s_per_s']:7.1f} audio s/s  p50 {pct(r['p50']):>9}  p99 {pct(r['p99']):>9}  "
        f"batch {r['mean_batch']}"
    )


async def bench_encoder(name: str, args, pool, workdir: Path) -> dict:
    print(f"== {name}", flush=True)
    encoder, model = load(name, args.ecapa_dir, workdir)
    warm_up(encoder)
    window = args.window_s * (args.ecapa_window_factor if name == "ecapa" else 1.0)
    out: dict = {"model": model, "version": encoder.version, "window_s": window}
    if name == "ecapa":
        out["padding_study"] = padding_study(encoder, pool, args.study_requests)
        for k, v in out["padding_study"]["strategies"].items():
            print(f"  {k}: min cos {v['min_cosine_to_alone']}, {v['audio_s_per_s']} audio s/s", flush=True)

    default = BatchConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=100_000)
    one_at_a_time = BatchConfig(max_batch=1, max_wait_ms=0.0, max_queue=100_000)
    if not args.no_sweep:
        # Capacity for the sweep's offered load: a short saturated closed-loop run.
        probe = await closed_cell(encoder, BatchConfig(max_batch=32, max_queue=100_000), pool, 64, window / 2)
        out["capacity_probe"] = probe
        out["sweep"] = await sweep(encoder, pool, probe["requests_per_s"], window, args.seed)

    levels = []
    for concurrency in args.levels:
        row: dict = {"concurrency": concurrency}
        for mode, cfg in (("batched", default), ("unbatched", one_at_a_time)):
            row[mode] = await closed_cell(encoder, cfg, pool, concurrency, window)
            print(f"  N={concurrency:4d} {mode:9s}: {_short(row[mode])}", flush=True)
        u = row["unbatched"]["audio_s_per_s"]
        row["throughput_ratio"] = round(row["batched"]["audio_s_per_s"] / u, 3) if u else None
        levels.append(row)
    out["levels"] = levels
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["encoders"])
    fig, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 8.5), squeeze=False)
    for col, name in enumerate(names):
        levels = results["encoders"][name]["levels"]
        xs = [r["concurrency"] for r in levels]
        for mode, color in (("batched", "tab:blue"), ("unbatched", "tab:orange")):
            label = "batched" if mode == "batched" else "one at a time"
            axes[0][col].plot(xs, [r[mode]["audio_s_per_s"] for r in levels], "o-", color=color, label=label)
            p99 = [r[mode]["p99"]["s"] for r in levels]
            bound = [r[mode]["p99"]["lower_bound"] for r in levels]
            axes[1][col].plot(xs, p99, "-", color=color, label=label)
            axes[1][col].scatter(
                [x for x, b in zip(xs, bound, strict=True) if not b],
                [p for p, b in zip(p99, bound, strict=True) if not b],
                color=color,
            )
            axes[1][col].scatter(
                [x for x, b in zip(xs, bound, strict=True) if b],
                [p for p, b in zip(p99, bound, strict=True) if b],
                facecolors="none",
                edgecolors=color,
                label=f"{label}: lower bound (window ended)",
            )
        axes[0][col].set_title(f"{name}: throughput")
        axes[0][col].set_ylabel("audio seconds embedded per second")
        axes[1][col].set_title(f"{name}: p99 latency")
        axes[1][col].set_ylabel("seconds")
        axes[1][col].set_yscale("log")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel("concurrent requesters")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    cfg = results["config"]
    fig.suptitle(
        f"Micro-batching on {results['device']}, max_batch={cfg['max_batch']}, "
        f"max_wait_ms={cfg['max_wait_ms']:g}, {cfg['threads']} thread(s)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default_data_dir() / "speech" / "librispeech-test-other-10")
    parser.add_argument("--ecapa-dir", type=Path, help="real ECAPA model folder (default: random full-size)")
    parser.add_argument("--encoders", default="ge2e,ecapa")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see doc)")
    parser.add_argument("--max-batch", type=int, default=BatchConfig.max_batch)
    parser.add_argument("--max-wait-ms", type=float, default=BatchConfig.max_wait_ms)
    parser.add_argument("--window-s", type=float, default=8.0, help="seconds per cell (GE2E)")
    parser.add_argument("--ecapa-window-factor", type=float, default=1.75, help="ECAPA cells run longer")
    parser.add_argument("--study-requests", type=int, default=16)
    parser.add_argument("--pool", type=int, default=120, help="distinct request segments")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "batching.json")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    load_before = os.getloadavg()
    pool = request_pool(args.data, args.pool, args.seed)
    lengths = [w.size / SR for w in pool]
    print(f"{len(pool)} requests, {min(lengths):.1f}-{max(lengths):.1f} s (mean {np.mean(lengths):.2f} s)")
    gpu = torch.cuda.is_available()
    results: dict = {
        "benchmark": "batching",
        "device": torch.cuda.get_device_name(0) if gpu else "CPU (no GPU was lent to this task)",
        "config": {
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "unbatched": "the same MicroBatcher with max_batch=1, max_wait_ms=0",
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "levels": args.levels,
            "window_s": args.window_s,
            "ecapa_window_factor": args.ecapa_window_factor,
            "data": str(args.data),
            "requests": {
                "count": len(pool),
                "seconds_min": round(min(lengths), 2),
                "seconds_max": round(max(lengths), 2),
                "seconds_mean": round(float(np.mean(lengths)), 2),
                "how": "uniform 3-8 s segments of LibriSpeech test-other utterances, seeded",
            },
            "latency": "closed loop; a request waiting when the window closes is a censored sample",
        },
        "machine": {**machine(), "loadavg_at_start": [round(x, 2) for x in load_before]},
        "encoders": {},
    }
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        for name in args.encoders.split(","):
            results["encoders"][name] = asyncio.run(bench_encoder(name, args, pool, Path(tmp)))
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.perf_counter() - started, 1)

    print("\nthroughput ratio batched / one-at-a-time (audio s per s):")
    for name, r in results["encoders"].items():
        cells = "  ".join(f"N={row['concurrency']}: {row['throughput_ratio']}" for row in r["levels"])
        print(f"  {name}: {cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {results['seconds']} s")


if __name__ == "__main__":
    main()
