"""Load test: N concurrent verification calls against a real `authsvc serve`.

    python bench/load.py [--data DIR] [--levels 25,50,100,150,200] [--budget-s 720]
                         [--clients K] [--server-arg=--threads=1 ...] [--store sqlite|POSTGRES_DSN]
                         [--detectors off,on] [--countermeasure-dir DIR] [--transport grpc,audiohook,twilio]
                         [--out bench/results/load.json]

What it does, per level N (a fresh server each time, so memory and metrics are the level's own):

1. Starts `authsvc serve` as a subprocess (temp --data-dir, free --listen port, free
   --metrics-port; with --store POSTGRES_DSN, --store pointing at a fresh schema of that
   database, dropped after the level; else the server's default SQLite file) and enrolls
   the 10 LibriSpeech test-other speakers with EnrollVoice, 4 utterances each (16 kHz PCM16,
   as an operator's recordings).
2. Client processes (--client node: Node.js with grpc-js, bench/loadclient/client.mjs, the
   default; --client python: grpc.aio; one event loop and one channel each, many streams per
   process) open N Verify streams, started evenly over the first --ramp-s seconds. Stream i
   claims speaker i mod 10 and sends that speaker's 6 other utterances (order rotated by
   stream, looped) as --speech-s seconds of G.711 mu-law at 8 kHz in 20 ms chunks, paced in
   real time against absolute deadlines (chunk k is due --frame-ms x (k+1) after the stream's
   start, when a live call would have captured it), so lateness never accumulates.
3. Decision points: the client runs `authsvc.audio.vad.SpeechTracker` over the decoded samples
   of exactly the chunks it sends, chunk by chunk, and applies the session's rules
   (authsvc/session.py, with the tenant's effective policy): PENDING each 0.5 s of net speech
   until the first score, a score when net speech reaches min_net_speech_s, then one each
   time it has grown by redecide_interval_s since the last score, until the call's
   decision.max_looks scores are spent (later audio is only tracked). The tracker is
   deterministic, so this predicts every decision point. The k-th score decision received is
   matched to the k-th predicted score point (PENDING likewise) and its net speech checked:
   equal, or later when the server deferred a scoring under load ("shifted"; its latency then
   runs from the predicted point, which is how long the caller waited); a decision before its
   point, or more decisions than points, means the prediction is wrong ("early_or_extra").
4. Latency of a decision = time the client received it - time the client began writing the
   chunk that reached its decision point. "decision" latency is over score decisions (the
   threshold, then every re-decision): what the 300 ms target applies to. "pending" latency
   is the same over PENDING updates, which need no embedding, so it isolates per-chunk
   handling from embedding.
5. Meanwhile the parent samples, once a second: the server's CPU time (psutil, all its
   threads, and split into the asyncio event-loop thread, gRPC's own threads, and the rest,
   which is the embedding worker and torch's threads), its RSS (peak from VmHWM), the client
   processes' CPU and the whole machine's busy time (what "other" processes on this shared
   machine used is reported, so a neighbour's load is visible). CPU is averaged over the
   steady window, when all N streams are live (from the end of the ramp to the first
   stream's end).
6. The server's Prometheus endpoint is scraped just before the streams start and at the end;
   the difference gives the level's embedding figures: requests, batch sizes, queue wait,
   compute seconds, audio seconds per request, refused and dropped requests.

Fraud detectors (issue 11), side by side in the same run: the whole search runs once per
--detectors setting, each with its own --budget-s. "off": the load tenant's policy ignores
replay, synthetic speech and watchlist screening, so the server does not run them. "on": the
server gets --countermeasure-dir (AASIST, default ../shared/models/aasist) and the policy flags
each detector's high risk, so every scored look fingerprints the call's latest minute at nine
speeds against the speaker's enrollment and kept calls, runs the countermeasure on the latest
4 s of speech through its own batcher, and screens the pooled voice. ("flag", not the preset's
step-up: the load calls re-send each speaker's six utterances, so later calls are replays of
earlier ones; a step-up would change the decision points and lock the speakers out. The
detectors' compute is the same.)

Transports (issue 12), side by side in the same run (--transport grpc,audiohook,twilio, each
with every --detectors setting and its own --budget-s): "grpc" streams Verify as above;
"audiohook" speaks Genesys AudioHook to the server's bridge (a signed upgrade, open with
customConfig.customerId, 200 ms frames of stereo PCMU with the customer on the external
channel and a silent agent, close); "twilio" speaks Media Streams (a signed upgrade, start with
customParameters.customerId, 20 ms base64 mu-law media messages, stop). A bridge carries audio
one way, so each bridge call's decisions are read as the agent desktop reads them, by
WatchSession on its call id; a watcher joins after the call's first PENDING updates, so only
score decisions are matched and timed for the bridges.

Baseline in the same run: before the levels, the server's encoder (with the server's
--threads, else 1 and torch's default; with the server's OMP_WAIT_POLICY, else PASSIVE and
ACTIVE) embeds, alone in a child process, batches
of 1, 2, 4 and 8 pieces of the audio that arrives between two decision points. Each level
compares the server's compute time per batch with it ("server_vs_alone").

Code side by side in the same run (--code, repeatable; issue 13): each --code is a git revision
checked out detached in a worktree of its own (or "worktree", the working tree), served with the
same interpreter and packages (PYTHONPATH names the checkout); the first is the baseline, and each
later code's largest N held is divided by the baseline's at the same setting ("held_ratios"). Each
code's own policy defaults plan its decision points (a commit from before the looks cap re-decides
every redecide_interval_s for the whole call), a commit without API keys is called without one,
and one without fraud detectors runs with "detectors off" only. Each run also reports its
encoder-alone ceiling: how many of its calls the cores could embed with nothing else running (the
busiest second of the ramped calls' score decisions, against one single-threaded encoder per core
at its best batch size), and held calls as a share of it.

Neighbours: this machine may be shared. Before each level the script waits (up to
--quiet-wait-s, outside the budget) until other processes use under --quiet-cores, and each
level reports the cores that neither the server nor the client used ("other_cores").

The load generator shares the machine with the server: the Node client sends the same
pre-serialized messages as the Python one (decisions come back as bytes, parsed here) at about
a third of its CPU per call (0.21 vs 0.59-0.66 cores at 200 calls on the 2-core machine), so
more of the cores go to the server being measured. Both codes of a --code run get the same client.

Client saturation is reported, not mistaken for a slow server: each chunk's lateness against
its deadline, and the client event loop's own lag (a probe task sleeping 5 ms). A level whose
client loop lag p99 exceeds --client-lag-ms is marked client-limited; add --clients.

A level is held when every stream completed without error, every predicted score decision
arrived, and the p99 decision latency is under --target-ms. The search runs --levels in
increasing order, stops going up after the first level that is not held, then bisects between
the largest held and smallest failed level (--bisect-steps), all within --budget-s (printed
up front; a level that would overrun it is skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.api.v1 import common_pb2, enrollment_pb2, verification_pb2
from authsvc.audio.codecs import Encoding, decode, encode
from authsvc.audio.resample import resample
from authsvc.audio.vad import SpeechTracker
from authsvc.policy.schema import PolicyBook
from authsvc.session import PENDING_STEP_S
from bench.common import RESULTS, ROOT, create_schema, default_data_dir, drop_schema, load_16k, machine

SR = 16000
RATE = 8000
TENANT = "loadtest"
# Transports: the service's own gRPC stream, or a media bridge as the platform speaks it, with
# the frame each sends (Genesys AudioHook: 200 ms of stereo PCMU; Twilio: 20 ms of mu-law).
TRANSPORT_FRAME_MS = {"audiohook": 200, "twilio": 20}
TWILIO_PUBLIC = "wss://load.invalid/twilio"
TWILIO_TOKEN = "0123456789abcdef0123456789abcdef"
ORG_ID = "d7934305-0972-4844-938e-9060eef73d05"
ENROLL_UTTERANCES = 4
DEFAULT_LEVELS = (25, 50, 100, 150, 200)
PENDING = verification_pb2.OUTCOME_PENDING


# -- call audio and its decision points -------------------------------------------------


@dataclass
class CallAudio:
    """One call's mu-law chunks and the decisions the server will send for them."""

    speaker: str
    rotation: int
    chunks: list[bytes]
    # Predicted decisions in order: (sequence, chunk index, is_score, net speech seconds).
    events: list[tuple[int, int, bool, float]]
    net_speech_s: float


def speaker_audio(data: Path) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """speaker -> (enrollment utterances, call utterances), 16 kHz float, in file order."""
    root = data / "speech" / "librispeech-test-other-10"
    speakers = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(speakers) < 1:
        raise SystemExit(f"no speakers under {root} (set AUTHSVC_DATA or pass --data)")
    out = {}
    for folder in speakers:
        wavs = [load_16k(f) for f in sorted(folder.glob("*.flac"))]
        if len(wavs) <= ENROLL_UTTERANCES:
            raise SystemExit(f"{folder}: need more than {ENROLL_UTTERANCES} utterances, found {len(wavs)}")
        out[folder.name] = (wavs[:ENROLL_UTTERANCES], wavs[ENROLL_UTTERANCES:])
    return out


def plan_decisions(
    chunks: list[bytes], voice, max_looks: int
) -> tuple[list[tuple[int, int, bool, float]], float]:
    """The decisions VerificationSession.feed_audio emits for these chunks, for an enrolled claim.

    Mirrors authsvc/session.py rule for rule over the same SpeechTracker fed the same decoded
    samples; a mismatch with what the server sends is counted, so a drift in either shows.
    """
    tracker = SpeechTracker(RATE, max_speech_s=voice.max_window_s)
    events: list[tuple[int, int, bool, float]] = []
    last_pending = -PENDING_STEP_S
    scored_at: float | None = None
    looks = 0
    for k, chunk in enumerate(chunks):
        tracker.feed(decode(chunk, Encoding.MULAW), 32767)
        if looks >= max_looks:  # the call's looks are spent: the rest of its audio is only tracked
            continue
        speech = tracker.net_speech_s
        if speech < voice.min_net_speech_s:
            if scored_at is None and speech - last_pending >= PENDING_STEP_S:
                last_pending = speech
                events.append((len(events) + 1, k, False, speech))
        elif scored_at is None or speech - scored_at >= voice.redecide_interval_s:
            scored_at = speech
            looks += 1
            events.append((len(events) + 1, k, True, speech))
    return events, tracker.net_speech_s


