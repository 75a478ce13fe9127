"""`authsvc serve` processes for tests that need real nodes: several on one store, kill -9, restarts."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

CLI = (sys.executable, "-m", "authsvc.cli.main")
STARTUP_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an `authsvc` process of a test: the operator's own store and master
    key settings never leak in; the test gives what it needs in `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("AUTHSVC_MASTER_KEY", "AUTHSVC_STORE")}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs `authsvc ARGS...` as its own process: what it printed and exited with."""
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
    )


def new_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Node:
    """One `authsvc serve` process; every node of a test gets the same store and master key."""

    root: Path
    name: str
    store: str
    master_key: str
    policy_dir: Path | None = None
    extra: list[str] = field(default_factory=list)
    address: str = ""
    process: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self) -> Node:
        self.address = f"127.0.0.1:{free_port()}"
        env = cli_env({"AUTHSVC_MASTER_KEY": self.master_key})
        args = [*CLI, "serve", "--data-dir", str(self.data_dir), "--listen", self.address, "--no-metrics"]
        args += ["--store", self.store]
        if self.policy_dir:
            args += ["--policy-dir", str(self.policy_dir)]
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [*args, *self.extra], stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def admin_key(self) -> str:
        """The platform-admin key the first node on an empty store wrote at its first start."""
        return (self.data_dir / "admin.credential").read_text().strip()

    def wait_serving(self) -> Node:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_S
        with grpc.insecure_channel(self.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited {self.process.returncode}\n{self.log_text()}")
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.name} not serving after {STARTUP_S:.0f} s\n{self.log_text()}"
                    )
                time.sleep(0.2)

    def kill(self) -> None:
        """kill -9: no drain, no clean close of the store."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_nodes(*nodes: Node) -> list[Node]:
    """Starts every node, then waits for all (they load the model in parallel)."""
    for n in nodes:
        n.start()
    return [n.wait_serving() for n in nodes]
