"""`python:package.module:ClassName` plug-ins (code senders, master-key providers)."""

from __future__ import annotations

import importlib
from typing import Any

from authsvc.errors import AuthsvcError, ConfigError


def instantiate(spec: str, target: str, what: str, method: str) -> Any:
    """An instance of the class `target` ("package.module:ClassName") made without arguments (it
    reads its own settings, e.g. from the environment), which must have `method`. Anything
    else is a ConfigError naming `what` and the spec."""
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name:
        raise ConfigError(f"{what} {spec!r}: expected 'python:package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"{what} {spec!r}: module {module_name!r} has no {class_name!r}")
    if not callable(cls):
        raise ConfigError(f"{what} {spec!r}: {class_name!r} is not a class")
    try:
        instance = cls()
    except AuthsvcError:
        raise
    except Exception as exc:
        raise ConfigError(f"{what} {spec!r}: {class_name}() failed: {exc}") from exc
    if not callable(getattr(instance, method, None)):
        raise ConfigError(f"{what} {spec!r}: {class_name} has no {method}() method")
    return instance