def call_audio(
    speaker: str,
    utterances: list[np.ndarray],
    rotation: int,
    seconds: float,
    frame_ms: int,
    voice,
    max_looks: int,
) -> CallAudio:
    """The speaker's call utterances, rotated by `rotation`, looped to `seconds`, as mu-law chunks."""
    order = utterances[rotation % len(utterances) :] + utterances[: rotation % len(utterances)]
    joined = np.concatenate(order)
    need = int(seconds * SR)
    wav = np.tile(joined, math.ceil(need / joined.size))[:need]
    data = encode(resample(wav, SR, RATE), Encoding.MULAW)
    step = RATE * frame_ms // 1000
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    events, net = plan_decisions(chunks, voice, max_looks)
    return CallAudio(speaker, rotation, chunks, events, net)


def decision_segments(variants: list[CallAudio], count: int) -> list[np.ndarray]:
    """Audio that arrives between consecutive score decisions (int16, 8 kHz), as re-decisions see it.

    What the encoder baseline embeds: about what a re-decision embeds (the speech since the
    previous decision), from real calls, without depending on the session's internals.
    """
    out = []
    for v in variants:
        marks = [k for _, k, is_score, _ in v.events if is_score]
        for a, b in itertools.pairwise(marks):
            out.append(decode(b"".join(v.chunks[a + 1 : b + 1]), Encoding.MULAW))
            if len(out) == count:
                return out
    return out


def _baseline_child(env: dict, encoder: str, threads: int | None, segments, batch_sizes, reps, out) -> None:
    os.environ.update(env)  # before torch loads OpenMP
    import torch

    from authsvc.voice.pipeline import to_encoder_rate
    from authsvc.voice.registry import load_encoder

    enc = load_encoder(encoder, device="cpu", threads=threads)
    wavs = [to_encoder_rate(s, RATE, enc.sample_rate) for s in segments]
    enc.embed_batch(wavs[:2])
    rows = {}
    for b in batch_sizes:
        times = []
        for r in range(reps):
            batch = [wavs[(r * b + j) % len(wavs)] for j in range(b)]
            t = time.perf_counter()
            enc.embed_batch(batch)
            times.append(time.perf_counter() - t)
        rows[str(b)] = round(1000 * float(np.median(times)), 1)
    out.send({"torch_threads": torch.get_num_threads(), "ms_per_batch_median": rows})
    out.close()


def encoder_baseline(args: argparse.Namespace, variants: list[CallAudio]) -> dict:
    """The server's encoder alone (no gRPC, no event loop), on the same kind of audio.

    Measured with the server's --threads when given, else with 1 thread and with torch's
    default (one per core), and with the server's OMP_WAIT_POLICY when --server-env sets one,
    else PASSIVE and ACTIVE: the server's own choice is then among the rows. Compared with
    the server's compute time per batch, it shows how much of that time is the model and how
    much is contention inside the server process.
    """
    encoder = _server_flag(args.server_arg, "--encoder") or "ge2e"
    if encoder != "ge2e":
        return {"skipped": f"baseline only for ge2e (server runs {encoder})"}
    flag = _server_flag(args.server_arg, "--threads")
    env = dict(kv.split("=", 1) for kv in args.server_env)
    thread_counts = [int(flag)] if flag else [1, None]
    policies = [env["OMP_WAIT_POLICY"]] if "OMP_WAIT_POLICY" in env else ["PASSIVE", "ACTIVE"]
    segments = decision_segments(variants, 64)
    result: dict = {
        "what": "median ms per embed_batch call on audio between consecutive decision points",
        "segment_s_mean": round(float(np.mean([s.size for s in segments])) / RATE, 2),
        "rows": {},
    }
    ctx = mp.get_context("spawn")
    for threads in thread_counts:
        for policy in policies:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_baseline_child,
                args=({**env, "OMP_WAIT_POLICY": policy}, encoder, threads, segments, (1, 2, 4, 8), 15, send),
            )
            p.start()
            row = recv.recv()
            p.join()
            result["rows"][f"threads={row['torch_threads']},{policy}"] = row["ms_per_batch_median"]
    return result


def compare_with_baseline(emb: dict, baseline: dict) -> dict:
    """Server compute ms per batch / the encoder alone at the nearest batch size, per baseline row."""
    out = {}
    if not emb.get("mean_batch") or "rows" not in baseline:
        return out
    for name, row in baseline["rows"].items():
        sizes = {int(k): v for k, v in row.items()}
        nearest = min(sizes, key=lambda k: abs(math.log(k / emb["mean_batch"])))
        out[name] = {
            "alone_ms_at_batch": {nearest: sizes[nearest]},
            "server_ms_mean": emb["compute_ms_per_batch_mean"],
            "ratio": round(emb["compute_ms_per_batch_mean"] / sizes[nearest], 2),
        }
    return out


def _server_flag(server_args: list[str], name: str) -> str | None:
    for i, a in enumerate(server_args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(server_args):
            return server_args[i + 1]
    return None


# -- the client (runs in worker processes) ----------------------------------------------


@dataclass
class StreamResult:
    index: int
    variant: int
    start_offset_s: float
    started: bool = False
    completed: bool = False
    error: str | None = None
    # (receive time, sequence, outcome, final, net speech)
    received: list[tuple[float, int, int, bool, float]] = field(default_factory=list)
    # chunk index -> time its write began, for the chunks that reach a decision point
    sent: dict[int, float] = field(default_factory=dict)
    lateness: np.ndarray | None = None


@dataclass
class ClientJob:
    worker: int
    address: str
    key: str  # the telephony platform's API key
    # (stream index, variant index, start offset from t0 in seconds)
    streams: list[tuple[int, int, float]]
    variants: dict[int, tuple[str, list[bytes], list[int]]]  # variant -> (speaker, chunks, marked chunks)
    frame_s: float
    call_timeout_s: float
    drain_deadline_s: float  # offset from t0 after which unfinished streams are cancelled
    transport: str = "grpc"
    bridge_url: str = ""  # the bridge's ws:// URL (audiohook, twilio)
    bridge_secret: str = ""  # AudioHook client secret (base64), or the tenant's Twilio auth token


def _start_message(customer: str, session_id: str) -> verification_pb2.VerifyRequest:
    return verification_pb2.VerifyRequest(
        start=verification_pb2.SessionStart(
            tenant=TENANT,
            customer_id=customer,
            channel=common_pb2.CHANNEL_VOICE,
            audio_format=common_pb2.AudioFormat(
                encoding=common_pb2.AUDIO_ENCODING_MULAW, sample_rate_hz=RATE
            ),
            session_id=session_id,
        )
    )


async def _one_call(stub, job: ClientJob, messages, marked, speaker, res: StreamResult, t0: float) -> None:
    import grpc

    start_at = t0 + res.start_offset_s
    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    lateness = np.full(len(messages), np.nan, dtype=np.float32)
    res.lateness = lateness
    call = stub.Verify(timeout=job.call_timeout_s, metadata=(("authorization", f"Bearer {job.key}"),))
    res.started = True

    async def reader() -> None:
        while True:
            d = await call.read()
            if d is grpc.aio.EOF:
                return
            res.received.append((time.monotonic(), d.sequence, d.outcome, d.final, d.net_speech_seconds))

    reading = asyncio.create_task(reader())
    try:
        await call.write(_start_message(speaker, f"load-{res.index}"))
        await _paced(messages, marked, start_at, job.frame_s, res, call.write)
        await call.done_writing()
        await reading
        res.completed = True
    except grpc.aio.AioRpcError as exc:
        res.error = exc.code().name
    except asyncio.CancelledError:
        res.error = "CUT_AT_DRAIN_DEADLINE"
        call.cancel()
    except Exception:  # e.g. a write after the server ended the stream: its status says why
        try:
            code = await asyncio.wait_for(call.code(), 5)
            res.error = code.name
        except Exception as exc:
            res.error = f"CLIENT_{type(exc).__name__}"
    finally:
        if not reading.done():
            reading.cancel()
        with contextlib.suppress(BaseException):
            await reading
        if res.error is None and not res.completed:
            res.error = "UNKNOWN"


async def _paced(messages, marked, start_at: float, frame_s: float, res: StreamResult, send) -> None:
    """Sends chunk k when a live call would have captured it (absolute deadlines, so lateness
    never accumulates), noting when each chunk that reaches a decision point was written."""
    for k, msg in enumerate(messages):
        due = start_at + (k + 1) * frame_s
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
            now = time.monotonic()
        res.lateness[k] = now - due  # type: ignore[index]
        if k in marked:
            res.sent[k] = now
        await send(msg)


async def _watch_call(stub, job: ClientJob, call_id: str, res: StreamResult, found: asyncio.Event) -> None:
    """A bridge call's decisions, as the agent desktop sees them (WatchSession). The call is
    looked for until its bridge registered it."""
    import grpc

    request = verification_pb2.WatchSessionRequest(tenant=TENANT, session_id=call_id)
    metadata = (("authorization", f"Bearer {job.key}"),)
    for _ in range(1000):
        try:
            async for d in stub.WatchSession(request, metadata=metadata, timeout=job.call_timeout_s):
                found.set()
                res.received.append((time.monotonic(), d.sequence, d.outcome, d.final, d.net_speech_seconds))
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or found.is_set():
                raise
            await asyncio.sleep(0.02)


async def _one_bridge_call(
    stub, job: ClientJob, chunks, marked, speaker, res: StreamResult, t0: float
) -> None:
    """One call through the AudioHook or Twilio bridge, spoken as the platform does."""
    import uuid

    from websockets.asyncio.client import connect

    start_at = t0 + res.start_offset_s
    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    res.lateness = np.full(len(chunks), np.nan, dtype=np.float32)
    call_id = str(uuid.uuid4()) if job.transport == "audiohook" else f"CA{uuid.uuid4().hex}"
    found = asyncio.Event()
    res.started = True
    watching = asyncio.create_task(_watch_call(stub, job, call_id, res, found))
    try:
        if job.transport == "audiohook":
            peer = AudioHookPeer(job.bridge_url, job.key, job.bridge_secret)
            async with connect(job.bridge_url, additional_headers=peer.headers()) as ws:
                await peer.open(ws, call_id, speaker)
                # Stereo as Genesys sends it: the customer (external), then a silent agent channel.
                frames = [
                    bytes(np.stack([np.frombuffer(c, np.uint8), np.full(len(c), 0xFF, np.uint8)], 1).ravel())
                    for c in chunks
                ]
                await _paced(frames, marked, start_at, job.frame_s, res, ws.send)
                await peer.close(ws)
        else:
            from twilio.request_validator import RequestValidator

            url = f"{job.bridge_url}/{TENANT}"
            signed = RequestValidator(job.bridge_secret).compute_signature(f"{TWILIO_PUBLIC}/{TENANT}", {})
            async with connect(url, additional_headers={"X-Twilio-Signature": signed}) as ws:
                stream_sid = "MZ" + call_id[2:]
                seq = 1
                await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                start = {
                    "callSid": call_id,
                    "streamSid": stream_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"customerId": speaker},
                }
                await ws.send(
                    json.dumps(
                        {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": start}
                    )
                )

                async def media(chunk: bytes) -> None:
                    nonlocal seq
                    seq += 1
                    payload = {"track": "inbound", "payload": base64.b64encode(chunk).decode()}
                    await ws.send(
                        json.dumps(
                            {
                                "event": "media",
                                "sequenceNumber": str(seq),
                                "streamSid": stream_sid,
                                "media": payload,
                            }
                        )
                    )

                await _paced(chunks, marked, start_at, job.frame_s, res, media)
                await ws.send(
                    json.dumps(
                        {
                            "event": "stop",
                            "sequenceNumber": str(seq + 1),
                            "streamSid": stream_sid,
                            "stop": {"callSid": call_id},
                        }
                    )
                )
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.recv(), 30)  # the bridge closes once the call is decided
        await asyncio.wait_for(watching, 30)
        res.completed = True
    except asyncio.CancelledError:
        res.error = "CUT_AT_DRAIN_DEADLINE"
    except Exception as exc:
        res.error = f"{job.transport.upper()}_{type(exc).__name__}"
    finally:
        if not watching.done():
            watching.cancel()
        with contextlib.suppress(BaseException):
            await watching


