"""How one-time codes reach the customer: the `CodeSender` interface and its development senders.

Production deployments plug in their own SMS or e-mail provider with
`python:package.module:ClassName` (see docs/second-factors.md). The two senders
here are for development only: they put the code where the developer can read
it, which is exactly what production must never do.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from authsvc.errors import AuthsvcError, ConfigError
from authsvc.plugins import instantiate

log = logging.getLogger(__name__)


class DeliveryError(AuthsvcError):
    """The provider could not deliver the code (network, provider outage, bad destination).

    Providers raise this (or let the transport layer map their own errors); the caller may
    retry later. The message must not contain the code.
    """

    reason = "CODE_DELIVERY_FAILED"


@runtime_checkable
class CodeSender(Protocol):
    def send(self, destination: str, code: str, purpose: str, tenant: str) -> None:
        """Deliver `code` to `destination` (phone number, e-mail address) or raise `DeliveryError`.

        `purpose` (e.g. "login", "change_phone") lets the message say what the code is for;
        `tenant` lets one provider account serve several tenants (sender id, template).
        Called off the event loop; it may block on network I/O.
        """
        ...


class FileSender:
    """Development: appends one JSON line per code to `path` (created with mode 0600)."""

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists():
            mode = stat.S_IMODE(self.path.stat().st_mode)
            if mode & 0o077:
                raise ConfigError(
                    f"{self.path}: code file is readable by group or others (mode {mode:o}); run chmod 600"
                )
        log.warning("FileSender writes one-time codes in clear to %s: development only", self.path)

    def send(self, destination: str, code: str, purpose: str, tenant: str) -> None:
        line = json.dumps(
            {
                "time": self._clock(),
                "tenant": tenant,
                "destination": destination,
                "purpose": purpose,
                "code": code,
            },
            sort_keys=True,
        )
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


class LogSender:
    """Development: logs every code at WARNING, in clear."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._log.warning("LogSender logs one-time codes in clear: development only")

    def send(self, destination: str, code: str, purpose: str, tenant: str) -> None:
        self._log.warning(
            "DEV ONLY one-time code %s for %s (tenant %s, purpose %s)", code, destination, tenant, purpose
        )


def load_sender(spec: str) -> CodeSender:
    """A sender from its spec: "log", "file:/path/codes.jsonl", or "python:package.module:ClassName".

    A `python:` class is instantiated without arguments (it reads its own settings, e.g. API
    credentials, from the environment) and must have a `send` method. Anything else is a
    `ConfigError` naming the spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("code sender spec is empty (use 'log', 'file:PATH' or 'python:MODULE:CLASS')")
    spec = spec.strip()
    if spec == "log":
        return LogSender()
    scheme, sep, rest = spec.partition(":")
    if not sep:
        raise ConfigError(
            f"code sender {spec!r}: unknown spec (use 'log', 'file:PATH' or 'python:MODULE:CLASS')"
        )
    if scheme == "file":
        if not rest:
            raise ConfigError(f"code sender {spec!r}: 'file:' needs a path")
        return FileSender(rest)
    if scheme == "python":
        return _load_python_sender(spec, rest)
    raise ConfigError(
        f"code sender {spec!r}: unknown scheme {scheme!r} (use 'log', 'file:PATH' or 'python:MODULE:CLASS')"
    )


def _load_python_sender(spec: str, target: str) -> CodeSender:
    return instantiate(spec, target, "code sender", "send")
