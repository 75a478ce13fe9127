"""Per-call false-accept and false-reject rates of whole simulated calls, accounting on and off.

    python bench/calls.py [DATA_DIR] [--out bench/results/calls.json] [--quick]

Each call is streamed, 0.5 s of 8 kHz mu-law at a time, through the service's own
`VerificationSession` (its look schedule, thresholds and the decision engine); only
its I/O is stubbed: the customer's template comes from memory, nothing is stored,
and each call is a fresh customer, so lockout never ends a trial early. Segment
embeddings are computed once per probe recording and reused for every claimed
customer, which is what makes tens of thousands of calls affordable.

A call falsely accepts when any of its decisions is a biometric match (AUTHENTICATED,
or STEP_UP_REQUIRED where the preset requires a second factor). Two rules:
- "on" (the service): at most `decision.max_looks` looks, each at target / max_looks;
- "off" (before issue 10): a look every `redecide_interval_s` of new speech for the
  whole call, each at the target.

Conditions, none of them used to fit the calibration they are judged with:
- cohort-fold: librispeech-cohort-251 split by speaker into two halves; a calibration is
  fitted (bench/calibrate_voice.py's protocol) on one half and the calls are made on the
  other, then the reverse. Enrollment: the clean 16 kHz first half of each utterance;
  call: its second half (~7 s). All cross-speaker pairs are impostor calls.
- test-other: librispeech-test-other-10 with the shipped calibration (fitted on the
  cohort, other speakers). Enrollment: 3 clean utterances; calls: two consecutive other
  utterances (~15 s), so a call has room for many looks.
- fsdd: spoken digits (8 kHz, 6 speakers) with the shipped calibration. Enrollment: 3
  samples of 5 digits; calls: 12 other digits (~6 s).
FAR points rest on the number of impostor calls given beside them, with a 95 %
Clopper-Pearson upper bound; a target below 3 / calls cannot be resolved by the data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy.stats import beta

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.attempts import BiometricStatus
from authsvc.audio.codecs import Encoding, encode
from authsvc.audio.resample import resample
from authsvc.errors import ConfigError
from authsvc.fraud.watchlist import EMPTY
from authsvc.metrics import Metrics
from authsvc.policy.engine import Outcome
from authsvc.policy.risk import FRAUDSTER, LOW, DetectorRisk
from authsvc.policy.schema import DecisionRules, TenantPolicy, build_policy
from authsvc.scoring.calibration import Calibration, load_calibration
from authsvc.session import SessionStart, VerificationSession
from authsvc.store.base import CustomerRecord
from authsvc.templates import Template
from authsvc.voice.registry import load_encoder
from bench.calibrate_voice import fit
from bench.common import (
    RESULTS,
    default_data_dir,
    fsdd_speakers,
    load_16k,
    machine,
    voiceprint,
    write_results,
)

CHUNK_S = 0.5
NO_LIST = DetectorRisk(FRAUDSTER, LOW, reason="no watchlist in the benchmark")
UNBOUNDED = 1000  # looks: "off" re-decides for the whole call
PRESETS = ("general", "finance")


# -- the session's I/O, stubbed -----------------------------------------------------------------


class _Tx:
    def __init__(self, templates: list[Template]) -> None:
        self.templates = templates

    async def get_customer(self, tenant: str, customer_id: str) -> CustomerRecord:
        return CustomerRecord(tenant, customer_id, 0, ("voice",), registered=True)

    async def lock_customer(self, tenant: str, customer_id: str) -> None:
        return None  # no stored customer: nothing is counted, nothing locks

    async def touch_customer(
        self, tenant: str, customer_id: str, now_ms: int, enrolled: bool = False
    ) -> None:
        return None  # no stored customer: its retention clock is not kept


class _Stub:
    """What a VerificationSession calls on its context, with nothing stored."""

    def __init__(self, encoder, calibration: Calibration, embed) -> None:
        self.templates: list[Template] = []
        self.encoder = encoder
        self.calibration = calibration
        self.keystroke_calibrations = {}
        self.runner = SimpleNamespace(embed=embed)
        self.store = SimpleNamespace(transaction=self._transaction)
        self.vault = SimpleNamespace(load=self._load)
        self.factors = SimpleNamespace(
            active=self._none, authenticators=self._none, lock_status=self._unlocked
        )
        self.attempts = SimpleNamespace(status=self._clear)
        self.throttle = SimpleNamespace(
            check=lambda policy, source: None,
            over=lambda policy, source: 0.0,
            failed=lambda policy, source: False,
        )
        self.trust = SimpleNamespace(signing_ready=self._nothing, issue=self._issue)
        self.watchlists = SimpleNamespace(
            index=self._no_list, screen=lambda policy, index, embedding: NO_LIST
        )
        self.countermeasure = None
        self.auditor = SimpleNamespace(record=self._nothing)
        self.metrics = Metrics()  # the service's own (a registry of its own), counted and unread

    @contextlib.asynccontextmanager
    async def _transaction(self, *, read_only: bool = False):
        yield _Tx(self.templates)

    async def _load(self, tenant, customer_id, modality, tx):
        return self.templates

    async def _none(self, *args, **kwargs):
        return ()

    async def _unlocked(self, *args, **kwargs):
        return 0.0, 5

    async def _clear(self, *args, **kwargs):
        return BiometricStatus(attempts_left=5)

    async def _nothing(self, *args, **kwargs):
        return None

    async def _no_list(self, *args, **kwargs):
        return EMPTY

    async def _issue(self, policy, customer_id, methods, level, channel, tx=None, auth_id=None):
        return SimpleNamespace(methods=methods, assurance_level=level, auth_id="a")


class EmbeddingCache:
    """runner.embed, computed once per distinct audio segment."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.cache: dict[bytes, np.ndarray] = {}
        self.computed = 0

    async def embed(self, wav: np.ndarray, deadline: float | None = None) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(wav, np.float32).tobytes(), digest_size=16).digest()
        if key not in self.cache:
            self.cache[key] = self.encoder.embed_batch([wav])[0]
            self.computed += 1
        return self.cache[key]

    def clear(self) -> None:
        self.cache.clear()