class AudioHookPeer:
    """What Genesys does on one AudioHook connection: a signed upgrade, open, close."""

    def __init__(self, url: str, key: str, secret_b64: str) -> None:
        self.url, self.key, self.secret = url, key, secret_b64
        self.seq = 0
        self.server_seq = 0
        self.session = ""

    def headers(self) -> dict:
        import base64
        import secrets
        import uuid

        from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

        from authsvc.bridges.audiohook import SIGNED

        secret = base64.b64decode(self.secret)

        class Key(HTTPSignatureKeyResolver):
            def resolve_private_key(self, key_id: str):
                return secret

        class Req:
            method = "GET"

            def __init__(self, url: str, headers: dict) -> None:
                self.url, self.headers = url, headers

        self.session = str(uuid.uuid4())
        headers = {
            "Audiohook-Organization-Id": ORG_ID,
            "Audiohook-Session-Id": self.session,
            "Audiohook-Correlation-Id": str(uuid.uuid4()),
            "X-API-KEY": self.key,
        }
        req = Req(self.url.replace("ws://", "http://"), headers)
        HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=Key()).sign(
            req,
            key_id=self.key,
            nonce=base64.b64encode(secrets.token_bytes(18)).decode(),
            covered_component_ids=SIGNED,  # what the bridge requires the signature to cover
        )
        return dict(req.headers)

    async def _send(self, ws, kind: str, parameters: dict) -> None:
        self.seq += 1
        await ws.send(
            json.dumps(
                {
                    "version": "2",
                    "type": kind,
                    "id": self.session,
                    "seq": self.seq,
                    "serverseq": self.server_seq,
                    "position": "PT0S",
                    "parameters": parameters,
                }
            )
        )

    async def _until(self, ws, kind: str) -> None:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            self.server_seq = message["seq"]
            if message["type"] == kind:
                return
            if message["type"] == "ping":
                continue
            if message["type"] == "disconnect":
                raise RuntimeError(f"disconnected: {message['parameters']}")

    async def open(self, ws, conversation: str, customer: str) -> None:
        await self._send(
            ws,
            "open",
            {
                "organizationId": ORG_ID,
                "conversationId": conversation,
                "participant": {"id": conversation, "ani": "", "aniName": "", "dnis": ""},
                "media": [
                    {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
                ],
                "customConfig": {"customerId": customer},
            },
        )
        await self._until(ws, "opened")

    async def close(self, ws) -> None:
        await self._send(ws, "close", {"reason": "end"})
        await self._until(ws, "closed")


async def _loop_lag_probe(samples: list[float], stop: asyncio.Event, period_s: float = 0.005) -> None:
    while not stop.is_set():
        due = time.monotonic() + period_s
        await asyncio.sleep(period_s)
        samples.append(time.monotonic() - due)


async def _run_client(job: ClientJob, ready, go) -> dict:
    import grpc

    from authsvc.api.v1 import verification_pb2_grpc

    messages = {
        v: [verification_pb2.VerifyRequest(audio=verification_pb2.AudioChunk(data=c)) for c in chunks]
        for v, (_, chunks, _) in job.variants.items()
    }
    marked = {v: frozenset(m) for v, (_, _, m) in job.variants.items()}
    async with grpc.aio.insecure_channel(job.address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        ready.put(job.worker)
        t0 = go.recv()
        lag: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(_loop_lag_probe(lag, stop))
        results = [StreamResult(i, v, off) for i, v, off in job.streams]
        if job.transport == "grpc":
            tasks = [
                asyncio.create_task(
                    _one_call(
                        stub, job, messages[r.variant], marked[r.variant], job.variants[r.variant][0], r, t0
                    )
                )
                for r in results
            ]
        else:
            tasks = [
                asyncio.create_task(
                    _one_bridge_call(
                        stub,
                        job,
                        job.variants[r.variant][1],
                        marked[r.variant],
                        job.variants[r.variant][0],
                        r,
                        t0,
                    )
                )
                for r in results
            ]
        _done, pending = await asyncio.wait(
            tasks, timeout=max(0.0, t0 + job.drain_deadline_s - time.monotonic())
        )
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        stop.set()
        await probe
    return {"worker": job.worker, "streams": results, "loop_lag": np.asarray(lag, dtype=np.float32)}


def client_main(job: ClientJob, ready, go, out) -> None:
    """Entry point of a client process: runs its streams, sends back the raw results."""
    result = asyncio.run(_run_client(job, ready, go))
    out.send(result)
    out.close()


NODE_CLIENT = Path(__file__).resolve().parent / "loadclient"


def ensure_node_client() -> None:
    """Installs the Node client's one package (@grpc/grpc-js, pinned in its lock file) once."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("--client node needs Node.js 18+ and npm on PATH (or pass --client python)")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_CLIENT, check=True
        )


class NodeClient:
    """A client process in Node (bench/loadclient/client.mjs) running a ClientJob's gRPC streams:
    the same messages, pacing and timestamps as client_main, at a fraction of the CPU per message
    (grpc-js), so the load generator takes less of a small machine shared with the server."""

    def __init__(self, job: ClientJob, workdir: Path) -> None:
        self.job = job
        self.job_path = workdir / f"node-job-{job.worker}.json"
        self.out_path = workdir / f"node-out-{job.worker}.json"
        audio = {
            v: [
                verification_pb2.VerifyRequest(audio=verification_pb2.AudioChunk(data=c)).SerializeToString()
                for c in chunks
            ]
            for v, (_, chunks, _) in job.variants.items()
        }
        spec = {
            "address": job.address,
            "key": job.key,
            "frame_s": job.frame_s,
            "call_timeout_s": job.call_timeout_s,
            "drain_deadline_s": job.drain_deadline_s,
            "variants": {
                str(v): {"messages": [_b64(m) for m in audio[v]], "marked": sorted(marked)}
                for v, (_, _, marked) in job.variants.items()
            },
            "streams": [
                {
                    "index": i,
                    "variant": str(v),
                    "start_offset_s": off,
                    "start": _b64(_start_message(job.variants[v][0], f"load-{i}").SerializeToString()),
                }
                for i, v, off in job.streams
            ],
        }
        self.job_path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen(
            ["node", str(NODE_CLIENT / "client.mjs"), str(self.job_path), str(self.out_path)],
            cwd=NODE_CLIENT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"node load client did not start (exit {self.proc.wait()})")

    def go(self, t0: float) -> None:
        self.proc.stdin.write(f"{t0!r}\n")  # type: ignore[union-attr]
        self.proc.stdin.close()  # type: ignore[union-attr]

    def result(self) -> dict:
        """What client_main sends back: StreamResults with decisions parsed, and the loop lag."""
        rc = self.proc.wait(timeout=self.job.drain_deadline_s + 120)
        if rc != 0:
            raise RuntimeError(f"node load client exited {rc}")
        raw = json.loads(self.out_path.read_text())
        streams = []
        for s in raw["streams"]:
            res = StreamResult(s["index"], int(s["variant"]), s["start_offset_s"], s["started"])
            res.completed, res.error = s["completed"], s["error"]
            res.sent = {int(k): t for k, t in s["sent"].items()}
            res.lateness = np.frombuffer(base64.b64decode(s["lateness"]), np.float32).copy()
            for t, b in s["received"]:
                d = verification_pb2.Decision.FromString(base64.b64decode(b))
                res.received.append((t, d.sequence, d.outcome, d.final, d.net_speech_seconds))
            streams.append(res)
        lag = np.frombuffer(base64.b64decode(raw["loop_lag"]), np.float32).copy()
        return {"worker": self.job.worker, "streams": streams, "loop_lag": lag}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the server under test --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`authsvc serve` in a subprocess with its own data directory, ports and store: the
    default SQLite file in the data directory, or a fresh schema of the PostgreSQL `store`."""

    def __init__(
        self,
        extra_args: list[str],
        env_overrides: dict[str, str],
        workdir: Path,
        store: str = "sqlite",
        policy: str = "",
        transport: str = "grpc",
        code: Code | None = None,
    ) -> None:
        self.code_root = code.root if code else ROOT
        self.data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=workdir))
        self.transport, self.bridge_url = transport, ""
        if transport == "audiohook":
            port = free_port()
            extra_args = [*extra_args, "--audiohook-listen", f"127.0.0.1:{port}"]
            self.bridge_url = f"ws://127.0.0.1:{port}/audiohook"
        elif transport == "twilio":
            port = free_port()
            extra_args = [
                *extra_args,
                "--twilio-listen",
                f"127.0.0.1:{port}",
                "--twilio-public-url",
                TWILIO_PUBLIC,
            ]
            self.bridge_url = f"ws://127.0.0.1:{port}/twilio"
        if policy:
            (self.data_dir / "policies").mkdir()
            (self.data_dir / "policies" / f"{TENANT}.toml").write_text(policy)
        self.store, self.schema = store, ""
        if store != "sqlite":
            self.schema = f"load_{os.getpid()}_{free_port()}"
            extra_args = [*extra_args, "--store", create_schema(store, self.schema)]
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.args = [
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.address,
            "--metrics-port",
            str(self.metrics_port),
            *extra_args,
        ]
        env = {**os.environ, **env_overrides, **(code.env if code else {})}
        self.log_path = workdir / f"server-{self.port}.log"
        self._log = self.log_path.open("w")
        cmd = [sys.executable, "-m", "authsvc.cli.main", *self.args]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.code_root
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"authsvc serve exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    r = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING and "warmed up" in self.log_tail():
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.3)
        raise SystemExit(f"authsvc serve not ready after {timeout_s:.0f} s: {self.log_tail()}")

    def provision(self) -> tuple[str, str]:
        """The tenant and one key for it (telephony, enrollment), made with the platform-admin
        key the server's first start wrote, as an operator's first steps are; -> (key, the
        bridge's secret: the key's AudioHook client secret, or the tenant's Twilio token)."""
        import grpc

        from authsvc.api.v1 import identity_pb2, identity_pb2_grpc

        admin = (("authorization", f"Bearer {(self.data_dir / 'admin.credential').read_text().strip()}"),)
        with grpc.insecure_channel(self.address) as ch:
            identity_pb2_grpc.TenantServiceStub(ch).CreateTenant(
                identity_pb2.CreateTenantRequest(name=TENANT, sector="general"), metadata=admin, timeout=30
            )
            credentials = identity_pb2_grpc.CredentialServiceStub(ch)
            reply = credentials.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(
                    tenant=TENANT, roles=["telephony", "enrollment"], audiohook_client_secret=True
                ),
                metadata=admin,
                timeout=30,
            )
            if self.transport == "twilio":
                credentials.SetTwilioAuthToken(
                    identity_pb2.SetTwilioAuthTokenRequest(tenant=TENANT, auth_token=TWILIO_TOKEN),
                    metadata=admin,
                    timeout=30,
                )
                return reply.api_key, TWILIO_TOKEN
        return reply.api_key, reply.audiohook_client_secret

    def log_tail(self, n: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_text()[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.schema:
            drop_schema(self.store, self.schema)


def enroll(address: str, key: str, speakers: dict[str, tuple[list[np.ndarray], list[np.ndarray]]]) -> dict:
    import grpc

    from authsvc.api.v1 import enrollment_pb2_grpc

    started = time.monotonic()
    net = {}
    auth = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(address) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        register = ch.unary_unary(
            "/authsvc.v1.EnrollmentService/RegisterCustomer",
            request_serializer=enrollment_pb2.RegisterCustomerRequest.SerializeToString,
            response_deserializer=bytes,
        )
        for spk, (wavs, _) in speakers.items():
            # Its reply is not read: it changed type since (a Customer before issue 12), and an older
            # commit under test may send either.
            register(
                enrollment_pb2.RegisterCustomerRequest(
                    tenant=TENANT,
                    customer_id=f"spk-{spk}",
                    methods=[common_pb2.AUTH_METHOD_VOICE],
                    consent_text_version="bench",
                ),
                metadata=auth,
                timeout=60,
            )
            for j, wav in enumerate(wavs):
                r = stub.EnrollVoice(
                    enrollment_pb2.EnrollVoiceRequest(
                        tenant=TENANT,
                        customer_id=f"spk-{spk}",
                        format=common_pb2.AudioFormat(
                            encoding=common_pb2.AUDIO_ENCODING_PCM16_LE, sample_rate_hz=SR
                        ),
                        audio=encode(wav, Encoding.PCM16_LE),
                        label=f"utt-{j}",
                    ),
                    metadata=auth,
                    timeout=60,
                )
                net[spk] = net.get(spk, 0.0) + r.net_speech_seconds
    return {"seconds": round(time.monotonic() - started, 2), "net_speech_s": net}


def scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {sample name with labels: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "encoder")
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def _hist(
    before: dict, after: dict, name: str, labels: str = ""
) -> tuple[list[tuple[float, float]], float, float]:
    """A histogram's level-only (bucket bound, cumulative count), sum and count; `labels` picks one
    child of a labelled histogram ("stage=embed"; scrape's sorted k=v form, le left out)."""
    buckets = []
    for key, value in after.items():
        if not key.startswith(f"{name}_bucket{{"):
            continue
        pairs = key[len(name) + len("_bucket{") : -1].split(",")
        le = next(p for p in pairs if p.startswith("le="))[3:]
        if ",".join(p for p in pairs if not p.startswith("le=")) == labels:
            buckets.append((float(le), value - before.get(key, 0.0)))
    buckets.sort()
    total = after.get(f"{name}_sum{{{labels}}}", 0.0) - before.get(f"{name}_sum{{{labels}}}", 0.0)
    count = after.get(f"{name}_count{{{labels}}}", 0.0) - before.get(f"{name}_count{{{labels}}}", 0.0)
    return buckets, total, count


def _hist_quantile(buckets: list[tuple[float, float]], q: float, interpolate: bool = True) -> float | None:
    """Prometheus histogram_quantile: linear interpolation inside the bucket that holds rank q.

    interpolate=False gives that bucket's upper bound instead (for integer-valued batch sizes).
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if not interpolate:
                return bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def embedding_figures(before: dict, after: dict, wall_s: float) -> dict:
    bs, _, batches = _hist(before, after, "authsvc_embed_batch_size")
    qw, qw_sum, requests = _hist(before, after, "authsvc_embed_queue_wait_seconds")
    cb, compute_s, _ = _hist(before, after, "authsvc_embed_compute_seconds")

    def delta(name: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(name + "{"))

    audio_s = delta("authsvc_embed_audio_seconds_total")

    def ms(x: float | None) -> float | None:
        return None if x is None else round(1000 * x, 1)

    return {
        "requests": int(requests),
        "batches": int(batches),
        "mean_batch": round(requests / batches, 2) if batches else None,
        # bucket upper bounds (1, 2, 4, 8 ...): "p50 <= 2" etc.
        "batch_size_p50_le": _hist_quantile(bs, 0.5, interpolate=False),
        "batch_size_p99_le": _hist_quantile(bs, 0.99, interpolate=False),
        "queue_wait_ms_mean": ms(qw_sum / requests) if requests else None,
        "queue_wait_ms_p50": ms(_hist_quantile(qw, 0.5)),
        "queue_wait_ms_p99": ms(_hist_quantile(qw, 0.99)),
        "compute_ms_per_batch_mean": ms(compute_s / batches) if batches else None,
        "compute_ms_per_batch_p99": ms(_hist_quantile(cb, 0.99)),
        "compute_s": round(compute_s, 1),
        # Share of the level's wall time the batcher's single worker spent in encoder calls:
        # near 1.0, embedding is the bottleneck whatever else the CPU does.
        "compute_busy_fraction": round(compute_s / wall_s, 3) if wall_s else None,
        "audio_s": round(audio_s, 1),
        "audio_s_per_request": round(audio_s / requests, 2) if requests else None,
        "compute_ms_per_audio_s": round(1000 * compute_s / audio_s, 2) if audio_s else None,
        "refused": int(delta("authsvc_embed_refused_total")),
        "dropped": int(delta("authsvc_embed_dropped_total")),
    }


def stage_figures(before: dict, after: dict) -> dict:
    """Where a decision's time goes, from the server's own histograms (code that has them):
    the voice look's stages (receive, embed, score, decide, total) and the store's units of work
    (begin: waiting for the pool or write lock; commit; the whole transaction)."""

    def summary(name: str, labels: str) -> dict | None:
        buckets, total, count = _hist(before, after, name, labels)
        if not count:
            return None
        return {
            "count": int(count),
            "mean_ms": round(1000 * total / count, 1),
            "p50_ms": round(1000 * (_hist_quantile(buckets, 0.5) or 0.0), 1),
            "p99_ms": round(1000 * (_hist_quantile(buckets, 0.99) or 0.0), 1),
        }

    out: dict[str, dict] = {}
    for stage in ("receive", "embed", "score", "decide", "total"):
        if (s := summary("authsvc_look_seconds", f"stage={stage}")) is not None:
            out.setdefault("look", {})[stage] = s
    for op in ("begin", "commit", "transaction"):
        if (s := summary("authsvc_store_operation_duration_seconds", f"operation={op}")) is not None:
            out.setdefault("store", {})[op] = s
    return out


# -- resource sampling ------------------------------------------------------------------


class Sampler(threading.Thread):
    """Once a second: server CPU by thread group and RSS, client CPU, machine busy time."""

    def __init__(self, server_pid: int, client_pids: list[int], period_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.server = psutil.Process(server_pid)
        self.clients = [psutil.Process(p) for p in client_pids]
        self.period_s = period_s
        self.rows: list[dict] = []
        self._halt = threading.Event()

    def _thread_groups(self) -> dict[str, float]:
        """CPU seconds of the server's threads: event loop (main), gRPC core, everything else."""
        groups = {"event_loop": 0.0, "grpc": 0.0, "other": 0.0}
        pid = self.server.pid
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                comm = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a thread that just ended
            cpu = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            if int(task.name) == pid:
                groups["event_loop"] += cpu
            elif comm.startswith(("grpc", "event_engine", "lifeguard")):
                groups["grpc"] += cpu
            else:
                groups["other"] += cpu
        return groups

    def sample(self) -> dict:
        ps = self.psutil
        row: dict = {"t": time.monotonic()}
        try:
            c = self.server.cpu_times()
            threads = self._thread_groups()
            # The server's worker processes (the encoder's and countermeasure's models, since
            # issue 13) are the server too: their CPU and memory are counted with it.
            workers_cpu, workers_rss = 0.0, 0
            for child in self.server.children(recursive=True):
                with contextlib.suppress(ps.Error):
                    wc = child.cpu_times()
                    workers_cpu += wc.user + wc.system
                    workers_rss += child.memory_info().rss
            threads["workers"] = workers_cpu
            row["server_cpu"] = c.user + c.system + workers_cpu
            row["server_rss"] = self.server.memory_info().rss + workers_rss
            row["server_threads"] = threads
        except ps.Error:
            pass
        client = 0.0
        for p in self.clients:
            with contextlib.suppress(ps.Error):
                ct = p.cpu_times()
                client += ct.user + ct.system
        row["client_cpu"] = client
        m = ps.cpu_times()
        row["machine_busy"] = m.user + m.system + m.nice + getattr(m, "irq", 0) + getattr(m, "softirq", 0)
        row["machine_busy"] += getattr(m, "steal", 0)
        return row

    def run(self) -> None:
        while not self._halt.is_set():
            self.rows.append(self.sample())
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.rows.append(self.sample())

    def hwm_bytes(self) -> int | None:
        """Peak RSS of the server, plus each of its worker processes' own peak."""
        pids = [self.server.pid]
        with contextlib.suppress(self.psutil.Error):
            pids += [c.pid for c in self.server.children(recursive=True)]
        total = None
        for pid in pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total = (total or 0) + int(line.split()[1]) * 1024
        return total

    def window(self, t_from: float, t_to: float) -> dict:
        """Average cores used over [t_from, t_to], from the samples nearest its ends."""
        rows = [r for r in self.rows if "server_cpu" in r]
        if len(rows) < 2:
            return {}
        a = min(rows, key=lambda r: abs(r["t"] - t_from))
        b = min(rows, key=lambda r: abs(r["t"] - t_to))
        dt = b["t"] - a["t"]
        if dt <= 0:
            return {}
        ncpu = os.cpu_count() or 1
        server = (b["server_cpu"] - a["server_cpu"]) / dt
        client = (b["client_cpu"] - a["client_cpu"]) / dt
        busy = (b["machine_busy"] - a["machine_busy"]) / dt
        threads = {
            k: round((b["server_threads"][k] - a["server_threads"][k]) / dt, 3) for k in a["server_threads"]
        }
        return {
            "seconds": round(dt, 1),
            "server_cores": round(server, 3),
            "server_pct_of_machine": round(100 * server / ncpu, 1),
            "server_cores_by_thread": threads,
            "client_cores": round(client, 3),
            "machine_busy_cores": round(busy, 3),
            # What neither the server nor the load generator used: this script's parent and
            # any neighbour on the machine.
            "other_cores": round(max(0.0, busy - server - client), 3),
        }

    def peak_server_cores(self) -> float | None:
        rows = [r for r in self.rows if "server_cpu" in r]
        rates = [(b["server_cpu"] - a["server_cpu"]) / (b["t"] - a["t"]) for a, b in itertools.pairwise(rows)]
        return round(max(rates), 3) if rates else None


# -- one level --------------------------------------------------------------------------


def pct(values, qs=(50, 95, 99)) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"count": 0}
    out = {"count": int(arr.size)}
    for q in qs:
        out[f"p{q}"] = round(float(np.percentile(arr, q)) * 1000, 1)
    out["max"] = round(float(arr.max()) * 1000, 1)
    return out


@dataclass(frozen=True)
class Detectors:
    """The fraud detectors a level's server runs: `serve` flags and the load tenant's policy."""

    label: str
    what: str
    server_args: tuple[str, ...]
    policy: str


def detector_settings(countermeasure_dir: Path) -> dict[str, Detectors]:
    # "on" flags rather than acts on a high risk: every call re-sends a speaker's few utterances,
    # so later calls really are replays of earlier ones, and a step-up or rejection would change
    # how many decisions a call gets (and lock the speakers out). The compute is the same.
    return {
        "off": Detectors(
            "off",
            "replay, synthetic speech and watchlist screening ignored by the tenant's policy (not run)",
            (),
            'sector = "general"\n[fraud]\nreplay = "ignore"\nsynthetic = "ignore"\nfraudster = "ignore"\n',
        ),
        "on": Detectors(
            "on",
            f"replay, synthetic speech (AASIST from {countermeasure_dir}) and watchlist screening at "
            "every scored look, high risks flagged",
            ("--countermeasure-dir", str(countermeasure_dir)),
            'sector = "general"\n[fraud]\nreplay = "flag"\nsynthetic = "flag"\nfraudster = "flag"\n',
        ),
    }


@dataclass
class Code:
    """The code a server runs: the working tree, or a commit checked out in a worktree of its own
    (same environment), so an old commit and today's are measured side by side in one run."""

    label: str
    root: Path
    commit: str
    identity: bool  # API keys exist (issue 9): the level provisions its tenant and key
    fraud: bool  # the fraud detectors exist (issue 11)
    voice: dict
    max_looks: int

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.root)}


