"""The Genesys AudioHook bridge against Genesys's own peers (issue 12).

The reference client (../shared/peers/audiohook-reference-implementation, built by
scripts/audiohook-peer) streams a real recorded call as stereo PCMU: the customer on the
external channel, an agent on the internal one. The watch stream must say AUTHENTICATED for
the enrolled customer and REJECTED for an impostor, and the agent's voice must never count.
The vendor's compliance suite runs against the bridge; its transcription-connector cases do
not apply (authsvc recognises callers, it transcribes nothing).

Attacks: no key, a wrong key, a wrong role, a bad or replayed signature (refused at the
upgrade and audited); malformed frames, wrong sequence numbers, audio before open, a second
open, an oversized frame (the protocol's disconnect or close, with a reason, counted), and
none of them disturbs a call beside it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from authsvc.api.v1 import verification_pb2, verification_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.codecs import Encoding, encode
from authsvc.audio.resample import resample
from authsvc.bridges.audiohook import AudioHookServer
from authsvc.identity.bridge_secrets import audiohook_client_secret
from authsvc.identity.roles import AGENT, ENROLLMENT, TELEPHONY
from tests.conftest import ROOT
from tests.principals import bearer, key_for
from tests.test_identity import refusals
from tests.test_service_assurance import _enroll_voice, _speakers

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="session")
def audiohook_peer() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "audiohook-peer")], capture_output=True, text=True, timeout=900, check=False
    )
    assert out.returncode == 0, f"scripts/audiohook-peer failed: {out.stderr[-3000:]}"
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture
async def audiohook(svc):
    server = AudioHookServer(svc[1], "127.0.0.1", 0, "/audiohook", idle_s=4.0)
    port = await server.start()
    try:
        yield server, f"ws://127.0.0.1:{port}/audiohook"
    finally:
        await server.stop()


async def _audiohook_key(ctx, tenant: str, *roles: str) -> tuple[str, str]:
    """An API key and its AudioHook client secret (base64), as CreateApiKey returns them."""
    key = await key_for(ctx, tenant, *(roles or (TELEPHONY,)))
    ident = "key_" + key.split("_")[1]
    return key, base64.b64encode(await audiohook_client_secret(ctx.vault, tenant, ident)).decode()


def _stereo_wav(path: Path, customer: np.ndarray, agent: np.ndarray) -> float:
    """An 8 kHz stereo recording: the customer on the left (external), the agent on the right."""
    left, right = resample(customer, 16000, 8000), resample(agent, 16000, 8000)
    n = max(left.size, right.size)
    pcm = np.zeros((n, 2), np.float32)
    pcm[: left.size, 0], pcm[: right.size, 1] = left, right
    sf.write(path, pcm, 8000, subtype="PCM_16")
    return n / 8000


async def _reference_client(peer: Path, url: str, key: str, secret: str, wav: Path, seconds: float, config):
    return await asyncio.create_subprocess_exec(
        "node",
        "-r",
        "./rawmode-stub.js",
        "dist/client/src/index.js",
        "--uri",
        url,
        "--api-key",
        key,
        "--client-secret",
        secret,
        "--wavfile",
        str(wav),
        "--custom-config",
        json.dumps(config),
        "--max-stream-duration",
        f"{seconds + 15:.1f}",  # the recording ends first: the client then closes and waits for closed
        cwd=peer / "client",
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _call_of(ctx, tenant: str, customer: str, timeout_s: float = 20.0) -> str:
    """The id of the live call of `customer` (the conversation id the reference client made up,
    which an agent desktop would know)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for (t, call_id), call in list(ctx.calls._calls.items()):
            if t == tenant and call.session.start.customer_id == customer:
                return call_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"no live call of {customer} appeared")


async def _watch(address: str, key: str, tenant: str, call_id: str) -> list:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = verification_pb2_grpc.VerificationServiceStub(ch)
        request = verification_pb2.WatchSessionRequest(tenant=tenant, session_id=call_id)
        return [d async for d in stub.WatchSession(request, metadata=bearer(key), timeout=120)]


