"""Live calls on this node: a verification session with its decision feed, found by call id.

One transport drives a call (the Verify stream, a media bridge). Other callers of the service
that know its call id may claim its customer (ClaimIdentity) or watch its decisions
(WatchSession, webhooks). Every entry point into the session runs under the call's lock, so a
claim arriving between two audio chunks sees the session between them. Every decision the
session emits goes to each watcher's queue; a watcher that falls behind is dropped, never
waited for, so no watcher can stall a call.

The registry is per node: a claim or a watcher must reach the node that holds the call (route
by call id). Call ids are unique per tenant among live calls, so one call cannot be hijacked
by another stream opened under its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from authsvc.errors import AlreadyExists, NotFound, Overloaded
from authsvc.policy.engine import Decision

T = TypeVar("T")
Observer = Callable[[str, str, str, Decision], None]
# Decisions a watcher may have waiting before it is dropped: a call makes a few dozen at most.
WATCH_QUEUE = 256
_END = object()


class WatcherBehind(Overloaded):
    """A watcher did not read a call's decisions fast enough and was dropped."""


class DecisionFeed:
    """Fans one call's decisions out to its subscribers, in order."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue] = []
        self.latest: Decision | None = None
        self._ended: BaseException | object | None = None

    def publish(self, decision: Decision) -> None:
        self.latest = decision
        for q in list(self._queues):
            try:
                q.put_nowait(decision)
            except asyncio.QueueFull:
                # Dropped: what it had not read is moot, the reason is all it gets now.
                self._queues.remove(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(WatcherBehind("the watcher fell behind the call's decisions", 1.0))

    def end(self, error: BaseException | None = None) -> None:
        """No more decisions: subscribers finish (with `error` for the call's own stream)."""
        self._ended = error if error is not None else _END
        for q in self._queues:
            if q.full():  # the end matters more than one unread decision
                q.get_nowait()
            q.put_nowait(self._ended)
        self._queues.clear()

    def subscribe(self, *, latest: bool, limit: int = 0) -> AsyncIterator[Decision]:
        """The call's decisions from now on (from its latest one with `latest`) until it ends,
        subscribed at once. `limit` bounds what may wait unread (0: unbounded, for the call's
        own stream)."""
        q: asyncio.Queue = asyncio.Queue(limit)
        if latest and self.latest is not None:
            q.put_nowait(self.latest)
        if self._ended is not None:
            q.put_nowait(self._ended)
        else:
            self._queues.append(q)
        return self._read(q)

    async def _read(self, q: asyncio.Queue) -> AsyncIterator[Decision]:
        try:
            while True:
                item = await q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if q in self._queues:
                self._queues.remove(q)


class LiveCall:
    """A session, the lock its entry points take, and its decision feed."""

    def __init__(self, tenant: str, call_id: str, session, observer: Observer | None = None) -> None:
        self.tenant, self.call_id, self.session = tenant, call_id, session
        self.feed = DecisionFeed()
        self._lock = asyncio.Lock()
        self._observer = observer
        session.emitted = self._emitted

    def _emitted(self, decision: Decision) -> None:
        self.feed.publish(decision)
        if self._observer is not None:
            self._observer(self.tenant, self.call_id, self.session.start.customer_id, decision)

    async def run(self, step: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            return await step()


class LiveCalls:
    """The calls this node holds, by (tenant, call id). `observer` is told of every decision of
    every call (the webhooks), on the event loop: it must not block."""

    def __init__(self, observer: Observer | None = None) -> None:
        self._calls: dict[tuple[str, str], LiveCall] = {}
        self.observer = observer

    def open(self, tenant: str, call_id: str, session) -> LiveCall:
        call = LiveCall(tenant, call_id, session, self.observer)
        if call_id:
            if (tenant, call_id) in self._calls:
                raise AlreadyExists(f"call {call_id!r} is already live; a call id names one call")
            self._calls[(tenant, call_id)] = call
        return call

    def get(self, tenant: str, call_id: str) -> LiveCall:
        call = self._calls.get((tenant, call_id))
        if call is None:
            # Another tenant's call reads the same as none: ids are no oracle across tenants.
            raise NotFound(f"no live call {call_id!r} on this node")
        return call

    def close(self, call: LiveCall, error: BaseException | None = None) -> None:
        if self._calls.get((call.tenant, call.call_id)) is call:
            del self._calls[(call.tenant, call.call_id)]
        call.feed.end(error)