_PROBE = """
import json, dataclasses
from authsvc.policy.schema import PolicyBook
import authsvc.policy.schema as schema
p = PolicyBook(None).get("loadtest")
voice = dataclasses.asdict(p.voice)
d = getattr(p, "decision", None)
looks = 1 if voice.get("threshold") is not None else (d.max_looks if d is not None else 10**6)
print(json.dumps({"voice": voice, "max_looks": looks, "fraud": hasattr(schema, "FraudRules")}))
"""


def prepare_code(spec: str, workdir: Path) -> Code:
    """`spec`: "worktree" (the working tree) or a git revision, checked out detached under
    `workdir`; its policy defaults are read by its own code."""

    def git(*cmd: str, cwd: Path = ROOT) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()

    if spec == "worktree":
        root, label, commit = ROOT, "working tree", git("rev-parse", "HEAD")
    else:
        commit = git("rev-parse", f"{spec}^{{commit}}")
        root = workdir / f"code-{commit[:12]}"
        if not root.exists():
            git("worktree", "add", "--detach", str(root), commit)
        label = commit[:7]
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(probe.stdout)
    return Code(
        label,
        root,
        commit,
        (root / "authsvc" / "identity").is_dir(),
        facts["fraud"],
        facts["voice"],
        facts["max_looks"],
    )


