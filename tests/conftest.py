"""Shared fixtures: real speech (or synthetic speech where ../shared/data is absent),
an encoder loaded once, stores of both backends, and an in-process gRPC server on a free port.

PostgreSQL for tests: the DSN in $AUTHSVC_TEST_POSTGRES, else a server on
127.0.0.1:5432 if one answers (scripts/test starts a private throwaway
cluster when none does). Each test gets a schema of its own, dropped after.
Without any PostgreSQL the PostgreSQL tests fail; they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from authsvc.audio.resample import resample

ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    return Path(os.environ.get("AUTHSVC_DATA", ROOT.parent / "shared" / "data"))


LIBRISPEECH = shared_data_dir() / "speech" / "librispeech-test-other-10"

# Two clearly different synthetic voices for machines without the recorded data.
# Chosen by measurement with GE2E: the same voice scores 0.93 / 0.82 across sentences
# (3 s of 8 kHz mu-law against 4 enrollments), the two voices 0.57 against each other.
# Sorted names: tests that take the first speaker as the target get the steadier voice.
ESPEAK_VOICES = {
    "espeak-a-low-rp": ["-v", "en-gb-x-rp+m7", "-p", "10", "-s", "130"],
    "espeak-b-high": ["-v", "en+f2", "-p", "90", "-s", "175"],
}
ESPEAK_TEXTS = [
    "Hello, I am calling about the balance on my account and a payment I made last week.",
    "Could you please tell me when the next statement will arrive at my home address?",
    "I would like to change the phone number on file, because I have a new mobile.",
    "My card was declined at the store this morning, and I do not understand why.",
    "Thank you for your help today, I think that answers all of my questions for now.",
    "I am travelling abroad next month and want to make sure my card keeps working there.",
    "Please send the new card to my work address instead of the one you have on file.",
    "Can you explain the fee on my last statement, it was higher than I expected it to be.",
    "I never made that transfer, so I would like you to block the card straight away please.",
    "That is all for today, thank you, and have a good afternoon when you finish your shift.",
]


def _espeak(voice: list[str], text: str) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("neither ../shared/data nor espeak-ng is available for speech")
    out = subprocess.run([exe, *voice, "--stdout", text], check=True, capture_output=True).stdout
    import io

    wav, rate = sf.read(io.BytesIO(out), dtype="float32")
    return resample(wav, rate, 16000)


@pytest.fixture(scope="session")
def speech() -> dict[str, list[np.ndarray]]:
    """speaker -> utterances (float32, 16 kHz), at least 2 speakers x 10 utterances of > 3 s.

    Tests enroll from the first four; each further call of one customer uses another of the
    rest, since the same recording played twice is a replay (and is caught as one)."""
    if LIBRISPEECH.is_dir():
        speakers = sorted(p for p in LIBRISPEECH.iterdir() if p.is_dir())[:3]
        out = {}
        for spk in speakers:
            files = sorted(spk.glob("*.flac"))[:10]
            out[spk.name] = [sf.read(f, dtype="float32")[0] for f in files]
        return out
    return {name: [_espeak(v, t) for t in ESPEAK_TEXTS] for name, v in ESPEAK_VOICES.items()}


@pytest.fixture(scope="session")
def ge2e():
    from authsvc.voice.registry import load_encoder

    return load_encoder("ge2e")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


BACKENDS = ("sqlite", "postgresql")
POSTGRES_ENV = "AUTHSVC_TEST_POSTGRES"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The PostgreSQL server the tests use (see the module docstring)."""
    dsn = os.environ.get(POSTGRES_ENV)
    if dsn:
        return dsn
    if _answers("127.0.0.1", 5432):
        return LOCAL_POSTGRES
    pytest.fail(
        f"no PostgreSQL for the tests: set {POSTGRES_ENV}, start a server on 127.0.0.1:5432, "
        "or run scripts/test, which starts a private one"
    )


def schema_dsn(dsn: str, schema: str) -> str:
    """`dsn` with every connection's search_path set to `schema`."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, options=f"-c search_path={schema}")


@contextlib.contextmanager
def pg_schema(dsn: str) -> Iterator[str]:
    """A DSN whose connections live in a fresh schema of their own, dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_dsn(dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_schema_dsn(postgres_dsn: str) -> Iterator[str]:
    with pg_schema(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_spec(backend: str, tmp_path: Path, request) -> str:
    """The store of this test: a SQLite file, or a PostgreSQL schema of its own."""
    if backend == "sqlite":
        return f"sqlite:{tmp_path / 'store' / 'authsvc.sqlite3'}"
    return request.getfixturevalue("pg_schema_dsn")


@pytest.fixture
async def store(store_spec: str) -> AsyncIterator:
    """An open, migrated store of the backend under test."""
    from authsvc.store import open_store

    s = await open_store(store_spec)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(params=BACKENDS)
def service_backend(request) -> str:
    """The store of the `service` fixture: every service test runs on both backends, except
    those that read SQLite's files themselves (they parametrize this to "sqlite")."""
    return request.param


@pytest.fixture
async def service(data_dir: Path, ge2e, service_backend: str, request) -> AsyncIterator:
    """An in-process server on a free local port; yields (aio channel, context, data dir, address)."""
    import grpc

    from authsvc.context import ServiceConfig, build_context
    from authsvc.server.app import AuthServer

    if service_backend == "postgresql":
        spec = request.getfixturevalue("pg_schema_dsn")
    else:  # explicit: an operator's $AUTHSVC_STORE must not reach the tests
        spec = f"sqlite:{data_dir / 'authsvc.sqlite3'}"
    from tests.principals import TenantKeys, provision

    ctx = await build_context(ServiceConfig(data_dir=data_dir, store=spec), encoder=ge2e)
    server = AuthServer(ctx, "127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{server.port}"
    await provision(ctx, address)
    channel = grpc.aio.insecure_channel(address, interceptors=[TenantKeys(address)])
    try:
        yield channel, ctx, data_dir, address
    finally:
        await channel.close()
        await server.stop(grace_s=0.5)


class Clock:
    """A settable clock for the service's time-based rules (codes, lockouts)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def svc(service):
    """`service` with the factors' clock under the test's control and a policy folder ready:
    yields (aio channel, context, data dir, address, clock)."""
    channel, ctx, data_dir, address = service
    clock = Clock()
    ctx.factors.clock = clock
    (data_dir / "policies").mkdir(parents=True, exist_ok=True)
    return channel, ctx, data_dir, address, clock
