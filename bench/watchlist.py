"""1:N watchlist screening: latency by list size, and hit / false-hit rates on real speech.

    python bench/watchlist.py [DATA_DIR] [--out bench/results/watchlist.json] [--sizes 1000,10000,...]

Latency: one screening (a query against every listed voiceprint, GE2E's 256 dimensions)
at 1k, 10k, 100k and 1M entries, with the service's index (authsvc.fraud.watchlist.Index:
numpy brute force, exact) and, side by side in the same run, faiss's exact IndexFlatIP and
its approximate HNSW index where faiss is installed. Synthetic unit vectors stand in for
the listed voices (latency does not depend on what they are); p50 and p99 over queries.

Accuracy at the shipped threshold (the GE2E calibration at policy fraud.watchlist_far):
the listed voices are the 10 test-other speakers (3 clean utterances each, as `authsvc
watchlist add` makes them); hits: 8 kHz mu-law 3 s probes of their other utterances;
false hits: probes of fsdd speakers and of the librispeech cohort, none of them listed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.fraud.watchlist import Index
from authsvc.policy.schema import build_policy
from authsvc.scoring.calibration import load_calibration
from authsvc.voice.registry import load_encoder
from bench.calibrate_voice import probes_of
from bench.common import (
    RESULTS,
    default_data_dir,
    embed_all,
    fsdd_speakers,
    load_16k,
    machine,
    telephone,
    voiceprint,
    write_results,
)

SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUERIES = 200
DIM = 256


def _unit(rng, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _timed(fn, queries: np.ndarray) -> dict:
    fn(queries[0])  # warm
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def latency(sizes: tuple[int, ...]) -> dict:
    rng = np.random.default_rng(0)
    queries = _unit(rng, QUERIES)
    try:
        import faiss
    except ImportError:
        faiss = None
    out = {}
    for n in sizes:
        matrix = _unit(rng, n)
        index = Index(1, matrix, tuple(("list", str(i)) for i in range(n)))
        cell = {"service_numpy_exact": _timed(index.best, queries), "memory_mb": matrix.nbytes / 2**20}
        if faiss is not None:
            flat = faiss.IndexFlatIP(DIM)
            flat.add(matrix)
            cell["faiss_flat_exact"] = _timed(lambda q, ix=flat: ix.search(q[None], 1), queries)
            if n <= 100_000:  # building HNSW over 1M vectors takes minutes on 2 cores
                started = time.perf_counter()
                hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
                hnsw.hnsw.efSearch = 64
                hnsw.add(matrix)
                build = time.perf_counter() - started
                cell["faiss_hnsw"] = {
                    **_timed(lambda q, ix=hnsw: ix.search(q[None], 1), queries),
                    "build_s": build,
                }
                # Recall of the true best entry (the approximate index may miss it: a missed fraudster).
                truth = np.argmax(queries @ matrix.T, axis=1)
                found = hnsw.search(queries, 1)[1][:, 0]
                cell["faiss_hnsw"]["recall_at_1"] = float(np.mean(found == truth))
        out[str(n)] = cell
        ratio = cell["service_numpy_exact"]["p50_ms"] / cell.get("faiss_flat_exact", {}).get("p50_ms", np.nan)
        print(n, cell, f"numpy/faiss-flat p50 ratio {ratio:.2f}", flush=True)
        del matrix, index
    return out


def _whole(encoder, wav16k: np.ndarray) -> np.ndarray:
    """A whole utterance over the phone, as a call's pooled look hears it (VAD, 8 kHz mu-law)."""
    from authsvc.voice.pipeline import encoder_input, track

    return encoder_input(track(telephone(wav16k), 8000), encoder.sample_rate)


def accuracy(data_dir: Path) -> dict:
    """Hit and false-hit rates at several per-comparison FARs, for 3 s probes (a first look) and
    whole utterances (a later look pools the call's speech)."""
    encoder = load_encoder("ge2e")
    cal = load_calibration("ge2e", encoder.version)
    default = build_policy("bench", {}, "bench", "bench").fraud.watchlist_far
    listed, probes, owners = [], {"first_3s": [], "whole_utterance": []}, []
    root = data_dir / "speech" / "librispeech-test-other-10"
    for i, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        wavs = [load_16k(f) for f in sorted(folder.glob("*.flac"))]
        listed.append(voiceprint(encoder, wavs[:3]))
        for w in wavs[3:]:
            first = probes_of(telephone(w), encoder.sample_rate, 1)
            if first:
                probes["first_3s"].append(first[0])
                probes["whole_utterance"].append(_whole(encoder, w))
                owners.append(i)
    matrix = np.stack(listed).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    index = Index(1, matrix, tuple(("l", str(i)) for i in range(len(listed))))
    unlisted = []
    for files in fsdd_speakers(data_dir).values():
        clips = [load_16k(f) for f in files[:60]]
        for k in range(0, 60, 6):
            unlisted.extend(probes_of(telephone(np.concatenate(clips[k : k + 6])), encoder.sample_rate, 1))
    for f in sorted((data_dir / "speech" / "librispeech-cohort-251").glob("*.flac")):
        unlisted.extend(probes_of(telephone(load_16k(f)), encoder.sample_rate, 1))
    found = {k: [index.best(e) for e in embed_all(encoder, v)] for k, v in probes.items()}
    unlisted_best = [index.best(e)[0] for e in embed_all(encoder, unlisted)]
    out = {
        "listed_voices": len(listed),
        "hit_probes": len(owners),
        "unlisted_probes": len(unlisted),
        "shipped_watchlist_far": default,
        "by_far": {},
    }
    for far in (1e-4, 1e-3, 1e-2):
        thr = cal.threshold_for(far)
        cell = {"threshold_cosine": thr, "expected_false_hit_rate": len(listed) * far}
        for k, hits in found.items():
            cell[f"hit_rate_{k}"] = float(
                np.mean([s >= thr and lab[1] == str(o) for (s, lab), o in zip(hits, owners, strict=True)])
            )
        cell["false_hits"] = int(np.sum(np.asarray(unlisted_best) >= thr))
        cell["false_hit_rate"] = cell["false_hits"] / len(unlisted)
        out["by_far"][f"{far:g}"] = cell
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in results["latency"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ("service_numpy_exact", "faiss_flat_exact", "faiss_hnsw"):
        points = [
            (n, results["latency"][str(n)][name]["p99_ms"])
            for n in sizes
            if name in results["latency"][str(n)]
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=f"{name} (p99)")
    ax.axhline(50, color="grey", linestyle=":", label="50 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("listed voiceprints")
    ax.set_ylabel("one screening, ms")
    ax.set_title("1:N watchlist screening, 256-d GE2E voiceprints")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "watchlist.json")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()
    started = time.time()
    results = {
        "benchmark": "watchlist",
        "machine": machine(),
        "latency": latency(tuple(int(s) for s in args.sizes.split(","))),
        "accuracy": accuracy(args.data_dir),
    }
    results["seconds"] = round(time.time() - started, 1)
    write_results(results, args.out, plot)
    print(results["accuracy"])


if __name__ == "__main__":
    main()