def release_code(code: Code) -> None:
    if code.root != ROOT:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(code.root)], cwd=ROOT, capture_output=True
        )


@dataclass
class Plan:
    variants: list[CallAudio]
    speakers: dict
    voice: object
    args: argparse.Namespace
    detectors: Detectors | None = None
    transport: str = "grpc"
    code: Code | None = None

    @property
    def frame_ms(self) -> int:
        return TRANSPORT_FRAME_MS.get(self.transport, self.args.frame_ms)


def run_level(n: int, plan: Plan, workdir: Path) -> dict:
    args = plan.args
    level_started = time.monotonic()
    det = plan.detectors
    server = Server(
        [*args.server_arg, *(det.server_args if det else ())],
        dict(kv.split("=", 1) for kv in args.server_env),
        workdir,
        args.store,
        det.policy if det else "",
        plan.transport,
        plan.code,
    )
    try:
        server.wait_ready()
        # A commit from before API keys (issue 9) takes calls without one.
        key, bridge_secret = server.provision() if plan.code is None or plan.code.identity else ("", "")
        enrolled = enroll(server.address, key, plan.speakers)
        startup_s = time.monotonic() - level_started

        streams = []
        for i in range(n):
            # variants are rotation-major: stream i gets speaker i mod 10, rotation (i // 10) mod 6
            streams.append((i, i % len(plan.variants), args.ramp_s * i / n))
        k = max(1, min(args.clients, n))
        ctx = mp.get_context("spawn")
        ready = ctx.Queue()
        procs, gos, outs = [], [], []
        drain_deadline = args.ramp_s + args.speech_s + args.drain_s
        node = args.client == "node" and plan.transport == "grpc"  # the bridges' peers are Python's
        for w in range(k):
            mine = streams[w::k]
            used = {v for _, v, _ in mine}
            job = ClientJob(
                worker=w,
                address=server.address,
                key=key,
                streams=mine,
                variants={
                    v: (
                        f"spk-{plan.variants[v].speaker}",
                        plan.variants[v].chunks,
                        [e[1] for e in plan.variants[v].events],
                    )
                    for v in used
                },
                frame_s=plan.frame_ms / 1000,
                call_timeout_s=drain_deadline + 30,
                drain_deadline_s=drain_deadline,
                transport=plan.transport,
                bridge_url=server.bridge_url,
                bridge_secret=bridge_secret,
            )
            if node:
                procs.append(NodeClient(job, workdir))
                continue
            go_recv, go_send = ctx.Pipe(duplex=False)
            out_recv, out_send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=client_main, args=(job, ready, go_recv, out_send), name=f"load-client-{w}")
            p.start()
            procs.append(p)
            gos.append(go_send.send)
            outs.append(out_recv.recv)
        if node:
            for c in procs:
                c.wait_ready()
            gos, outs = [c.go for c in procs], [c.result for c in procs]
        else:
            for _ in range(k):
                ready.get(timeout=120)
        sampler = Sampler(server.proc.pid, [p.pid for p in procs])
        before = scrape(server.metrics_url)
        t0 = time.monotonic() + 1.0
        sampler.start()
        for go in gos:
            go(t0)
        raw = [result() for result in outs]
        t_end = time.monotonic()
        after = scrape(server.metrics_url)
        sampler.stop()
        hwm = sampler.hwm_bytes()
        for p in procs:
            if not node:
                p.join(30)
        wall = t_end - t0
        result = summarise(n, plan, raw, wall)
        result["startup_s"] = round(startup_s, 1)
        log_text = server.log_path.read_text()
        result["server_log"] = [line.split(" ", 3)[-1] for line in log_text.splitlines() if " INFO " in line][
            :10
        ]
        result["server_log_warnings"] = {
            "scoring_deferred": log_text.count("voice scoring deferred"),
            "all": sum(" WARNING " in line for line in log_text.splitlines()),
        }
        # The working tree may change between levels (other work); a commit's worktree does not.
        result["code"] = (
            code_version() if plan.code is None or plan.code.root == ROOT else {"commit": plan.code.commit}
        )
        result["enrollment"] = enrolled
        result["server"] = {
            "steady": sampler.window(t0 + args.ramp_s, t0 + args.speech_s),
            "whole_level": sampler.window(t0, t_end),
            "peak_cores_1s": sampler.peak_server_cores(),
            "rss_peak_mb": round(hwm / 2**20, 1) if hwm else None,
            "rss_peak_sampled_mb": round(max(r.get("server_rss", 0) for r in sampler.rows) / 2**20, 1),
        }
        result["embedding"] = embedding_figures(before, after, wall)
        result["stages"] = stage_figures(before, after)
        result["limits"] = diagnose(result, args)
        result["level_s"] = round(time.monotonic() - level_started, 1)
        return result
    finally:
        server.stop()