# -- calls ----------------------------------------------------------------------------------------


def rules(preset: str, accounting: bool) -> TenantPolicy:
    policy = build_policy("bench", {"sector": preset}, "bench", f"bench-{preset}")
    if accounting:
        return policy
    # Before issue 10: every re-decision at the full target, for as long as the call lasts.
    return replace(
        policy,
        decision=DecisionRules(max_looks=UNBOUNDED),
        voice=replace(policy.voice, target_far=policy.voice.target_far * UNBOUNDED),
    )


async def run_call(ctx: _Stub, policy: TenantPolicy, chunks: list[bytes]) -> tuple[bool, int]:
    """-> (any biometric match, looks scored) of one call."""
    session = VerificationSession(
        ctx, SessionStart("bench", "c", "voice", Encoding.MULAW, 8000, session_id="bench"), policy
    )
    decisions = await session.begin()
    for chunk in chunks:
        decisions += await session.feed_audio(chunk)
    decisions.append(await session.finish())
    match = (Outcome.AUTHENTICATED, Outcome.STEP_UP_REQUIRED)
    return any(d.outcome in match and d.evidence for d in decisions), session._looks


def call_chunks(wav16k: np.ndarray) -> list[bytes]:
    data = encode(resample(wav16k, 16000, 8000), Encoding.MULAW)
    step = int(8000 * CHUNK_S)
    return [data[i : i + step] for i in range(0, len(data), step)]


def template_of(encoder, clips: list[np.ndarray]) -> Template:
    """The enrolled voiceprint of clean 16 kHz samples, stored as enrollment stores it."""
    payload = np.asarray(voiceprint(encoder, clips), np.float32).tobytes()
    return Template("voice", encoder.encoder_id, encoder.version, payload, 0, "")


async def run_condition(
    encoder, calibration: Calibration, speakers: dict[str, tuple[Template, list[list[bytes]]]]
) -> dict:
    """Every probe call of every speaker against every enrolled speaker, per preset and rule."""
    cache = EmbeddingCache(encoder)
    ctx = _Stub(encoder, calibration, cache.embed)
    policies, refused = {}, {}
    for preset in PRESETS:
        for on in (True, False):
            policy = rules(preset, on)
            try:  # the calibration may not resolve the per-look target: the service refuses it too
                calibration.threshold_for(policy.voice.target_far / policy.decision.max_looks)
                policies[(preset, on)] = policy
            except ConfigError as exc:
                refused[f"{preset}/{'on' if on else 'off'}"] = {"refused": str(exc)}
    tally = {key: {"genuine": [], "impostor": [], "looks": []} for key in policies}
    for speaker, (_, calls) in speakers.items():
        for chunks in calls:
            for claimed, (template, _) in speakers.items():
                ctx.templates = [template]
                kind = "genuine" if claimed == speaker else "impostor"
                for key, policy in policies.items():
                    matched, looks = await run_call(ctx, policy, chunks)
                    tally[key][kind].append(matched)
                    tally[key]["looks"].append(looks)
            cache.clear()  # this probe's segments are done with
    out = dict(refused)
    for (preset, on), t in tally.items():
        imp, gen = np.asarray(t["impostor"]), np.asarray(t["genuine"])
        target = rules(preset, True).voice.target_far
        accepts = int(imp.sum())
        upper = float(beta.ppf(0.95, accepts + 1, imp.size - accepts)) if accepts < imp.size else 1.0
        out[f"{preset}/{'on' if on else 'off'}"] = {
            "target_far": target,
            "impostor_calls": int(imp.size),
            "false_accepts": accepts,
            "far": accepts / imp.size,
            "far_upper_95": upper,
            "far_over_target": accepts / imp.size / target,
            "resolvable": bool(target >= 3.0 / imp.size),
            "genuine_calls": int(gen.size),
            "frr": float(1.0 - gen.mean()),
            "mean_looks": float(np.mean(t["looks"])),
        }
    return out


