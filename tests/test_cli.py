"""The `authsvc` command line as an operator runs it: real processes against a real server.

One `authsvc serve` subprocess serves the whole module (loading the model takes a few
seconds); every command is a fresh `authsvc` process, so exit codes, stdout and stderr
are what a shell script would see.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.cli.client import (
    EXIT_INVALID,
    EXIT_NEGATIVE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from tests.conftest import BACKENDS, pg_schema
from tests.nodes import CLI, cli_env, free_port, run_cli
from tests.principals import TenantKeysSync

STARTUP_DEADLINE_S = 180.0
COMMAND_TIMEOUT_S = 180.0
TENANT = "acme"


@dataclass
class Server:
    address: str
    data_dir: Path
    process: subprocess.Popen
    log: Path
    channel: grpc.Channel
    # The tenant operator's API key (enrollment, telephony, tenant-admin, evidence).
    key_file: Path | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def authsvc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs `authsvc ARGS...` as its own process and returns what it printed and exited with."""
    return run_cli(*args, timeout=COMMAND_TIMEOUT_S)


def client(srv: Server, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """An operator command against the module's server, with the operator's credential."""
    env = {"AUTHSVC_CREDENTIAL_FILE": str(srv.key_file)}
    return run_cli(*args, "--server", srv.address, env=env, timeout=COMMAND_TIMEOUT_S)


def _provision(srv: Server, root: Path) -> None:
    """The README's first steps: the first start's platform-admin key creates the tenant and the
    operator's key."""
    admin = srv.data_dir / "admin.credential"
    assert admin.stat().st_mode & 0o777 == 0o600, "the first start's key file is 0600"
    env = {"AUTHSVC_CREDENTIAL_FILE": str(admin)}
    made = run_cli("tenants", "create", TENANT, "--sector", "general", "--server", srv.address, env=env)
    assert made.returncode == 0, _shown(made)
    srv.key_file = root / "operator.key"
    roles = [a for r in ("enrollment", "telephony", "tenant-admin", "evidence") for a in ("--role", r)]
    args = [
        "credentials",
        "create",
        "--tenant",
        TENANT,
        *roles,
        "--out",
        srv.key_file,
        "--server",
        srv.address,
    ]
    made = run_cli(*args, env=env)
    assert made.returncode == 0 and srv.key_file.stat().st_mode & 0o777 == 0o600, _shown(made)
    key = srv.key_file.read_text().strip()
    srv.channel = grpc.intercept_channel(srv.channel, TenantKeysSync({TENANT: key}))


def _register(srv: Server, customer: str, methods: str = "voice") -> None:
    args = ["--tenant", TENANT, "--customer", customer, "--methods", methods, "--consent-version", "v1"]
    result = client(srv, "register", *args)
    assert result.returncode == 0, _shown(result)


def _shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module", params=BACKENDS)
def store_args(request, tmp_path_factory) -> Iterator[list[str]]:
    """`serve`'s store: its SQLite default, or a PostgreSQL schema of the module's own."""
    if request.param == "sqlite":
        yield []
        return
    with pg_schema(request.getfixturevalue("postgres_dsn")) as dsn:
        yield ["--store", dsn]


@pytest.fixture(scope="module")
def server(tmp_path_factory, store_args) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli")
    data_dir = root / "data"
    address = f"127.0.0.1:{free_port()}"
    log = root / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*CLI, "serve", "--data-dir", str(data_dir), "--listen", address, *store_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
        )
    channel = grpc.insecure_channel(address)
    srv = Server(address, data_dir, process, log, channel)
    try:
        _wait_until_serving(srv)
        _provision(srv, root)
        yield srv
    finally:
        channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"authsvc serve did not stop within 60 s of SIGTERM\n{srv.log_text()}")
    # `serve` drains and exits 0 on SIGTERM (how systemd and Kubernetes stop it).
    assert process.returncode == 0, f"serve exited {process.returncode} on SIGTERM\n{srv.log_text()}"
    assert "shutting down" in srv.log_text()