def summarise(n: int, plan: Plan, raw: list[dict], wall: float) -> dict:
    args = plan.args
    errors: dict[str, int] = {}
    decision_lat: list[float] = []
    pending_lat: list[float] = []
    expected = received_ok = shifted = early_or_extra = missing = 0
    outcomes: dict[str, int] = {}
    lateness = []
    started = completed = 0
    lag = np.concatenate([r["loop_lag"] for r in raw]) if raw else np.zeros(0)
    for r in raw:
        for s in r["streams"]:
            started += s.started
            completed += s.completed
            if s.error:
                errors[s.error] = errors.get(s.error, 0) + 1
            if s.lateness is not None:
                lateness.append(s.lateness[~np.isnan(s.lateness)])
            # k-th score decision received <-> k-th predicted score point (and the same for PENDING)
            events = plan.variants[s.variant].events
            received: dict[bool, list] = {True: [], False: []}
            for t, seq, outcome, final, net in s.received:
                name = verification_pb2.Outcome.Name(outcome).removeprefix("OUTCOME_")
                if final:
                    outcomes["final_" + name] = outcomes.get("final_" + name, 0) + 1
                    continue
                received[outcome != PENDING].append((t, seq, net))
                if outcome != PENDING:
                    outcomes[name] = outcomes.get(name, 0) + 1
            # A watcher of a bridge call joins after its first PENDING updates and starts from the
            # call's latest: only its score decisions are matched (the 300 ms target's).
            for is_score in (True,) if plan.transport != "grpc" else (True, False):
                predicted = [e for e in events if e[2] == is_score]
                got = received[is_score]
                for e, (t, seq, net) in zip(predicted, got, strict=False):
                    sent = s.sent.get(e[1])
                    if sent is None or net < e[3] - 1e-6:
                        early_or_extra += 1  # before its decision point: prediction and server disagree
                        continue
                    if abs(net - e[3]) > 1e-6 or seq != e[0]:
                        shifted += 1  # later than its point: the server deferred a scoring
                    (decision_lat if is_score else pending_lat).append(t - sent)
                early_or_extra += max(0, len(got) - len(predicted))
                if is_score:
                    expected += len(predicted)
                    received_ok += min(len(got), len(predicted))
                    missing += max(0, len(predicted) - len(got))
    lat_all = np.concatenate(lateness) if lateness else np.zeros(0)
    decision = pct(decision_lat)
    client_lag = pct(lag, (50, 99))
    held = (
        decision.get("count", 0) > 0
        and decision["p99"] < args.target_ms
        and not errors
        and missing == 0
        and early_or_extra == 0
        and completed == n
    )
    return {
        "n": n,
        "held": bool(held),
        "client_limited": bool(client_lag.get("p99", 0) > args.client_lag_ms),
        "streams": {"planned": n, "started": int(started), "completed": int(completed)},
        "errors": errors,
        "decisions": {
            "expected_scores": expected,
            "received_scores": received_ok,
            "missing_scores": missing,
            # decisions that came at a later net speech than predicted (scoring deferred under load)
            "shifted": shifted,
            # decisions before their predicted point, or more than predicted: the prediction is wrong
            "early_or_extra": early_or_extra,
            "pending_updates": len(pending_lat),
        },
        "outcomes": outcomes,
        "latency_ms": {"decision": decision, "pending": pct(pending_lat)},
        "client": {
            "processes": len(raw),
            "lateness_ms": pct(lat_all, (50, 99)),
            "loop_lag_ms": client_lag,
        },
        "wall_s": round(wall, 1),
    }


def diagnose(r: dict, args: argparse.Namespace) -> list[str]:
    """Plain statements of what was saturated, from the figures."""
    out = []
    steady = r["server"]["steady"] or r["server"]["whole_level"]
    emb = r["embedding"]
    ncpu = os.cpu_count() or 1
    # The batcher's one worker is a single-server queue: waits grow steeply past ~70 % busy.
    if emb.get("compute_busy_fraction") is not None and emb["compute_busy_fraction"] >= 0.7:
        out.append(
            f"embedding worker busy {emb['compute_busy_fraction']:.0%} of the level "
            f"({emb['requests']} requests, {emb['audio_s_per_request']} s audio each, "
            f"{emb['compute_ms_per_audio_s']} ms compute per audio s, "
            f"queue wait p99 {emb['queue_wait_ms_p99']} ms)"
        )
    loop = steady.get("server_cores_by_thread", {}).get("event_loop")
    if loop is not None and loop >= 0.85:
        out.append(f"server event-loop thread at {loop:.2f} cores (per-chunk gRPC/VAD handling)")
    if steady.get("machine_busy_cores", 0) >= 0.9 * ncpu:
        out.append(
            f"machine CPU saturated: {steady['machine_busy_cores']:.2f} of {ncpu} cores busy "
            f"(server {steady['server_cores']:.2f}, client {steady['client_cores']:.2f}, "
            f"other {steady['other_cores']:.2f})"
        )
    if steady.get("other_cores", 0) >= 0.25:
        out.append(
            f"neighbours (other processes on this machine) used {steady['other_cores']:.2f} cores: "
            "the figures understate what the server does on a machine of its own"
        )
    if r["client_limited"]:
        out.append(f"client loop lag p99 {r['client']['loop_lag_ms']['p99']} ms: the load generator lags")
    if not out:
        out.append("nothing saturated")
    return out


# -- search, report ---------------------------------------------------------------------


def machine_busy_cores(window_s: float) -> float:
    import psutil

    def busy() -> float:
        m = psutil.cpu_times()
        return m.user + m.system + m.nice + getattr(m, "irq", 0) + getattr(m, "softirq", 0)

    a = busy()
    time.sleep(window_s)
    return (busy() - a) / window_s


def wait_quiet(limit_s: float, quiet_cores: float) -> tuple[float, float]:
    """Waits (up to limit_s) until other processes use less than quiet_cores; -> (waited, busy cores)."""
    started = time.monotonic()
    busy = machine_busy_cores(2.0)
    while busy >= quiet_cores and time.monotonic() - started < limit_s:
        busy = machine_busy_cores(5.0)
    return time.monotonic() - started, busy


def estimate_level_s(args: argparse.Namespace, overhead_s: float) -> float:
    return args.ramp_s + args.speech_s + 5 + overhead_s


