"""The `authsvc` command line as an operator runs it: real processes against a real server.

One `authsvc serve` subprocess serves the whole module (loading the model takes a few
seconds); every command is a fresh `authsvc` process, so exit codes, stdout and stderr
are what a shell script would see.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t") == ["CUSTOMER", "METHODS", "VOICE", "TEMPLATES", "FACTORS"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert rows["alice"][1:] == ["voice", "enrolled", "voice:4", "-"], _shown(listed)
    assert rows["carol"][1:] == ["voice", "enrolled", "voice:1", "-"], _shown(listed)
    ids = [line.split("\t")[0] for line in lines]
    assert ids == sorted(ids)

    shown = client(server, "customers", "show", "--tenant", TENANT, "--customer", "carol")
    assert shown.returncode == EXIT_OK, _shown(shown)
    assert shown.stdout.splitlines()[0] == f"{TENANT}/carol"
    template_line = r"^  voice: 1 sample\(s\), encoder ge2e \(.+\)$"
    assert re.search(template_line, shown.stdout, re.MULTILINE), _shown(shown)

    deleted = client(server, "customers", "delete", "--yes", "--tenant", TENANT, "--customer", "carol")
    assert deleted.returncode == EXIT_OK, _shown(deleted)
    assert f"deleted {TENANT}/carol (1 template(s), 0 secret(s))" in deleted.stdout

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
    path = _typing_file(tmp_path / "typing.jsonl", 3, 5)
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
    actions = [line.split("\t")[1] for line in result.stdout.splitlines()[1:]]
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


def _sql(server: Server, store_args: list[str], sql: str, args=()):
    """One statement on the server's own store, behind its back (a row edited, a clock moved)."""
    if store_args:
        import psycopg

        with psycopg.connect(store_args[1], autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), args)
            return cur.fetchone() if cur.description else None
    import sqlite3

    with sqlite3.connect(server.data_dir / "authsvc.sqlite3") as conn:
        return conn.execute(sql, args).fetchone()