async def test_the_reference_client_streams_calls_and_the_watch_stream_decides_them(
    svc, speech, audiohook, audiohook_peer, tmp_path
):
    channel, ctx, _, address, _ = svc
    _, url = audiohook
    kim_voice, other, lou_voice = (speech[name] for name in sorted(speech)[:3])
    await _enroll_voice(channel, "shop", "kim", kim_voice[:4])
    await _enroll_voice(channel, "shop", "lou", lou_voice[:4])
    key, secret = await _audiohook_key(ctx, "shop")
    desk = await key_for(ctx, "shop", AGENT)
    genuine, impostor = tmp_path / "genuine.wav", tmp_path / "impostor.wav"
    # Kim calls; an agent with another voice answers.
    s1 = _stereo_wav(genuine, np.concatenate(kim_voice[4:6]), np.concatenate(other[4:6]))
    # Someone claims to be Lou, and the agent who answers has Lou's own voice: were the agent's
    # channel ever scored (or mixed in), the impostor would pass.
    s2 = _stereo_wav(impostor, np.concatenate(other[6:8]), np.concatenate(lou_voice[4:6]))
    seconds = min(s1, s2, 14.0)
    runs = [
        await _reference_client(audiohook_peer, url, key, secret, genuine, seconds, {"customerId": "kim"}),
        await _reference_client(audiohook_peer, url, key, secret, impostor, seconds, {"customerId": "lou"}),
    ]
    watches = [
        asyncio.ensure_future(_watch(address, desk, "shop", await _call_of(ctx, "shop", customer)))
        for customer in ("kim", "lou")
    ]
    logs = [ANSI.sub("", (await p.communicate())[0].decode(errors="replace")) for p in runs]
    kim, lou = await asyncio.gather(*watches)
    for log in logs:
        assert "Session open" in log, log[-2000:]
    # The client's last log lines may be lost at its exit (its logger is asynchronous): whether
    # each close transaction completed is read on the server's side.
    completed = ctx.metrics.bridge_connections.labels("audiohook", "completed")
    for _ in range(100):
        if completed._value.get() == 2:
            break
        await asyncio.sleep(0.05)
    assert completed._value.get() == 2
    assert any(d.outcome == V.OUTCOME_AUTHENTICATED for d in kim), [d.reason for d in kim]
    assert kim[-1].final and kim[-1].net_speech_seconds > 5
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in lou), [d.reason for d in lou]
    assert any(d.outcome == V.OUTCOME_REJECTED for d in lou), [d.reason for d in lou]


async def test_the_genesys_compliance_suite_passes_every_case_that_applies(
    svc, audiohook, audiohook_peer, tmp_path
):
    ctx = svc[1]
    _, url = audiohook
    key, secret = await _audiohook_key(ctx, "shop")
    config = audiohook_peer / "testconfig.cfg"
    config.write_text(
        f"[EndPoint]\nurl={url}\n\n[Authentication]\napiKey={key}\nclientSecret={secret}\n\n"
        "[OpenParameters]\ncustomConfig={}\nlanguage=en-US\n\n"
        "[Features]\nsingleChannel=true\ndoubleChannel=true\n"
        # The transcription connector is an extension for speech-to-text services.
        "transcriptionConnector=false\n"
    )
    report = tmp_path / "jest.json"
    proc = await asyncio.create_subprocess_exec(
        "npx",
        "jest",
        "--ci",
        "test/audiohook-api-messages.test.ts",
        "--json",
        f"--outputFile={report}",
        cwd=audiohook_peer,
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "CI": "1"},
    )
    out = (await asyncio.wait_for(proc.communicate(), 600))[0].decode(errors="replace")
    results = json.loads(report.read_text())
    cases = [a for r in results["testResults"] for a in r["assertionResults"]]
    failed = [c["fullName"] for c in cases if c["status"] == "failed"]
    assert not failed, f"{failed}\n{ANSI.sub('', out)[-4000:]}"
    passed = [c["fullName"] for c in cases if c["status"] == "passed"]
    skipped = [c["fullName"] for c in cases if c["status"] != "passed"]
    assert len(passed) >= 12, passed
    assert all("Transcript Connector" in name for name in skipped), skipped


# -- attacks at the upgrade ----------------------------------------------------------------


class _Key(HTTPSignatureKeyResolver):
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def resolve_private_key(self, key_id: str):
        return self.secret

    def resolve_public_key(self, key_id: str):
        return self.secret