def search(plan: Plan, workdir: Path) -> list[dict]:
    args = plan.args
    levels = sorted(set(args.levels))
    budget_end = time.monotonic() + args.budget_s
    overhead = 15.0  # server start + enrollment + client start; replaced by what is measured
    results: dict[int, dict] = {}

    def run(n: int) -> bool:
        nonlocal overhead, budget_end
        need = estimate_level_s(args, overhead)
        left = budget_end - time.monotonic()
        if need > left:
            print(f"  N={n}: skipped, needs ~{need:.0f} s, {left:.0f} s of the budget left", flush=True)
            return False
        waited, busy = wait_quiet(args.quiet_wait_s, args.quiet_cores)
        budget_end += waited
        print(
            f"  N={n}: running (~{need:.0f} s, {left:.0f} s of the budget left; machine busy "
            f"{busy:.2f} cores before it, waited {waited:.0f} s for it to be quiet)",
            flush=True,
        )
        r = run_level(n, plan, workdir)
        r["before_level"] = {"machine_busy_cores": round(busy, 2), "waited_for_quiet_s": round(waited, 1)}
        overhead = r["level_s"] - (args.ramp_s + args.speech_s)
        results[n] = r
        print("    " + row(r), flush=True)
        for line in r["limits"]:
            print(f"    limit: {line}", flush=True)
        return True

    for n in levels:
        failed = [m for m, r in results.items() if not r["held"]]
        if failed and n > min(failed):
            print(f"  N={n}: skipped, N={min(failed)} already failed", flush=True)
            continue
        if not run(n):
            break
    for _ in range(args.bisect_steps):
        held = [m for m, r in results.items() if r["held"]]
        failed = [m for m, r in results.items() if not r["held"]]
        if not failed:
            break
        lo, hi = (max(held) if held else 0), min(failed)
        if hi - lo <= max(2, 0.1 * hi):
            break
        if not run((lo + hi) // 2):
            break
    return [results[m] for m in sorted(results)]


def row(r: dict) -> str:
    nan = float("nan")
    d = r["latency_ms"]["decision"]
    p = r["latency_ms"]["pending"]
    s = r["server"]["steady"] or r["server"]["whole_level"]
    errs = sum(r["errors"].values())
    return (
        f"N={r['n']:4d} {'HELD' if r['held'] else 'fail'} decisions {d.get('count', 0):5d} "
        f"p50 {d.get('p50', nan):7.1f} p99 {d.get('p99', nan):7.1f} max {d.get('max', nan):7.1f} ms | "
        f"pending p99 {p.get('p99', nan):6.1f} ms | server {s.get('server_cores', nan):.2f} cores "
        f"({s.get('server_pct_of_machine', nan):.0f}%) rss {r['server']['rss_peak_mb']} MB | "
        f"client {s.get('client_cores', nan):.2f} cores, lateness p99 "
        f"{r['client']['lateness_ms'].get('p99')} ms, loop lag p99 "
        f"{r['client']['loop_lag_ms'].get('p99')} ms | errors {errs} "
        f"missing {r['decisions']['missing_scores']} shifted {r['decisions']['shifted']} "
        f"early/extra {r['decisions']['early_or_extra']} | "
        f"embed busy {r['embedding']['compute_busy_fraction']}{_stages_text(r.get('stages') or {})}"
    )


def _stages_text(stages: dict) -> str:
    """' | look p50/p99 ms receive 1/4 embed ...' where the server's code has the histograms."""
    parts = [f"{k} {v['p50_ms']:.0f}/{v['p99_ms']:.0f}" for k, v in stages.get("look", {}).items()]
    parts += [f"tx {k} {v['p50_ms']:.0f}/{v['p99_ms']:.0f}" for k, v in stages.get("store", {}).items()]
    return f" | p50/p99 ms {', '.join(parts)}" if parts else ""


def table(results: list[dict]) -> str:
    head = (
        f"{'N':>5} {'held':>5} {'decis':>6} {'p50ms':>7} {'p95ms':>7} {'p99ms':>8} {'maxms':>8} "
        f"{'pend99':>7} {'srvCPU':>7} {'srv%':>5} {'loop':>5} {'rssMB':>6} {'cliCPU':>6} {'late99':>6} "
        f"{'embBusy':>7} {'batch':>5} {'qw99ms':>7} {'errors':>6}"
    )
    lines = [head]
    for r in results:
        d = r["latency_ms"]["decision"]
        s = r["server"]["steady"] or r["server"]["whole_level"]
        e = r["embedding"]
        nan = float("nan")
        lines.append(
            f"{r['n']:>5} {('yes' if r['held'] else 'no'):>5} {d.get('count', 0):>6} "
            f"{d.get('p50', nan):>7.1f} "
            f"{d.get('p95', nan):>7.1f} {d.get('p99', nan):>8.1f} {d.get('max', nan):>8.1f} "
            f"{r['latency_ms']['pending'].get('p99', nan):>7.1f} {s.get('server_cores', nan):>7.2f} "
            f"{s.get('server_pct_of_machine', nan):>5.0f} "
            f"{s.get('server_cores_by_thread', {}).get('event_loop', nan):>5.2f} "
            f"{r['server']['rss_peak_mb'] or nan:>6.0f} {s.get('client_cores', nan):>6.2f} "
            f"{r['client']['lateness_ms'].get('p99', nan):>6.1f} {e['compute_busy_fraction'] or nan:>7.2f} "
            f"{e['mean_batch'] or nan:>5.1f} {e['queue_wait_ms_p99'] or nan:>7.1f} "
            f"{sum(r['errors'].values()) + r['decisions']['missing_scores']:>6}"
        )
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], target_ms: float, path: Path, title: str) -> None:
    """Decision latency and server CPU against N, one colour per fraud-detector setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def steady(r: dict) -> dict:
        return r["server"]["steady"] or r["server"]["whole_level"]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for (label, results), colour in zip(runs.items(), ("tab:blue", "tab:orange", "tab:green"), strict=False):
        ns = [r["n"] for r in results]
        name = label
        for key, style in (("p99", "o-"), ("p50", "s--")):
            values = [r["latency_ms"]["decision"].get(key, np.nan) for r in results]
            ax1.plot(ns, values, style, color=colour, label=f"{name}: decision {key}")
        pending = [r["latency_ms"]["pending"].get("p99", np.nan) for r in results]
        ax1.plot(ns, pending, "^:", color=colour, label=f"{name}: PENDING p99")
        ax2.plot(
            ns,
            [steady(r).get("server_cores", np.nan) for r in results],
            "o-",
            color=colour,
            label=f"{name}: server (all threads)",
        )
        loop = [steady(r).get("server_cores_by_thread", {}).get("event_loop", np.nan) for r in results]
        ax2.plot(ns, loop, "s--", color=colour, label=f"{name}: event-loop thread")
        busy = [r["embedding"]["compute_busy_fraction"] or np.nan for r in results]
        ax2.plot(ns, busy, "d-.", color=colour, label=f"{name}: embed worker busy (fraction)")
    ax1.axhline(target_ms, color="red", lw=1, label=f"{target_ms:g} ms target")
    ax1.set_yscale("log")
    ax1.set_xlabel("concurrent calls N")
    ax1.set_ylabel("chunk reaching decision point -> decision (ms)")
    ax1.legend(fontsize=7)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.set_title("decision latency")
    ax2.axhline(os.cpu_count() or 1, color="grey", lw=1, label=f"{os.cpu_count()} cores")
    ax2.set_xlabel("concurrent calls N")
    ax2.set_ylabel("cores (steady window)")
    ax2.legend(fontsize=7)
    ax2.grid(True, alpha=0.3)
    ax2.set_title("CPU")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", type=Path, default=None, help="data folder (default $AUTHSVC_DATA or ../shared/data)"
    )
    p.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=list(DEFAULT_LEVELS),
        help="concurrency levels to try, ascending (default 25,50,100,150,200)",
    )
    p.add_argument(
        "--bisect-steps", type=int, default=3, help="extra levels bisecting held/failed (default 3)"
    )
    p.add_argument("--budget-s", type=float, default=720.0, help="total seconds for all levels (default 720)")
    p.add_argument("--ramp-s", type=float, default=30.0, help="streams start evenly over this (default 30)")
    p.add_argument("--speech-s", type=float, default=60.0, help="audio seconds per stream (default 60)")
    p.add_argument("--drain-s", type=float, default=20.0, help="after the last chunk, cut streams after this")
    p.add_argument("--frame-ms", type=int, default=20, help="chunk size (default 20 ms)")
    p.add_argument("--clients", type=int, default=1, help="client processes (default 1)")
    p.add_argument(
        "--client",
        choices=("node", "python"),
        default="node",
        help="gRPC load client: node (grpc-js, bench/loadclient; default) or python (grpc.aio); "
        "the bridges' peers are always Python",
    )
    p.add_argument("--target-ms", type=float, default=300.0, help="p99 decision latency target (default 300)")
    p.add_argument(
        "--client-lag-ms",
        type=float,
        default=20.0,
        help="client loop lag p99 that marks a level client-limited",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `authsvc serve` argument (repeatable; use --server-arg=--threads=1)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        help="KEY=VALUE for the server's environment (repeatable)",
    )
    p.add_argument(
        "--quiet-wait-s",
        type=float,
        default=120.0,
        help="before each level, wait up to this long (not counted in the budget) for the machine to be "
        "quiet (default 120)",
    )
    p.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="'quiet': other processes busy less than this many cores (default 0.3)",
    )
    p.add_argument(
        "--store",
        default="sqlite",
        help="sqlite (default: the server's own file in its data directory) or a PostgreSQL DSN; each "
        "level's server then gets a fresh schema of that database, dropped after the level",
    )
    p.add_argument(
        "--detectors",
        type=lambda s: [x for x in s.split(",") if x],
        default=["off", "on"],
        help="fraud detector settings to run, each with its own search and --budget-s: off, on "
        "(default off,on)",
    )
    p.add_argument(
        "--code",
        action="append",
        help="the code the servers run: 'worktree' (the working tree), or a git revision checked "
        "out in a worktree of its own; give it more than once to run them side by side, the first "
        "as the baseline, e.g. --code 63c001a --code HEAD (default: worktree)",
    )
    p.add_argument(
        "--transport",
        type=lambda s: [x for x in s.split(",") if x],
        default=["grpc"],
        help="how calls reach the server: grpc (Verify), audiohook, twilio (the bridges, decisions by "
        "WatchSession); several comma-separated run side by side (default grpc)",
    )
    p.add_argument(
        "--countermeasure-dir",
        type=Path,
        help="AASIST model folder for detectors on (default <data>/../models/aasist)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = p.parse_args(argv)
    if not args.detectors or set(args.detectors) - {"off", "on"}:
        p.error("--detectors takes off, on or off,on")
    if not args.transport or set(args.transport) - {"grpc", "audiohook", "twilio"}:
        p.error("--transport takes grpc, audiohook, twilio (comma-separated)")
    args.code = args.code or ["worktree"]
    if len(set(args.code)) != len(args.code):
        p.error("--code names each code once")
    return args


def store_kind(store: str) -> str:
    """The store, safe to record: never the DSN's password."""
    if store == "sqlite":
        return "sqlite: <data-dir>/authsvc.sqlite3 (the server's default)"
    from authsvc.store.postgres import describe_dsn

    return f"{describe_dsn(store)[0]}, a fresh schema per level"


