"""A store that times its operations: the same protocol, latencies reported to a callback.

The service context wraps its store in `TimedStore` so that store latency is
measured where the store is called, while the store layer knows nothing of
metrics: `timer(operation)` returns the function each duration (in seconds)
is given to (authsvc.metrics.Metrics.store_timer). Operations are a bounded
set of names: `begin` (until a unit of work is open: the PostgreSQL pool, the
SQLite write lock), `commit`, `transaction` (a whole unit of work, begin to
commit or rollback), `ping`, `migrate`, and each `Transaction` method by name.
Anything else the wrapped store has is passed through untouched.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from authsvc.store.base import Store, Transaction

Timer = Callable[[str], Callable[[float], None]]


class _Timers:
    """One observe function per operation, looked up once."""

    def __init__(self, timer: Timer) -> None:
        self._timer = timer
        self._by_name: dict[str, Callable[[float], None]] = {}

    def __call__(self, operation: str) -> Callable[[float], None]:
        observe = self._by_name.get(operation)
        if observe is None:
            observe = self._by_name[operation] = self._timer(operation)
        return observe


class TimedTransaction:
    """A unit of work whose query methods report their latency; everything else passes through."""

    # type -> method name -> whether it is a coroutine function (looked up once per name)
    _async: ClassVar[dict[tuple[type, str], bool]] = {}

    def __init__(self, tx: Transaction, timers: _Timers) -> None:
        self._tx = tx
        self._timers = timers

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tx, name)
        key = (type(self._tx), name)
        is_async = self._async.get(key)
        if is_async is None:
            is_async = self._async[key] = not name.startswith("_") and inspect.iscoroutinefunction(attr)
        if not is_async:
            return attr
        observe = self._timers(name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                observe(time.perf_counter() - start)

        return timed


class TimedStore:
    """`store`, with the latency of each unit of work, its opening, commit and queries timed."""

    def __init__(self, store: Store, timer: Timer) -> None:
        self._store = store
        self._timers = _Timers(timer)
        self.description = store.description
        self.dialect = store.dialect

    @property
    def inner(self) -> Store:
        return self._store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[Transaction]:
        timers = self._timers
        start = time.perf_counter()
        try:
            async with self._store.transaction(read_only=read_only) as tx:
                opened = time.perf_counter()
                timers("begin")(opened - start)
                yield TimedTransaction(tx, timers)  # type: ignore[misc]
                ended = time.perf_counter()
            # Reached only when the block ended without an exception: it committed.
            timers("commit")(time.perf_counter() - ended)
        finally:
            timers("transaction")(time.perf_counter() - start)

    async def _timed(self, operation: str, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return await call()
        finally:
            self._timers(operation)(time.perf_counter() - start)

    async def ping(self) -> None:
        await self._timed("ping", self._store.ping)

    async def migrate(self) -> list[int]:
        return await self._timed("migrate", self._store.migrate)

    async def schema_version(self) -> int:
        return await self._store.schema_version()

    async def close(self) -> None:
        await self._store.close()