def _typing_file(path: Path, seed: int, n: int) -> Path:
    import numpy as np

    from tests.typists import Typist

    typist = Typist(np.random.default_rng(seed))
    lines = []
    for _ in range(n):
        sample = typist.password()
        events = [{"key": e.key, "down": e.press, "up": e.release} for e in sample.events]
        lines.append(json.dumps({"kind": "fixed", "text": sample.text, "events": events}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_customers_expire_lists_in_a_dry_run_and_erases_with_yes(server: Server, store_args, tmp_path):
    """A customer inactive past retention_days (their last activity moved back four years in
    the store) is listed by --dry-run with nothing erased, refused off a terminal without --yes,
    then expired: templates gone, `customers show` says so; an active customer is kept."""
    for who, seed in (("old-kim", 21), ("new-kim", 22)):
        _register(server, who, "typing")
        done = client(
            server,
            "enroll",
            "keystrokes",
            "--tenant",
            TENANT,
            "--customer",
            who,
            _typing_file(tmp_path / f"{who}.jsonl", seed, 5),
        )
        assert done.returncode == EXIT_OK, _shown(done)
    four_years_ms = 4 * 365 * 86_400_000
    _sql(
        server,
        store_args,
        "UPDATE customers SET last_active_ms=last_active_ms-? WHERE tenant=? AND customer_id=?",
        (four_years_ms, TENANT, "old-kim"),
    )
    dry = client(server, "customers", "expire", "--tenant", TENANT, "--dry-run", "--output", "json")
    assert dry.returncode == EXIT_OK, _shown(dry)
    listed = json.loads(dry.stdout)
    assert [c["customer_id"] for c in listed["customers"]] == ["old-kim"], listed
    assert listed["dry_run"] and listed["customers"][0]["templates"] == 1 and listed["retention_days"] == 1095
    kept = json.loads(
        client(
            server, "customers", "show", "--tenant", TENANT, "--customer", "old-kim", "--output", "json"
        ).stdout
    )
    assert kept["templates"] and kept["expired"] is None, "a dry run erases nothing"

    refused = client(server, "customers", "expire", "--tenant", TENANT)
    assert refused.returncode == EXIT_USAGE and "--yes" in refused.stderr, _shown(refused)
    done = client(server, "customers", "expire", "--tenant", TENANT, "--yes")
    assert done.returncode == EXIT_OK and "expired 1 customer(s)" in done.stdout, _shown(done)
    assert "old-kim" in done.stdout and "new-kim" not in done.stdout, _shown(done)
    gone = json.loads(
        client(
            server, "customers", "show", "--tenant", TENANT, "--customer", "old-kim", "--output", "json"
        ).stdout
    )
    assert gone["templates"] == [] and gone["expired"], gone
    shown = client(server, "customers", "show", "--tenant", TENANT, "--customer", "old-kim")
    assert "expired" in shown.stdout and "retention" in shown.stdout, _shown(shown)
    still = json.loads(
        client(
            server, "customers", "show", "--tenant", TENANT, "--customer", "new-kim", "--output", "json"
        ).stdout
    )
    assert still["templates"] and still["expired"] is None
    again = client(server, "customers", "expire", "--tenant", TENANT, "--yes", "--output", "json")
    assert json.loads(again.stdout)["customers"] == [], "an expired customer is not expired twice"
    bad = client(server, "customers", "expire", "--tenant", TENANT, "--dry-run", "--limit", "0")
    assert bad.returncode == EXIT_USAGE, _shown(bad)


def test_audit_verify_detects_a_row_edited_in_the_database(server: Server, store_args):
    ok = client(server, "audit", "verify", "--tenant", TENANT)
    assert ok.returncode == EXIT_OK and "intact" in ok.stdout, _shown(ok)
    pick = "SELECT id, outcome FROM audit WHERE tenant='acme' AND row_hash <> '' ORDER BY id LIMIT 1"

    def execute(sql: str, args=()):
        return _sql(server, store_args, sql, args)

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


# --- issue 13: the whole API from the CLI ----------------------------------------------------

BANK = "bank"  # a finance tenant: a voice match asks for a second factor (AAL2)


@dataclass
class Bank:
    ops: Path  # enrollment + tenant-admin
    ivr: Path  # telephony


def run_as(
    srv: Server, key: Path, *args: str | Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A command with `key` as $AUTHSVC_CREDENTIAL_FILE and the server from $AUTHSVC_SERVER."""
    env = cli_env({"AUTHSVC_CREDENTIAL_FILE": str(key), "AUTHSVC_SERVER": srv.address})
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def _popen_as(srv: Server, key: Path, *args: str | Path, **kwargs) -> subprocess.Popen:
    env = cli_env({"AUTHSVC_CREDENTIAL_FILE": str(key), "AUTHSVC_SERVER": srv.address})
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen([*CLI, *map(str, args)], text=True, env=env, **kwargs)


@pytest.fixture(scope="module")
def bank(server: Server, tmp_path_factory) -> Bank:
    """The README's finance set-up: the tenant, its policy file, an operator key and an IVR key."""
    root = tmp_path_factory.mktemp("bank")
    admin = server.data_dir / "admin.credential"
    made = run_as(server, admin, "tenants", "create", BANK, "--sector", "finance")
    assert made.returncode == EXIT_OK, _shown(made)
    (server.data_dir / "policies").mkdir(exist_ok=True)
    (server.data_dir / "policies" / f"{BANK}.toml").write_text('sector = "finance"\n')
    keys = Bank(root / "bank-ops.key", root / "bank-ivr.key")
    for path, roles in ((keys.ops, ("enrollment", "tenant-admin")), (keys.ivr, ("telephony",))):
        grant = [a for r in roles for a in ("--role", r)]
        made = run_as(server, admin, "credentials", "create", "--tenant", BANK, *grant, "--out", path)
        assert made.returncode == EXIT_OK and path.stat().st_mode & 0o777 == 0o600, _shown(made)
    return keys


def _secret_of(uri: str) -> bytes:
    import base64
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp", uri
    secret = parse_qs(parts.query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


class Authenticator:
    """The customer's authenticator app: codes of its secret, never one time step twice (the
    service refuses a step once used, and accepts one step of drift either way)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.used = -1

    def code(self) -> str:
        from authsvc.stepup import totp

        while True:
            step = int(time.time() // 30)
            for s in (step, step + 1):
                if s > self.used:
                    self.used = s
                    return totp.generate(self.secret, s * 30)
            time.sleep(max(0.1, (step + 1) * 30 - time.time()))


def _finance_customer(srv: Server, keys: Bank, customer: str, wavs, methods: str = "voice,totp"):
    """register, enroll voice, factors totp enroll + confirm: -> the customer's authenticator."""
    base = ("--tenant", BANK, "--customer", customer)
    done = run_as(srv, keys.ops, "register", *base, "--methods", methods, "--consent-version", "2026-11")
    assert done.returncode == EXIT_OK, _shown(done)
    if "voice" in methods:
        done = run_as(srv, keys.ops, "enroll", "voice", *base, *wavs["target"][:4])
        assert done.returncode == EXIT_OK and "4 sample(s) added" in done.stdout, _shown(done)
    enrolled = run_as(srv, keys.ops, "factors", "totp", "enroll", *base, "--issuer", "Example Bank")
    assert enrolled.returncode == EXIT_OK, _shown(enrolled)
    # Off a terminal: only the URI, one line on stdout (no QR code), never in stderr.
    (uri,) = enrolled.stdout.splitlines()
    app = Authenticator(_secret_of(uri))
    assert "secret=" not in enrolled.stderr
    confirmed = run_as(srv, keys.ops, "factors", "totp", "confirm", *base, "--code", app.code())
    assert confirmed.returncode == EXIT_OK and "TOTP confirmed" in confirmed.stdout, _shown(confirmed)
    return app


def test_finance_flow_runs_from_the_cli_alone(server: Server, bank: Bank, wavs, tmp_path):
    """The README's finance flow: register, enroll voice, enroll and confirm TOTP, verify with
    step-up, validate the assertion on chat, each an `authsvc` command."""
    base = ("--tenant", BANK, "--customer", "c-1042")
    app = _finance_customer(server, bank, "c-1042", wavs)

    asked = run_as(server, bank.ivr, "verify", "voice", *base, wavs["target"][4])
    assert asked.returncode == EXIT_NEGATIVE, _shown(asked)
    assert "decision: STEP_UP_REQUIRED" in asked.stdout
    assert "a second factor is needed (totp)" in asked.stderr and "--totp-code" in asked.stderr

    token_file = tmp_path / "c-1042.assertion"
    verified = run_as(
        server,
        bank.ivr,
        "verify",
        "voice",
        *base,
        "--totp-code",
        app.code(),
        "--assertion-out",
        token_file,
        wavs["target"][5],
    )
    assert verified.returncode == EXIT_OK, _shown(verified)
    assert "decision: AUTHENTICATED" in verified.stdout and "second factor: totp accepted" in verified.stdout
    assert re.search(r"^assertion \S+: bank/c-1042, voice, totp, AAL2, expires ", verified.stdout, re.M)
    token = token_file.read_text().strip()
    assert token.count(".") == 2 and token_file.stat().st_mode & 0o777 == 0o600
    assert token not in verified.stdout + verified.stderr, "the bearer token is only in the file"

    valid = run_as(
        server,
        bank.ivr,
        "assertions",
        "validate",
        "--tenant",
        BANK,
        "--channel",
        "chat",
        "--token-file",
        token_file,
    )
    assert valid.returncode == EXIT_OK and "valid on chat" in valid.stdout and "AAL2" in valid.stdout, _shown(
        valid
    )
    # The finance preset allows one use: the chat channel spent it (token from stdin this time).
    again = run_as(
        server,
        bank.ivr,
        "assertions",
        "validate",
        "--tenant",
        BANK,
        "--channel",
        "chat",
        "-",
        "--output",
        "json",
        stdin=token + "\n",
    )
    assert again.returncode == EXIT_NEGATIVE, _shown(again)
    assert json.loads(again.stdout) == {
        "valid": False,
        "reason": "ASSERTION_REPLAYED",
        "message": json.loads(again.stdout)["message"],
    }
    assert "already used" in again.stderr and "AUTHSVC_CREDENTIAL" not in again.stderr

    shown = run_as(server, bank.ops, "customers", "show", *base, "--output", "json")
    assert shown.returncode == EXIT_OK, _shown(shown)
    doc = json.loads(shown.stdout)
    assert sorted(doc["methods"]) == ["totp", "voice"] and doc["factors"] == ["totp"] and not doc["opted_out"]
    assert doc["voice_enrollment"]["state"] == "enrolled"
    assert [(t["modality"], t["samples"]) for t in doc["templates"]] == [("voice", 4)]
    events = run_as(
        server,
        bank.ops,
        "audit",
        "list",
        "--tenant",
        BANK,
        "--customer",
        "c-1042",
        "--action",
        "factor",
        "--output",
        "json",
    )
    assert [e["action"] for e in json.loads(events.stdout)["events"]] == [
        "factor.totp.confirm",
        "factor.totp.enroll",
    ], _shown(events)


def test_a_one_time_code_step_up_reads_the_sent_code_from_stdin(server: Server, bank: Bank, wavs):
    base = ("--tenant", BANK, "--customer", "c-sms")
    done = run_as(
        server, bank.ops, "register", *base, "--methods", "voice,one_time_code", "--consent-version", "v1"
    )
    assert done.returncode == EXIT_OK, _shown(done)
    done = run_as(server, bank.ops, "enroll", "voice", "--quiet", *base, *wavs["target"][:4])
    assert done.returncode == EXIT_OK, _shown(done)
    done = run_as(
        server, bank.ops, "factors", "code-destination", "set", *base, "--destination", "+4930123456"
    )
    assert done.returncode == EXIT_OK and "phone number +4930123456" in done.stdout, _shown(done)
    outbox = server.data_dir / "outbox" / "codes.jsonl"
    sent_before = len(outbox.read_text().splitlines()) if outbox.exists() else 0
    # The code is read from stdin only once the service has sent it (as an IVR would collect it).
    verify = _popen_as(
        server,
        bank.ivr,
        "verify",
        "voice",
        *base,
        "--send-code",
        "--code-file",
        "-",
        "--output",
        "json",
        wavs["target"][4],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while not (outbox.exists() and len(outbox.read_text().splitlines()) > sent_before):
        assert verify.poll() is None, verify.communicate()
        assert time.monotonic() < deadline, "no code was sent"
        time.sleep(0.1)
    sent = json.loads(outbox.read_text().splitlines()[-1])
    assert sent["destination"] == "+4930123456" and sent["tenant"] == BANK
    out, err = verify.communicate(sent["code"] + "\n", timeout=COMMAND_TIMEOUT_S)
    assert verify.returncode == EXIT_OK, (out, err)
    doc = json.loads(out)
    assert doc["decision"]["outcome"] == "AUTHENTICATED", doc
    assert doc["second_factor"] == {"asked_for": [], "answered_with": "one_time_code", "code_sent": True}
    assert doc["decision"]["assertion"]["assurance_level"] == "AAL2"
    assert "token" not in json.dumps(doc), "no bearer token in the JSON"


def test_sessions_watch_follows_a_live_call_until_its_last_decision(
    server: Server, bank: Bank, wavs, tmp_path
):
    """A call held open on a second factor (its code comes through a FIFO) is watched by its id
    with `sessions watch` and, under its old name, `calls watch`: JSON Lines to the end."""
    base = ("--tenant", BANK, "--customer", "c-watch")
    app = _finance_customer(server, bank, "c-watch", wavs)
    fifo = tmp_path / "code.fifo"
    os.mkfifo(fifo, 0o600)
    verify = _popen_as(
        server,
        bank.ivr,
        "verify",
        "voice",
        *base,
        "--session-id",
        "call-77",
        "--code-file",
        fifo,
        "--verbose",
        "--output",
        "json",
        wavs["target"][6],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = json.loads(verify.stdout.readline())  # the call is live once it decided anything
        assert first["session_id"] == "call-77", first
        watchers = [
            _popen_as(
                server,
                bank.ivr,
                command,
                "watch",
                "--tenant",
                BANK,
                option,
                "call-77",
                "--output",
                "json",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for command, option in (("sessions", "--session"), ("calls", "--call"))
        ]
        latest = []
        for w in watchers:  # each gets the latest decision at once
            line = w.stdout.readline()
            assert line, w.communicate(timeout=COMMAND_TIMEOUT_S)
            latest.append(json.loads(line))
        assert all(d["session_id"] == "call-77" for d in latest), latest
        with fifo.open("w") as f:  # the code, now: the held call answers its step-up
            f.write(app.code() + "\n")
        out, err = verify.communicate(timeout=COMMAND_TIMEOUT_S)
        assert verify.returncode == EXIT_OK, (out, err)
        for w in watchers:
            rest, err = w.communicate(timeout=COMMAND_TIMEOUT_S)
            lines = [json.loads(line) for line in rest.splitlines()]
            assert w.returncode == EXIT_OK, (rest, err)
            assert lines[-1]["final"] and lines[-1]["outcome"] == "AUTHENTICATED", lines
            assert "token" not in rest
    finally:
        for p in [verify, *locals().get("watchers", [])]:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_verify_keystrokes_on_chat_asks_for_a_second_factor_and_takes_totp(
    server: Server, bank: Bank, tmp_path
):
    from tests.typists import Typist

    typist = Typist(np.random.default_rng(11))

    def write(path: Path, n: int) -> Path:
        lines = []
        for _ in range(n):
            s = typist.password()
            events = [{"key": e.key, "down": e.press, "up": e.release} for e in s.events]
            lines.append(json.dumps({"kind": "fixed", "text": s.text, "events": events}))
        path.write_text("\n".join(lines) + "\n")
        return path

    base = ("--tenant", BANK, "--customer", "c-chat")
    done = run_as(server, bank.ops, "register", *base, "--methods", "typing,totp", "--consent-version", "v1")
    assert done.returncode == EXIT_OK, _shown(done)
    done = run_as(server, bank.ops, "enroll", "keystrokes", *base, write(tmp_path / "enroll.jsonl", 6))
    assert done.returncode == EXIT_OK and "6 sample(s) added" in done.stdout, _shown(done)
    enrolled = run_as(server, bank.ops, "factors", "totp", "enroll", *base, "--output", "json")
    app = Authenticator(_secret_of(json.loads(enrolled.stdout)["provisioning_uri"]))
    done = run_as(
        server, bank.ops, "factors", "totp", "confirm", *base, "--code", "-", stdin=app.code() + "\n"
    )
    assert done.returncode == EXIT_OK, _shown(done)

    probe = write(tmp_path / "probe.jsonl", 1)
    alone = run_as(server, bank.ivr, "verify", "keystrokes", *base, "--channel", "chat", probe)
    assert alone.returncode == EXIT_NEGATIVE, _shown(alone)
    assert (
        "decision: STEP_UP_REQUIRED" in alone.stdout and "typing alone does not authenticate" in alone.stdout
    )
    assert "net speech" not in alone.stdout
    stepped = run_as(
        server,
        bank.ivr,
        "verify",
        "keystrokes",
        *base,
        "--channel",
        "chat",
        "--totp-code",
        app.code(),
        "--output",
        "json",
        probe,
    )
    assert stepped.returncode == EXIT_OK, _shown(stepped)
    decision = json.loads(stepped.stdout)["decision"]
    assert decision["outcome"] == "AUTHENTICATED" and decision["assertion"]["methods"] == ["typing", "totp"]
    assert decision["assertion"]["channel"] == "chat"


def test_a_wrong_totp_code_is_refused_and_counted(server: Server, bank: Bank, wavs):
    base = ("--tenant", BANK, "--customer", "c-wrong")
    app = _finance_customer(server, bank, "c-wrong", wavs)
    good = int(app.code())
    wrong = f"{(good + 1) % 10**6:06d}"
    refused = run_as(server, bank.ivr, "verify", "voice", *base, "--totp-code", wrong, wavs["target"][4])
    assert refused.returncode == EXIT_NEGATIVE, _shown(refused)
    assert "decision: STEP_UP_REQUIRED" in refused.stdout
    assert "the totp code was not accepted; 4 attempt(s) left" in refused.stderr, _shown(refused)


def test_a_code_nobody_asked_for_is_not_used_and_the_decision_stands(server: Server, enrolled, wavs):
    """A general tenant's match authenticates without a second factor: a --totp-code sent anyway
    is refused by the service (no step-up pending) and the CLI reports the call's decision."""
    result = _verify(server, "alice", wavs["target"][6], "--totp-code", "123456")
    assert result.returncode == EXIT_OK, _shown(result)
    assert "decision: AUTHENTICATED" in result.stdout
    assert "the code was not used: the service asked for no second factor" in result.stderr


def test_every_command_group_answers_json(server: Server, enrolled, bank: Bank, wavs, tmp_path):
    """--output json on each group's commands: one JSON document on stdout, parseable."""
    admin = server.data_dir / "admin.credential"
    ops, t = server.key_file, ("--tenant", TENANT)
    commands = [
        (admin, ["tenants", "list"], lambda d: {BANK, TENANT} <= {x["name"] for x in d["tenants"]}),
        (admin, ["tenants", "show", BANK], lambda d: d["sector"] == "finance"),
        (ops, ["credentials", "list", *t], lambda d: all("key" not in c for c in d["credentials"])),
        (ops, ["customers", "list", *t], lambda d: "alice" in {c["customer_id"] for c in d["customers"]}),
        (ops, ["customers", "show", *t, "--customer", "alice"], lambda d: d["templates"][0]["samples"] == 4),
        (ops, ["customers", "unlock", *t, "--customer", "alice"], lambda d: d["cleared"] == []),
        (
            ops,
            ["register", *t, "--customer", "json-1", "--methods", "voice", "--consent-version", "v1"],
            lambda d: d["customer"]["methods"] == ["voice"],
        ),
        (
            ops,
            ["enroll", "voice", *t, "--customer", "json-1", wavs["other"][5]],
            lambda d: d["added"] == 1 and d["files"][0]["added"],
        ),
        (
            ops,
            ["audit", "list", *t, "--action", "enroll", "--since", "1h", "--limit", "5"],
            lambda d: d["events"] and all(e["action"].startswith("enroll") for e in d["events"]),
        ),
        (ops, ["audit", "verify", *t], lambda d: d["intact"] is True),
        (ops, ["watchlist", "list", *t], lambda d: "watchlists" in d),
        (
            ops,
            ["verify", "voice", *t, "--customer", "alice", wavs["target"][7]],
            lambda d: d["decision"]["outcome"] == "AUTHENTICATED" and "evidence" in d["decision"],
        ),
        (
            ops,
            ["policy", "explain", "--tenant", BANK, "--policy-dir", server.data_dir / "policies"],
            lambda d: d["sector"] == "finance" and d["settings"]["assertion"]["max_uses"] == 1,
        ),
        (ops, ["keys", "new", tmp_path / "new.key"], lambda d: d["key_file"].endswith("new.key")),
    ]
    for key, args, check in commands:
        result = run_as(server, key, *args, "--output", "json")
        assert result.returncode == EXIT_OK, _shown(result)
        doc = json.loads(result.stdout)
        assert check(doc), (args, doc)
    made = run_as(
        server, admin, "credentials", "create", "--tenant", BANK, "--role", "agent", "--output", "json"
    )
    doc = json.loads(made.stdout)
    assert doc["api_key"].startswith("ask_") and doc["credential"]["roles"] == ["agent"], (
        "shown once, by design"
    )
    assert made.stderr == "", "nothing but the document"


def test_destructive_commands_refuse_without_yes_off_a_terminal(server: Server, enrolled, wavs):
    """Off a terminal every destructive command needs --yes: exit 2, nothing deleted."""
    _register(server, "keep")
    added = client(
        server, "enroll", "voice", "--quiet", "--tenant", TENANT, "--customer", "keep", wavs["other"][4]
    )
    assert added.returncode == EXIT_OK, _shown(added)
    made = client(server, "credentials", "create", "--tenant", TENANT, "--role", "agent", "--output", "json")
    key_id = json.loads(made.stdout)["credential"]["id"]
    listed = ("--tenant", TENANT, "--name", "keep-list")
    assert client(server, "watchlist", "create", *listed).returncode == EXIT_OK
    assert client(server, "watchlist", "add", *listed, "--fraudster", "f-1", wavs["other"][6]).returncode == 0
    refusals = [
        ["customers", "delete", "--tenant", TENANT, "--customer", "keep"],
        ["credentials", "revoke", "--tenant", TENANT, key_id],
        ["watchlist", "remove", *listed, "--fraudster", "f-1"],
        ["watchlist", "delete", *listed],
        ["webhooks", "delete", "--tenant", TENANT],
        [
            "register",
            "--tenant",
            TENANT,
            "--customer",
            "keep",
            "--methods",
            "typing",
            "--consent-version",
            "v2",
        ],
    ]
    for args in refusals:
        result = client(server, *args)
        assert result.returncode == EXIT_USAGE, _shown(result)
        assert "needs --yes" in result.stderr and "Traceback" not in result.stderr, _shown(result)
    assert _sample_count(server, "keep") == 1, "the customer and their voiceprint are still there"
    creds = json.loads(client(server, "credentials", "list", "--tenant", TENANT, "--output", "json").stdout)
    assert [c["revoked"] for c in creds["credentials"] if c["id"] == key_id] == [None]
    members = client(server, "watchlist", "members", *listed)
    assert members.stdout.splitlines() == ["f-1\t1 sample(s)"], _shown(members)
    deleted = client(server, "customers", "delete", "--tenant", TENANT, "--customer", "keep", "--yes")
    assert deleted.returncode == EXIT_OK, _shown(deleted)
    revoked = client(server, "credentials", "revoke", "--tenant", TENANT, key_id, "-y")
    assert revoked.returncode == EXIT_OK and f"revoked {key_id}" in revoked.stdout, _shown(revoked)


@pytest.mark.parametrize(
    "args",
    [
        [
            "register",
            "--tenant",
            "t",
            "--customer",
            "c",
            "--methods",
            "voice,fingerprint",
            "--consent-version",
            "v",
        ],
        ["audit", "list", "--tenant", "t", "--since", "yesterday"],
        ["audit", "list", "--tenant", "t", "--since", "1h", "--until", "2h"],
        ["audit", "list", "--tenant", "t", "--action", "enroll' OR '1'='1"],
        ["audit", "list", "--tenant", "t", "--limit", "0"],
        ["verify", "voice", "--tenant", "t", "--customer", "c", "--totp-code", "12ab56", "README.md"],
        ["factors", "totp", "confirm", "--tenant", "t", "--customer", "c", "--code", "1234"],
        ["credentials", "create", "--tenant", "t", "--role", "agent", "--expires-in", "forever"],
        ["customers", "list", "--tenant", "t", "--output", "xml"],
        ["assertions", "validate", "--tenant", "t", "--channel", "fax", "tok"],
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_bad_arguments_exit_2_before_anything_is_sent(args):
    # A server that is not there: reaching for it would be exit 3, not 2.
    result = authsvc(*args, "--server", "127.0.0.1:1", "--timeout", "5")
    assert result.returncode == EXIT_USAGE, _shown(result)
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(server: Server, enrolled):
    """`authsvc ... | head`: no BrokenPipeError traceback; exit 141 (128 + SIGPIPE)."""
    # `true` reads nothing and is gone long before the interpreter starts writing.
    piped = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {shlex.join(map(str, CLI))} completion bash | true"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env=cli_env(),
    )
    assert piped.returncode == 141 and piped.stderr == "", _shown(piped)
    # An RPC's output into a pipe whose reader has already gone.
    read, write = os.pipe()
    env = cli_env({"AUTHSVC_CREDENTIAL_FILE": str(server.key_file)})
    gone = subprocess.Popen(
        [*CLI, "audit", "list", "--tenant", TENANT, "--server", server.address],
        stdout=write,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(write)
    os.close(read)
    _, err = gone.communicate(timeout=COMMAND_TIMEOUT_S)
    assert gone.returncode == 141 and err == b"", err.decode()


def test_completion_scripts_cover_the_commands():
    bash = authsvc("completion", "bash")
    assert bash.returncode == EXIT_OK, _shown(bash)
    for word in ("sessions", "factors", "assertions", "--totp-code", "--output", "--since"):
        assert word in bash.stdout, word
    syntax = subprocess.run(["bash", "-n"], input=bash.stdout, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    zsh = authsvc("completion", "zsh")
    assert zsh.returncode == EXIT_OK and zsh.stdout.startswith("#compdef authsvc"), _shown(zsh)
    assert authsvc("completion", "fish").returncode == EXIT_USAGE


def test_progress_is_drawn_only_when_stderr_is_a_terminal(wavs):
    """enroll's progress bar goes to a terminal, never into a log or a pipe."""
    import fcntl
    import pty
    import struct
    import termios

    args = [*CLI, "enroll", "voice", "--tenant", TENANT, "--customer", "p", *map(str, wavs["other"][:3])]
    args += ["--server", "127.0.0.1:1", "--timeout", "5"]
    piped = subprocess.run(args, capture_output=True, text=True, env=cli_env(), timeout=COMMAND_TIMEOUT_S)
    assert piped.returncode == EXIT_UNAVAILABLE, _shown(piped)
    assert "enrolling" not in piped.stderr and "\r" not in piped.stderr, _shown(piped)
    master, slave = pty.openpty()
    # A terminal of 80 columns (a new pty is 0 x 0, where the bar has no room to be drawn).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        tty = subprocess.run(
            args, stdout=subprocess.PIPE, stderr=slave, env=cli_env(), timeout=COMMAND_TIMEOUT_S
        )
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert tty.returncode == EXIT_UNAVAILABLE
    assert b"enrolling:   0%" in shown, shown


def test_a_step_up_is_asked_for_at_the_terminal_without_echo(server: Server, bank: Bank, wavs):
    """On a terminal with no code given, the CLI asks once the service asks (getpass)."""
    import fcntl
    import pty
    import select
    import termios

    base = ("--tenant", BANK, "--customer", "c-tty")
    app = _finance_customer(server, bank, "c-tty", wavs)
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = cli_env({"AUTHSVC_CREDENTIAL_FILE": str(bank.ivr), "AUTHSVC_SERVER": server.address})
    verify = subprocess.Popen(
        [*CLI, "verify", "voice", *base, str(wavs["target"][8])],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    seen, deadline = b"", time.monotonic() + COMMAND_TIMEOUT_S
    try:
        while b"authenticator app: " not in seen:
            ready, _, _ = select.select([master], [], [], 1)
            assert time.monotonic() < deadline and verify.poll() is None, seen
            if ready:
                seen += os.read(master, 4096)
        assert b"asks for a second factor (totp)" in seen
        code = app.code()
        os.write(master, f"{code}\n".encode())
        out, _ = verify.communicate(timeout=COMMAND_TIMEOUT_S)
        while select.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    finally:
        if verify.poll() is None:
            verify.kill()
        os.close(master)
    assert verify.returncode == EXIT_OK, (out, seen)
    assert b"decision: AUTHENTICATED" in out and b"second factor: totp accepted" in out
    assert code.encode() not in seen, "the code is not echoed"
