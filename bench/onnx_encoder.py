"""GE2E on torch versus GE2E on ONNX Runtime: the same weights, the same batches, one run.

    python bench/onnx_encoder.py [--data DIR] [--out bench/results/onnx_encoder.json]

Requests are 3-8 s segments (uniform, seeded) of the LibriSpeech utterances in
$AUTHSVC_DATA/speech/librispeech-test-other-10, cut into batches of 1, 4 and 16. For
1 and 2 intra-op threads (torch's and ONNX Runtime's, each set as `load_encoder(threads=)`
sets them), each batch goes through `embed_batch` of both encoders in alternation (torch,
onnx, torch, onnx, ...), so a neighbour's load falls on both alike; every figure is the
median over the batches. What is timed is the whole `embed_batch` a service calls: the
shared mel front end and windowing, the network, the pooling.

Then two worker threads, each with a 1-thread encoder of its own backend and batches of 4,
as two batcher workers on the 2 cores would run: their combined audio seconds per second
against one worker's, which says how far each backend uses the second core without the GIL
in the way.

Reported: per cell the median seconds per batch of each, the audio seconds embedded per
wall second, and `speedup` = torch seconds / onnx seconds (> 1: ONNX Runtime is faster);
the lowest cosine between the two embeddings of every benchmarked utterance. OpenMP runs
with OMP_WAIT_POLICY=PASSIVE (as `authsvc serve` sets it) and ONNX Runtime's pool does
not spin (as authsvc.voice.onnx_encoder sets it), so idle threads do not hold the cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.voice.registry import load_encoder
from bench.batching import request_pool, seconds_of
from bench.common import RESULTS, default_data_dir, machine, write_results

BATCH_SIZES = (1, 4, 16)
THREADS = (1, 2)
# Batches timed per cell and backend: about 20-30 s of compute per thread setting on 2 cores.
ROUNDS = {1: 48, 4: 20, 16: 8}
WORKER_BATCHES = 16


def cell(torch_enc, onnx_enc, batches: list[list[np.ndarray]]) -> tuple[dict, float]:
    """Alternating timings of both encoders on `batches` -> (figures, lowest cosine)."""
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    lowest = 1.0
    for batch in batches:
        out = {}
        for name, enc in (("torch", torch_enc), ("onnx", onnx_enc)):
            started = time.perf_counter()
            out[name] = enc.embed_batch(batch)
            times[name].append(time.perf_counter() - started)
        lowest = min(lowest, float(np.min(np.sum(out["torch"] * out["onnx"], axis=1))))
    audio = statistics.median(seconds_of(b) for b in batches)
    t, o = statistics.median(times["torch"]), statistics.median(times["onnx"])
    return {
        "batches": len(batches),
        "median_audio_s_per_batch": round(audio, 2),
        "torch_median_s": round(t, 4),
        "onnx_median_s": round(o, 4),
        "torch_audio_s_per_s": round(audio / t, 1),
        "onnx_audio_s_per_s": round(audio / o, 1),
        "speedup": round(t / o, 3),
    }, lowest


def workers(encoder, batches: list[list[np.ndarray]], n: int) -> float:
    """Audio seconds per wall second with `n` threads each embedding all of `batches`."""
    gate = threading.Barrier(n + 1)

    def work() -> None:
        gate.wait()
        for b in batches:
            encoder.embed_batch(b)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for th in threads:
        th.start()
    gate.wait()
    started = time.perf_counter()
    for th in threads:
        th.join()
    return n * sum(seconds_of(b) for b in batches) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_encoder.json")
    args = parser.parse_args()
    began = time.perf_counter()
    speech = args.data / "speech" / "librispeech-test-other-10"
    pool = request_pool(speech, sum(ROUNDS[b] * b for b in BATCH_SIZES) + 2 * WORKER_BATCHES * 4, seed=13)

    results: dict = {
        "benchmark": "bench/onnx_encoder.py",
        "config": {
            "data": str(speech),
            "requests": "3-8 s segments of real speech, seed 13",
            "batch_sizes": BATCH_SIZES,
            "threads": THREADS,
            "rounds": ROUNDS,
            "timed": "whole embed_batch (front end, windows, network, pooling), torch and onnx alternated",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "machine": machine(),
        "cells": [],
    }
    results["machine"]["versions"]["onnxruntime"] = metadata.version("onnxruntime")
    results["machine"]["versions"]["onnx"] = metadata.version("onnx")

    lowest = 1.0
    for threads in THREADS:
        torch_enc = load_encoder("ge2e", threads=threads)
        onnx_enc = load_encoder("ge2e-onnx", threads=threads)  # sets torch's threads to the same
        for enc in (torch_enc, onnx_enc):  # one-time costs (allocator, kernel choice) out of the timings
            enc.embed_batch(pool[:4])
        start = 0
        for size in BATCH_SIZES:
            batches = [pool[start + i * size : start + (i + 1) * size] for i in range(ROUNDS[size])]
            start += ROUNDS[size] * size
            figures, low = cell(torch_enc, onnx_enc, batches)
            lowest = min(lowest, low)
            results["cells"].append({"threads": threads, "batch": size, **figures})
            print(
                f"threads {threads} batch {size:2d}: torch {figures['torch_median_s'] * 1000:7.1f} ms "
                f"onnx {figures['onnx_median_s'] * 1000:7.1f} ms  speedup {figures['speedup']:.2f}x"
            )

    # Two 1-thread workers on the 2 cores, as two batcher workers would run.
    batches = [pool[-(i + 1) * 4 : len(pool) - i * 4] for i in range(WORKER_BATCHES)]
    scaling = {}
    for name in ("ge2e", "ge2e-onnx"):
        enc = load_encoder(name, threads=1)
        enc.embed_batch(batches[0])
        one, two = workers(enc, batches, 1), workers(enc, batches, 2)
        scaling[name] = {
            "one_worker_audio_s_per_s": round(one, 1),
            "two_workers_audio_s_per_s": round(two, 1),
            "scaling": round(two / one, 3),
        }
        print(f"{name}: 1 worker {one:.0f} audio s/s, 2 workers {two:.0f} ({two / one:.2f}x)")
    results["two_workers_batch_4_one_thread_each"] = scaling
    results["two_workers_onnx_vs_torch"] = round(
        scaling["ge2e-onnx"]["two_workers_audio_s_per_s"] / scaling["ge2e"]["two_workers_audio_s_per_s"], 3
    )
    results["lowest_cosine_torch_vs_onnx"] = round(lowest, 8)
    results["seconds"] = round(time.perf_counter() - began, 1)
    write_results(results, args.out, plot)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    cells = results["cells"]
    labels = [f"{c['threads']} thr\nbatch {c['batch']}" for c in cells]
    ax.bar(range(len(cells)), [c["speedup"] for c in cells], color="tab:blue")
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_xticks(range(len(cells)), labels, fontsize=8)
    ax.set_ylabel("torch s / onnx s (>1: ONNX faster)")
    ax.set_title("GE2E embed_batch, ONNX Runtime vs torch (same weights, same batches)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