def cohort_folds(encoder, data_dir: Path, limit: int | None) -> list[tuple[str, Calibration, dict]]:
    files = sorted((data_dir / "speech" / "librispeech-cohort-251").glob("*.flac"))[:limit]
    halves = (files[0::2], files[1::2])
    folds = []
    for i, (fitted, judged) in enumerate((halves, halves[::-1])):
        cal, _ = fit(fitted, encoder, f"librispeech-cohort-251 fold {i}")
        speakers = {}
        for f in judged:
            wav = load_16k(f)
            half = wav.size // 2
            speakers[f.stem] = (template_of(encoder, [wav[:half]]), [call_chunks(wav[half:])])
        folds.append((f"cohort-fold{i}", cal, speakers))
    return folds


def test_other(encoder, data_dir: Path) -> dict:
    speakers = {}
    for folder in sorted(
        p for p in (data_dir / "speech" / "librispeech-test-other-10").iterdir() if p.is_dir()
    ):
        wavs = [load_16k(f) for f in sorted(folder.glob("*.flac"))]
        calls = [call_chunks(np.concatenate(wavs[i : i + 2])) for i in range(3, len(wavs) - 1)]
        speakers[folder.name] = (template_of(encoder, wavs[:3]), calls)
    return speakers


def fsdd(encoder, data_dir: Path) -> dict:
    speakers = {}
    rng = np.random.default_rng(0)
    for name, files in fsdd_speakers(data_dir).items():
        files = [files[i] for i in rng.permutation(len(files))]
        clips = [load_16k(f) for f in files[:75]]
        enroll = [np.concatenate(clips[i : i + 5]) for i in range(0, 15, 5)]
        calls = [call_chunks(np.concatenate(clips[i : i + 12])) for i in range(15, 75, 12)]
        speakers[name] = (template_of(encoder, enroll), calls)
    return speakers


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(results["conditions"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.2
    for j, preset in enumerate(PRESETS):
        ax = axes[j]
        x = np.arange(len(conditions))
        for k, rule in enumerate(("off", "on")):
            cells = [results["conditions"][c][f"{preset}/{rule}"] for c in conditions]
            # No bar for a refused configuration (target unresolvable) or for zero false accepts
            # (then only the 95 % upper bound, the tick, says anything).
            ratio = [c["far"] / c["target_far"] if c.get("false_accepts") else np.nan for c in cells]
            upper = [c["far_upper_95"] / c["target_far"] if "far" in c else np.nan for c in cells]
            ax.bar(x + (k - 0.5) * width, ratio, width, label=f"accounting {rule}")
            ax.scatter(x + (k - 0.5) * width, upper, marker="_", s=200, color="black")
        ax.axhline(1.0, color="grey", linestyle="--", label="target")
        ax.axhline(1.5, color="red", linestyle=":", label="1.5 x target")
        ax.set_yscale("log")
        ax.set_xticks(x, conditions, rotation=20)
        ax.set_title(f"{preset}: per-call FAR / target")
        ax.legend(fontsize=8)
    fig.suptitle("tick: 95 % upper bound; no bar: no false accept, or a target the calibration refuses")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=RESULTS / "calls.json")
    parser.add_argument("--quick", action="store_true", help="60 cohort speakers only (a smoke run)")
    args = parser.parse_args()
    started = time.time()
    encoder = load_encoder("ge2e")
    shipped = load_calibration("ge2e", encoder.version)
    conditions = {}
    for name, cal, speakers in cohort_folds(encoder, args.data_dir, 60 if args.quick else None):
        conditions[name] = asyncio.run(run_condition(encoder, cal, speakers))
        print(name, conditions[name])
    if not args.quick:
        for name, make in (("test-other", test_other), ("fsdd", fsdd)):
            conditions[name] = asyncio.run(run_condition(encoder, shipped, make(encoder, args.data_dir)))
            print(name, conditions[name])
    pooled = {}
    for key in conditions[next(iter(conditions))]:
        folds = [conditions[c][key] for c in conditions if c.startswith("cohort-fold")]
        if any("refused" in f for f in folds):
            pooled[key] = folds[0]
            continue
        calls = sum(f["impostor_calls"] for f in folds)
        accepts = sum(f["false_accepts"] for f in folds)
        pooled[key] = {
            "target_far": folds[0]["target_far"],
            "impostor_calls": calls,
            "false_accepts": accepts,
            "far": accepts / calls,
            "far_upper_95": float(beta.ppf(0.95, accepts + 1, calls - accepts)),
            "far_over_target": accepts / calls / folds[0]["target_far"],
            "resolvable": bool(folds[0]["target_far"] >= 3.0 / calls),
            "genuine_calls": sum(f["genuine_calls"] for f in folds),
            "frr": float(np.mean([f["frr"] for f in folds])),
        }
    conditions["cohort-pooled"] = pooled
    results = {
        "benchmark": "calls",
        "machine": machine(),
        "chunk_s": CHUNK_S,
        "conditions": conditions,
        "seconds": round(time.time() - started, 1),
    }
    write_results(results, args.out, plot)


if __name__ == "__main__":
    main()