class _Req:
    def __init__(self, url: str, headers: dict) -> None:
        self.method, self.url, self.headers = "GET", url, headers


def _signed_headers(url: str, key: str, secret_b64: str, nonce: str | None = None) -> dict:
    """The upgrade headers as Genesys signs them (HTTP Message Signatures, hmac-sha256)."""
    headers = {
        "Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
        "Audiohook-Session-Id": "e160e428-53e2-487c-977d-96989bf5c99d",
        "Audiohook-Correlation-Id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
        "X-API-KEY": key,
    }
    request = _Req(url.replace("ws://", "http://"), headers)
    HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_Key(base64.b64decode(secret_b64))
    ).sign(
        request,
        key_id=key,
        nonce=nonce or base64.b64encode(secrets.token_bytes(18)).decode(),
        covered_component_ids=(
            "@request-target",
            "@authority",
            "audiohook-organization-id",
            "audiohook-session-id",
            "audiohook-correlation-id",
            "x-api-key",
        ),
    )
    return dict(request.headers)


async def _status_of_upgrade(url: str, headers: dict) -> int:
    try:
        async with connect(url, additional_headers=headers, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_the_upgrade_refuses_a_missing_or_wrong_key_role_or_signature_and_a_replay(svc, audiohook):
    ctx = svc[1]
    _, url = audiohook
    key, secret = await _audiohook_key(ctx, "shop")
    clerk, clerk_secret = await _audiohook_key(ctx, "shop", ENROLLMENT)
    _, other_secret = await _audiohook_key(ctx, "globex")
    good = _signed_headers(url, key, secret)
    assert await _status_of_upgrade(url, {k: v for k, v in good.items() if k != "X-API-KEY"}) == 401
    assert await _status_of_upgrade(url, {**good, "X-API-KEY": "ask_0123456789abcdef_" + "A" * 43}) == 401
    # Signed with another tenant's secret, or a header changed after signing.
    assert await _status_of_upgrade(url, _signed_headers(url, key, other_secret)) == 401
    tampered = {**good, "Audiohook-Organization-Id": "00000000-0000-4000-8000-000000000000"}
    assert await _status_of_upgrade(url, tampered) == 401
    assert await _status_of_upgrade(url, _signed_headers(url, clerk, clerk_secret)) == 403
    # The genuine upgrade is accepted once; the same signed request again is a replay.
    assert await _status_of_upgrade(url, good) == 101
    assert await _status_of_upgrade(url, good) == 401
    rows = await refusals(ctx, "shop")
    reasons = {r.outcome for r in rows}
    assert {"SIGNATURE_INVALID", "SIGNATURE_REPLAYED", "ROLE_NOT_GRANTED"} <= reasons, reasons
    assert any(r.details.get("method") == "bridge:audiohook" for r in rows)
    assert (
        await _status_of_upgrade(url.replace("/audiohook", "/other"), _signed_headers(url, key, secret))
        == 404
    )


# -- attacks on the protocol ---------------------------------------------------------------


class _Peer:
    """A hand-written AudioHook client, to send what the reference client never would."""

    def __init__(self, ws, session: str) -> None:
        self.ws, self.session, self.seq, self.server_seq = ws, session, 0, 0

    async def send(self, kind: str, parameters: dict | None = None, **override) -> None:
        self.seq += 1
        message = {
            "version": "2",
            "type": kind,
            "id": self.session,
            "seq": self.seq,
            "serverseq": self.server_seq,
            "position": "PT0S",
            "parameters": parameters or {},
            **override,
        }
        await self.ws.send(json.dumps(message))

    async def recv(self) -> dict:
        message = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        self.server_seq = message["seq"]
        return message

    async def open(self, customer: str = "", conversation: str = "") -> dict:
        await self.send(
            "open",
            {
                "organizationId": "d7934305-0972-4844-938e-9060eef73d05",
                "conversationId": conversation or "1a2b3c4d-0000-4000-8000-00000000000a",
                "participant": {
                    "id": "5f8c1f32-0000-4000-8000-000000000001",
                    "ani": "",
                    "aniName": "",
                    "dnis": "",
                },
                "media": [
                    {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
                ],
                "customConfig": {"customerId": customer} if customer else {},
            },
        )
        return await self.recv()


async def _peer(url: str, key: str, secret: str):
    headers = _signed_headers(url, key, secret)
    ws = await connect(url, additional_headers=headers, max_size=2**20)
    return _Peer(ws, headers["Audiohook-Session-Id"])


@pytest.mark.parametrize(
    "attack, expected",
    [
        ("audio_before_open", "audio before open"),
        ("wrong_seq", "invalid seq"),
        ("second_open", "second open"),
        ("not_json", "invalid JSON"),
        ("wrong_session", "session mismatch"),
        ("bad_frame", "bad frame"),
        ("unknown_type", "unsupported message"),
    ],
)
async def test_protocol_errors_end_the_session_with_a_reason_and_spare_the_call_beside_it(
    svc, speech, audiohook, attack, expected
):
    channel, ctx, _, _, _ = svc
    _, url = audiohook
    key, secret = await _audiohook_key(ctx, "shop")
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "ned", target[:4])
    good = await _peer(url, key, secret)
    opened = await good.open("ned", "2b2b2b2b-0000-4000-8000-00000000000b")
    assert opened["type"] == "opened" and opened["parameters"]["media"][0]["channels"] == [
        "external",
        "internal",
    ]
    bad = await _peer(url, key, secret)
    if attack == "audio_before_open":
        await bad.ws.send(b"\xff" * 320)
    else:
        await bad.open()
        if attack == "wrong_seq":
            await bad.send("ping", seq=7)
        elif attack == "second_open":
            await bad.send("open", {})
        elif attack == "not_json":
            await bad.ws.send("{not json")
        elif attack == "wrong_session":
            await bad.send("ping", id="9f0e0e0e-0000-4000-8000-00000000000c")
        elif attack == "bad_frame":
            await bad.ws.send(b"\xff" * 321)  # half a stereo sample
        elif attack == "unknown_type":
            await bad.send("transfer")
    reply = await bad.recv()
    assert reply["type"] == "disconnect" and reply["parameters"]["reason"] == "error", reply
    assert expected in reply["parameters"]["info"], reply
    await bad.send("close", {"reason": "disconnect"})
    assert (await bad.recv())["type"] == "closed"
    # The call beside it carries on: its audio is scored and its close answered.
    pcm = encode(resample(np.concatenate(target[4:6]), 16000, 8000), Encoding.MULAW)
    stereo = bytes(np.stack([np.frombuffer(pcm, np.uint8), np.full(len(pcm), 0xFF, np.uint8)], 1).ravel())
    for i in range(0, len(stereo), 3200):
        await good.ws.send(stereo[i : i + 3200])
    await good.send("close", {"reason": "end"})
    assert (await good.recv())["type"] == "closed"
    rows = [e for e in await ctx.auditor.list("shop", 50, customer_id="ned") if e.action == "decision"]
    assert rows and rows[0].outcome == "authenticated", [(e.outcome, e.details) for e in rows]
    assert ctx.metrics.bridge_errors.labels("audiohook", expected.split(":")[0])._value.get() >= 1


async def test_an_oversized_frame_closes_the_connection_and_a_silent_one_is_ended(svc, audiohook):
    ctx = svc[1]
    _, url = audiohook
    key, secret = await _audiohook_key(ctx, "shop")
    big = await _peer(url, key, secret)
    await big.open()
    await big.ws.send(b"\xff" * 70_000)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(big.ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    quiet = await _peer(url, key, secret)
    await quiet.open(conversation="3c3c3c3c-0000-4000-8000-00000000000d")
    assert ("shop", "3c3c3c3c-0000-4000-8000-00000000000d") in ctx.calls._calls
    reply = await asyncio.wait_for(quiet.recv(), 15)  # the fixture's idle time is 4 s
    assert reply["type"] == "disconnect" and "no message" in reply["parameters"]["info"]
    await quiet.send("close", {"reason": "disconnect"})
    assert (await quiet.recv())["type"] == "closed"
    for _ in range(50):
        if ("shop", "3c3c3c3c-0000-4000-8000-00000000000d") not in ctx.calls._calls:
            break
        await asyncio.sleep(0.1)
    assert ("shop", "3c3c3c3c-0000-4000-8000-00000000000d") not in ctx.calls._calls, "its call ended"