def held_ratios(runs: dict[str, dict], code_labels: list[str]) -> dict[str, float]:
    """Largest N held, side by side: each bridge against gRPC, detectors on against off, and (with
    several codes) each later code against the first, setting by setting."""
    largest = {label: run["largest_n_held"] for label, run in runs.items()}
    ratios = {}
    first = f"{code_labels[0]}, " if code_labels else ""
    for label, run in runs.items():
        if run["transport"] != "grpc":
            grpc_label = label.replace(run["transport"], "grpc", 1)
            if largest.get(grpc_label):
                ratios[f"{label} vs grpc"] = round(run["largest_n_held"] / largest[grpc_label], 2)
        elif label.endswith("detectors on") and largest.get(label.replace(" on", " off")):
            ratios[f"{label} vs off"] = round(
                run["largest_n_held"] / largest[label.replace(" on", " off")], 2
            )
        if first and not label.startswith(first):
            # Against the first code's same setting, else its detectors-off run (it had no detectors).
            same = first + label.split(", ", 1)[1]
            base = same if same in largest else same.replace("detectors on", "detectors off")
            if largest.get(base):
                ratios[f"{label} vs {base}"] = round(run["largest_n_held"] / largest[base], 2)
    return ratios


def encoder_ceiling(variants: list[CallAudio], ramp_s: float, frame_s: float, baseline: dict) -> dict:
    """How many of these calls the machine's cores could embed with nothing else running.

    The calls start evenly over the ramp, as the levels do; each score decision embeds about one
    piece of audio (the speech since the previous one). The busiest second of 1000 such calls
    gives pieces per second per call at the peak; the encoder alone, one single-threaded process
    per core at its best batch size (this run's baseline), gives what the cores can embed.
    """
    rows = {k: v for k, v in baseline.get("rows", {}).items() if k.startswith("threads=1,")}
    if not rows:
        return {}
    per_core = max(int(b) / (ms / 1000) for row in rows.values() for b, ms in row.items())
    n = 1000
    seconds: dict[int, int] = {}
    for i in range(n):
        v = variants[i % len(variants)]
        start = ramp_s * i / n
        for _, k, is_score, _ in v.events:
            if is_score:
                t = int(start + (k + 1) * frame_s)
                seconds[t] = seconds.get(t, 0) + 1
    peak_per_call = max(seconds.values()) / n
    cores = os.cpu_count() or 1
    return {
        "what": "calls whose busiest second of score decisions the cores could embed, one "
        "single-threaded encoder per core at its best batch size (this run's baseline)",
        "pieces_per_s_per_core": round(per_core, 1),
        "cores": cores,
        "peak_pieces_per_s_per_call": round(peak_per_call, 4),
        "calls": int(per_core * cores / peak_per_call),
    }


def code_version() -> dict:
    """The commit under test and the files that differ from it (the server runs the working tree)."""

    def git(*cmd: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return ""

    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "uncommitted": [line[3:] for line in git("status", "--porcelain").splitlines()],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data or default_data_dir()
    started = time.monotonic()
    per_level = estimate_level_s(args, 15.0)
    print(
        f"load test: levels {args.levels} (+{args.bisect_steps} bisection steps), about {per_level:.0f} s "
        f"per level, budget {args.budget_s:.0f} s ({args.budget_s / 60:.1f} min)",
        flush=True,
    )
    speakers = speaker_audio(data)
    policy = PolicyBook(None).get(TENANT)
    voice = policy.voice
    max_looks = 1 if voice.threshold is not None else policy.decision.max_looks
    rotations = max(len(calls) for _, calls in speakers.values())

    def calls_for(voice, max_looks: int, frame_ms: int) -> list[CallAudio]:
        return [
            call_audio(spk, calls, rot, args.speech_s, frame_ms, voice, max_looks)
            for rot in range(rotations)
            for spk, (_, calls) in speakers.items()
        ]

    variants = calls_for(voice, max_looks, args.frame_ms)
    scores = [sum(e[2] for e in v.events) for v in variants]
    print(
        f"{len(speakers)} speakers, {len(variants)} call variants of {args.speech_s:g} s: net speech "
        f"{min(v.net_speech_s for v in variants):.1f}-{max(v.net_speech_s for v in variants):.1f} s, "
        f"{min(scores)}-{max(scores)} score decisions per call (policy: first at "
        f"{voice.min_net_speech_s:g} s, then every {voice.redecide_interval_s:g} s, "
        f"window {voice.max_window_s:g} s, at most {max_looks} looks)",
        flush=True,
    )
    settings = detector_settings(args.countermeasure_dir or data.parent / "models" / "aasist")
    if args.client == "node" and "grpc" in args.transport:
        ensure_node_client()
    waited, busy = wait_quiet(args.quiet_wait_s, args.quiet_cores)
    baseline = encoder_baseline(args, variants)
    baseline["before"] = {"machine_busy_cores": round(busy, 2), "waited_for_quiet_s": round(waited, 1)}
    print(f"encoder alone (baseline, same run): {json.dumps(baseline)}", flush=True)
    runs = {}
    several = len(args.code) > 1
    with tempfile.TemporaryDirectory(prefix="authsvc-load-") as tmp:
        codes = [prepare_code(spec, Path(tmp)) for spec in args.code]
        try:
            for code in codes:
                code_voice = type(voice)(**code.voice)
                by_frame: dict[int, list[CallAudio]] = {}
                for transport in args.transport:
                    if transport != "grpc" and not code.identity:
                        print(f"{code.label}: no {transport} bridge in this code, skipped", flush=True)
                        continue
                    frame_ms = TRANSPORT_FRAME_MS.get(transport, args.frame_ms)
                    if frame_ms not in by_frame:  # the same calls, cut into the frames this transport sends
                        by_frame[frame_ms] = calls_for(code_voice, code.max_looks, frame_ms)
                    for det_label in args.detectors:
                        det = settings[det_label]
                        if not code.fraud:
                            if det_label != "off":
                                print(
                                    f"{code.label}: no fraud detectors in this code, 'on' skipped", flush=True
                                )
                                continue
                            det = Detectors(
                                "off", "no fraud detectors in this code", (), 'sector = "general"\n'
                            )
                        label = f"{transport}, detectors {det_label}"
                        label = f"{code.label}, {label}" if several else label
                        print(f"{label}: {det.what}", flush=True)
                        plan = Plan(by_frame[frame_ms], speakers, code_voice, args, det, transport, code)
                        results = search(plan, Path(tmp))
                        for r in results:
                            r["embedding"]["server_vs_alone"] = compare_with_baseline(
                                r["embedding"], baseline
                            )
                        held = [r["n"] for r in results if r["held"]]
                        failed = [r["n"] for r in results if not r["held"]]
                        ceiling = encoder_ceiling(by_frame[frame_ms], args.ramp_s, frame_ms / 1000, baseline)
                        runs[label] = {
                            "code": {"label": code.label, "commit": code.commit, "max_looks": code.max_looks},
                            "transport": transport,
                            "frame_ms": frame_ms,
                            "detectors": det.what,
                            "server_flags": list(det.server_args),
                            "tenant_policy": det.policy,
                            "largest_n_held": max(held) if held else 0,
                            "smallest_n_failed": min(failed) if failed else None,
                            "encoder_ceiling": ceiling,
                            "held_vs_encoder_ceiling": round(max(held) / ceiling["calls"], 3)
                            if held and ceiling.get("calls")
                            else None,
                            "levels": results,
                        }
        finally:
            for code in codes:
                release_code(code)
    largest = {label: run["largest_n_held"] for label, run in runs.items()}
    ratios = held_ratios(runs, [c.label for c in codes] if several else [])
    out = {
        "benchmark": "bench/load.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "data": str(data),
            "levels": args.levels,
            "bisect_steps": args.bisect_steps,
            "budget_s": args.budget_s,
            "ramp_s": args.ramp_s,
            "speech_s": args.speech_s,
            "drain_s": args.drain_s,
            "frame_ms": args.frame_ms,
            "encoding": "G.711 mu-law, 8 kHz",
            "client_processes": args.clients,
            "client": args.client,
            "quiet_wait_s": args.quiet_wait_s,
            "quiet_cores": args.quiet_cores,
            "target_p99_ms": args.target_ms,
            "store": store_kind(args.store),
            "enrollment": f"{ENROLL_UTTERANCES} utterances per speaker, PCM16 16 kHz, EnrollVoice",
            "calls": "stream i claims speaker i mod 10 and sends that speaker's other utterances, "
            "order rotated by i // 10, looped",
            "policy_voice": {
                "min_net_speech_s": voice.min_net_speech_s,
                "redecide_interval_s": voice.redecide_interval_s,
                "max_window_s": voice.max_window_s,
                "max_looks": max_looks,
            },
            "codes": {c.label: {"commit": c.commit, "max_looks": c.max_looks} for c in codes},
            "latency": "receive time of a score decision - write time of the chunk that reached "
            "its decision point",
        },
        "server": {
            "command": "authsvc serve --data-dir TMP --listen 127.0.0.1:PORT --metrics-port PORT "
            + " ".join(args.server_arg)
            + ("" if args.store == "sqlite" else " --store DSN_OF_A_FRESH_SCHEMA"),
            "flags": args.server_arg,
            "env": args.server_env,
        },
        "machine": machine(),
        "code": code_version(),
        "anchor": "a commercial engine is sized at 50 concurrent calls on 12 CPU cores; "
        "goal here >= 100, aim 200",
        "encoder_baseline": baseline,
        "largest_n_held": largest,
        "held_ratios": ratios,
        "runs": runs,
        "total_s": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    held_text = ", ".join(f"{label}: {n}" for label, n in largest.items())
    title = (
        f"authsvc load, GE2E, {os.cpu_count()} cores, {args.speech_s:g} s mu-law calls "
        f"ramped over {args.ramp_s:g} s; largest N with p99 < {args.target_ms:g} ms: {held_text}"
    )
    plot(
        {label: run["levels"] for label, run in runs.items()},
        args.target_ms,
        args.out.with_suffix(".png"),
        title,
    )
    for label, run in runs.items():
        print(f"\n{label}:")
        print(table(run["levels"]))
        for r in run["levels"]:
            print(f"  N={r['n']}: " + "; ".join(r["limits"]))
    print(f"\nlargest N held (p99 decision latency < {args.target_ms:g} ms, no errors): {held_text}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} ({out['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