def _wait_until_serving(srv: Server) -> None:
    health = health_pb2_grpc.HealthStub(srv.channel)
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        if srv.process.poll() is not None:
            pytest.fail(f"authsvc serve exited {srv.process.returncode} on startup\n{srv.log_text()}")
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            srv.process.kill()
            pytest.fail(f"authsvc serve not SERVING within {STARTUP_DEADLINE_S} s\n{srv.log_text()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def wavs(speech, tmp_path_factory) -> dict[str, list[Path]]:
    """speaker label ("target", "other") -> utterances written as 16 kHz PCM16 WAV files."""
    folder = tmp_path_factory.mktemp("wavs")
    names = sorted(speech)
    out: dict[str, list[Path]] = {}
    for label, name in (("target", names[0]), ("other", names[1])):
        out[label] = []
        for i, wav in enumerate(speech[name]):
            path = folder / f"{label}-{i}.wav"
            sf.write(path, np.asarray(wav, dtype=np.float32), 16000, subtype="PCM_16")
            out[label].append(path)
    return out


def _sample_count(srv: Server, customer: str) -> int:
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(srv.channel)
    c = stub.GetCustomer(enrollment_pb2.GetCustomerRequest(tenant=TENANT, customer_id=customer), timeout=30)
    return sum(t.sample_count for t in c.templates)


@pytest.fixture(scope="module")
def enrolled(server: Server, wavs) -> subprocess.CompletedProcess[str]:
    """Customer "alice" enrolled from four utterances of the target speaker."""
    _register(server, "alice")
    result = client(server, "enroll", "voice", "--tenant", TENANT, "--customer", "alice", *wavs["target"][:4])
    assert result.returncode == EXIT_OK, _shown(result)
    return result


def _verify(server: Server, customer: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return client(server, "verify", "voice", "--tenant", TENANT, "--customer", customer, *extra, path)


def _figure(name: str, stdout: str) -> float:
    match = re.search(rf"^{name}: (-?\d+\.\d+)", stdout, re.MULTILINE)
    assert match, f"no '{name}:' line in\n{stdout}"
    return float(match.group(1))


def test_enroll_voice_from_files_adds_each_and_prints_a_summary(server: Server, enrolled, wavs):
    out = enrolled.stdout
    assert "4 sample(s) added, 0 already enrolled, 0 failed" in out, _shown(enrolled)
    for path in wavs["target"][:4]:
        assert re.search(rf"^{re.escape(str(path))}: added \(\d+\.\d s net speech\)$", out, re.MULTILINE), out
    assert _sample_count(server, "alice") == 4


def test_rerunning_an_enrollment_adds_nothing(server: Server, enrolled, wavs):
    again = client(server, "enroll", "voice", "--tenant", TENANT, "--customer", "alice", *wavs["target"][:4])
    assert again.returncode == EXIT_OK, _shown(again)
    assert "0 sample(s) added, 4 already enrolled, 0 failed" in again.stdout, _shown(again)
    assert again.stdout.count("already enrolled") == 5  # four files and the summary
    assert _sample_count(server, "alice") == 4


def test_verify_same_speaker_over_8khz_mulaw_is_authenticated(server: Server, enrolled, wavs):
    result = _verify(server, "alice", wavs["target"][4], "--encoding", "mulaw")
    assert result.returncode == EXIT_OK, _shown(result)
    assert "decision: AUTHENTICATED" in result.stdout
    score, threshold = _figure("score", result.stdout), _figure("threshold", result.stdout)
    assert score >= threshold
    assert "FAR 0.00333 per look" in result.stdout and "4 enrolled sample(s)" in result.stdout
    assert "fraud replay: low" in result.stdout and "fraud synthetic: unavailable" in result.stdout


def test_verify_other_speaker_is_rejected_with_exit_1(server: Server, enrolled, wavs):
    result = _verify(server, "alice", wavs["other"][0], "--encoding", "mulaw")
    assert result.returncode == EXIT_NEGATIVE, _shown(result)
    assert "decision: REJECTED" in result.stdout
    assert _figure("score", result.stdout) < _figure("threshold", result.stdout)


def test_customers_list_show_and_delete(server: Server, enrolled, wavs):
    _register(server, "carol")
    added = client(
        server, "enroll", "voice", "--quiet", "--tenant", TENANT, "--customer", "carol", wavs["other"][1]
    )
    assert added.returncode == EXIT_OK, _shown(added)
    # --quiet prints the summary only.
    assert added.stdout.strip() == "1 sample(s) added, 0 already enrolled, 0 failed", _shown(added)

    listed = client(server, "customers", "list", "--tenant", TENANT)
    assert listed.returncode == EXIT_OK, _shown(listed)
    lines = listed.stdout.splitlines()
    assert "alice\t4 sample(s)" in lines and "carol\t1 sample(s)" in lines
    ids = [line.split("\t")[0] for line in lines]
    assert ids == sorted(ids)

    shown = client(server, "customers", "show", "--tenant", TENANT, "--customer", "carol")
    assert shown.returncode == EXIT_OK, _shown(shown)
    assert shown.stdout.splitlines()[0] == f"{TENANT}/carol"
    template_line = r"^  voice: 1 sample\(s\), encoder ge2e \(.+\)$"
    assert re.search(template_line, shown.stdout, re.MULTILINE), _shown(shown)

    deleted = client(server, "customers", "delete", "--yes", "--tenant", TENANT, "--customer", "carol")
    assert deleted.returncode == EXIT_OK, _shown(deleted)
    assert f"deleted {TENANT}/carol (1 template(s))" in deleted.stdout

    with pytest.raises(grpc.RpcError) as err:
        _sample_count(server, "carol")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert _sample_count(server, "alice") == 4


def test_show_unknown_customer_exits_4_with_a_message(server: Server):
    result = client(server, "customers", "show", "--tenant", TENANT, "--customer", "nobody")
    assert result.returncode == EXIT_NOT_FOUND, _shown(result)
    assert "NOT_FOUND" in result.stderr and f"{TENANT}/nobody" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_files_are_reported_by_name_and_the_rest_still_enroll(server: Server, wavs, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("meeting notes, not a recording\n" * 20)
    missing = tmp_path / "missing.wav"
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(3 * 16000, dtype=np.float32), 16000, subtype="PCM_16")
    files = [wavs["other"][2], not_audio, silent, missing, wavs["other"][3]]
    _register(server, "erin")
    result = client(server, "enroll", "voice", "--tenant", TENANT, "--customer", "erin", *files)
    assert result.returncode == EXIT_NEGATIVE, _shown(result)
    assert "2 sample(s) added, 0 already enrolled, 3 failed" in result.stdout, _shown(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("authsvc: error:")]
    assert len(errors) == 3, _shown(result)
    assert any(str(not_audio) in line and "cannot read audio" in line for line in errors), _shown(result)
    assert any(str(missing) in line for line in errors), _shown(result)
    # The server refuses the silent file; the CLI names the file and the server's reason.
    assert any(str(silent) in line and "no speech" in line for line in errors), _shown(result)
    assert "Traceback" not in result.stderr
    assert _sample_count(server, "erin") == 2


def test_missing_required_argument_exits_2():
    result = authsvc("enroll", "voice", "--customer", "alice", "some.wav")
    assert result.returncode == EXIT_USAGE, _shown(result)
    assert "--tenant" in result.stderr and "required" in result.stderr


def test_verify_of_a_missing_file_is_a_usage_error(tmp_path):
    result = authsvc("verify", "voice", "--tenant", TENANT, "--customer", "alice", tmp_path / "none.wav")
    assert result.returncode == EXIT_USAGE, _shown(result)
    assert "none.wav: no such file" in result.stderr


def test_verify_of_a_non_audio_file_exits_5_naming_the_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not a recording\n" * 20)
    result = authsvc("verify", "voice", "--tenant", TENANT, "--customer", "alice", path)
    assert result.returncode == EXIT_INVALID, _shown(result)
    assert str(path) in result.stderr and "cannot read audio" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_exits_3_and_says_so():
    result = authsvc("customers", "list", "--tenant", TENANT, "--server", "127.0.0.1:1", "--timeout", "20")
    assert result.returncode == EXIT_UNAVAILABLE, _shown(result)
    assert "cannot reach the service" in result.stderr
    assert "Traceback" not in result.stderr


def test_policy_check_names_the_field_and_exits_5_for_a_bad_file(tmp_path):
    bad = tmp_path / "bank.toml"
    bad.write_text('sector = "finance"\n[voice]\ntarget_far = 0.01\n')
    result = authsvc("policy", "check", bad)
    assert result.returncode == 5, _shown(result)
    assert "voice.target_far" in result.stderr and "NIST" in result.stderr
    good = tmp_path / "shop.toml"
    good.write_text('sector = "general"\n[voice]\ntarget_far = 0.001\n')
    result = authsvc("policy", "check", good)
    assert result.returncode == 0 and "OK" in result.stdout, _shown(result)


def test_policy_explain_resolves_the_preset_and_the_thresholds(tmp_path):
    (tmp_path / "clinic.toml").write_text('sector = "health"\n[assertion]\nlifetime_s = 120\n')
    result = authsvc("policy", "explain", "--tenant", "clinic", "--policy-dir", tmp_path)
    assert result.returncode == 0, _shown(result)
    out = result.stdout
    assert "sector health" in out and "lifetime_s = 120.0" in out and "target_far = 0.0001" in out
    assert "STEP_UP_REQUIRED" in out and "cosine threshold" in out


def test_register_enroll_keystrokes_and_audit(server: Server, tmp_path):
    import json

    import numpy as np

    from tests.typists import Typist

    typist = Typist(np.random.default_rng(3))
    lines = []
    for _ in range(5):
        sample = typist.password()
        events = [{"key": e.key, "down": e.press, "up": e.release} for e in sample.events]
        lines.append(json.dumps({"kind": "fixed", "text": sample.text, "events": events}))
    path = tmp_path / "typing.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = client(
        server,
        "register",
        "--tenant",
        TENANT,
        "--customer",
        "kim",
        "--methods",
        "typing,totp",
        "--consent-version",
        "v3",
    )
    assert result.returncode == 0 and "consent text v3" in result.stdout, _shown(result)
    result = client(server, "enroll", "keystrokes", "--tenant", TENANT, "--customer", "kim", path)
    assert result.returncode == 0 and "5 sample(s) added" in result.stdout, _shown(result)
    again = client(server, "enroll", "keystrokes", "--tenant", TENANT, "--customer", "kim", path)
    assert "0 sample(s) added, 5 already enrolled" in again.stdout, _shown(again)
    result = client(server, "audit", "list", "--tenant", TENANT, "--customer", "kim")
    assert result.returncode == 0, _shown(result)
    actions = [line.split("\t")[1] for line in result.stdout.splitlines()]
    assert actions[-1] == "register" and "enroll.keystrokes" in actions
    refused = client(
        server,
        "register",
        "--tenant",
        TENANT,
        "--customer",
        "kim",
        "--methods",
        "voice",
        "--opt-out",
        "--consent-version",
        "v3",
    )
    assert refused.returncode == 5 and "opts out" in refused.stderr, _shown(refused)


def test_audit_verify_detects_a_row_edited_in_the_database(server: Server, store_args):
    ok = client(server, "audit", "verify", "--tenant", TENANT)
    assert ok.returncode == EXIT_OK and "intact" in ok.stdout, _shown(ok)
    pick = "SELECT id, outcome FROM audit WHERE tenant='acme' AND row_hash <> '' ORDER BY id LIMIT 1"

    def execute(sql: str, args=()):
        if store_args:
            import psycopg

            with psycopg.connect(store_args[1], autocommit=True) as conn:
                cur = conn.execute(sql.replace("?", "%s"), args)
                return cur.fetchone() if cur.description else None
        import sqlite3

        with sqlite3.connect(server.data_dir / "authsvc.sqlite3") as conn:
            return conn.execute(sql, args).fetchone()

    row_id, outcome = execute(pick)
    execute("UPDATE audit SET outcome='tampered' WHERE id=?", (row_id,))
    try:
        bad = client(server, "audit", "verify", "--tenant", TENANT)
        assert bad.returncode == EXIT_NEGATIVE, _shown(bad)
        assert f"broken at row {row_id}" in bad.stderr and "edited" in bad.stderr, _shown(bad)
    finally:
        execute("UPDATE audit SET outcome=? WHERE id=?", (outcome, row_id))
    assert client(server, "audit", "verify", "--tenant", TENANT).returncode == EXIT_OK


def test_watchlist_commands_list_a_fraudster_and_deleting_needs_yes(server: Server, wavs):
    base = ("--tenant", TENANT, "--name", "known")
    created = client(server, "watchlist", "create", *base, "--description", "case 42")
    assert created.returncode == EXIT_OK, _shown(created)
    added = client(
        server, "watchlist", "add", *base, "--fraudster", "f-42", wavs["other"][2], wavs["other"][3]
    )
    assert added.returncode == EXIT_OK and "f-42: listed on known" in added.stdout, _shown(added)
    listed = client(server, "watchlist", "list", "--tenant", TENANT)
    assert "known\t1 fraudster(s)\tcase 42" in listed.stdout.splitlines(), _shown(listed)
    assert "1 listed voice(s)" in listed.stdout
    members = client(server, "watchlist", "members", *base)
    assert members.stdout.splitlines() == ["f-42\t2 sample(s)"], _shown(members)
    missing = client(server, "watchlist", "members", "--tenant", TENANT, "--name", "nope")
    assert missing.returncode == 4, _shown(missing)  # NOT_FOUND
    unconfirmed = client(server, "watchlist", "delete", *base)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr, _shown(unconfirmed)
    deleted = client(server, "watchlist", "delete", *base, "--yes")
    assert deleted.returncode == EXIT_OK and "(1 fraudster(s))" in deleted.stdout, _shown(deleted)
