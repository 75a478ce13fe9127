"""Store hot paths: SQLite versus PostgreSQL, one node versus two, side by side in one run.

    python bench/store.py [--postgres DSN] [--backends sqlite,postgresql] [--nodes 1,2]
                          [--ops template_load,...] [--concurrency 8] [--warmup-s 0.5]
                          [--window-s 1.5] [--repeats 3] [--customers 1000]
                          [--out bench/results/store.json]

What it measures: operations per second and latency (p50/p99) of the four store operations a
call makes, each through the facade a call uses, each one unit of work:

* template_load: `TemplateVault.load(tenant, customer, "voice")` of a customer with 5 voice
  templates of 1 KiB (a GE2E embedding's size), as a session start does (1 SELECT, then
  AES-GCM opening of the 5 blobs).
* audit_append: `Auditor.record(...)` of one event with two small details (1 INSERT).
* factor_check: `Factors.check_code(policy, tenant, customer, "totp", code)` with a wrong
  6-digit code on a customer whose TOTP is confirmed and who is not locked out: the full
  failure path (row-lock the customer, read lockout and TOTP state, count the failure, write
  the lockout state, audit). A right code is accepted only once per 30 s step per customer
  (replay protection), so a throughput test of right codes would need a fake clock; wrong
  codes are what an attacker's guesses cost, and the success path runs one statement more
  (its round trips are in the profile). The policy sets lockout.max_failures = 100 (the NIST
  maximum) and the lockout state of the TOTP customers is reset (untimed) before each cell,
  so no measured attempt finds the customer locked out (locked attempts are counted).
* assertion_use: `AssertionAuthority.validate(policy, token, "chat")` of assertions issued
  (by `issue`, untimed) just before the cell; each token is validated once (signature check,
  purge of expired ids, the counted use, audit).

Configurations, in one run, against one seeded database per backend (--customers customers
with templates, --totp-customers of them with a confirmed TOTP; seeded once before measuring):

* SQLite: a file in a temporary folder (WAL, synchronous=NORMAL, as `SQLiteStore` opens it).
* PostgreSQL: a schema of its own (`bench_<random>`) in --postgres (default
  $AUTHSVC_TEST_POSTGRES, else postgresql://postgres@127.0.0.1:5432/test), dropped at the end.
* one node: one OS process running --concurrency asyncio workers (closed loop: each awaits its
  operation, then starts the next) on one store object (SQLite: one connection and its
  executor thread; PostgreSQL: `PostgresStore`'s pool of 8 connections). 8 by default: the
  pool's size, so every connection is kept busy without queueing for one; SQLite runs one unit
  of work at a time whatever the number, so its workers queue (latency ~ 8 x service time).
* two nodes: two such processes (multiprocessing spawn), each with its own store object, on
  the same SQLite file or PostgreSQL schema, measured over the same window; throughput is
  the sum, latency percentiles are over both nodes' samples.

Each cell (backend x nodes x operation) is --repeats rounds, taken round-robin over the
operations so that a neighbour's burst spoils one round rather than one operation; a round is
--warmup-s of load (not counted), then --window-s measured, and an operation counts when it
completes inside the window. A cell's ops/s is its median round, its latency percentiles are
over the samples of its rounds; a round in which other processes used --quiet-cores or more is
listed but left out (unless all were). The parent samples the CPU time
of the node processes, of all `postgres` processes and of the whole machine over each window,
so each round also says how many milliseconds of node and database CPU one operation costs,
and how busy the rest of this (shared, 2-core) machine was (the busiest other processes are
named). Before each round the script waits (up to --quiet-wait-s) for the machine to be quiet.

Where the time goes (the profile, in the parent, one caller, untimed by the cells): each
operation run sequentially with psycopg's `AsyncConnection.wait` (every client/server round
trip goes through it) and SQLite's executor hand-offs counted and timed, and every statement
the SQL layer issues recorded by verb. With the round-trip time of a bare `SELECT 1` on one
connection and the cost of an empty unit of work, this says "an operation costs N round trips
x RTT + the rest" (the rest: the facade's Python, crypto and the driver).

Reading the figures: every worker runs flat out, so each configuration is measured at its
capacity on this machine, and the CPU columns say what bounds it: a node whose node_cores is
near 1 is limited by its own Python (one event loop; psycopg's per-round-trip work counts
there too), a machine_cores near the core count means the nodes and the database share out
the whole machine, and a low machine_cores with high p99 means waiting on a lock (SQLite's
database write lock across processes, a customer's row lock on PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
import random
import sqlite3
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.audit import Auditor
from authsvc.crypto import MasterKey
from authsvc.factors import _LOCKOUT, Factors
from authsvc.policy.schema import build_policy
from authsvc.stepup import totp
from authsvc.stepup.senders import load_sender
from authsvc.store import Store, open_store
from authsvc.templates import TemplateVault
from authsvc.trust import AssertionAuthority
from bench.common import RESULTS, create_schema, drop_schema, machine, write_results

TENANT = "bench"
TEMPLATES_PER_CUSTOMER = 5
TEMPLATE_BYTES = 1024
OPS = ("template_load", "audit_append", "factor_check", "assertion_use")
POLICY_RAW = {"lockout": {"max_failures": 100, "lockout_s": 300.0}}
POSTGRES_ENV = "AUTHSVC_TEST_POSTGRES"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PROFILE_OPS = 300


def bench_policy():
    return build_policy(TENANT, POLICY_RAW, "bench/store.py", "bench@1")


def customer(i: int) -> str:
    return f"cust-{i:05d}"


class Services:
    """What one node holds: the store and the facades over it."""

    def __init__(self, store: Store, master: MasterKey) -> None:
        self.store = store
        self.vault = TemplateVault(store, master)
        self.auditor = Auditor(store, self.vault)
        # No code is sent here; the log sender's "development only" warning is noise.
        logging.getLogger("authsvc.stepup.senders").setLevel(logging.ERROR)
        self.factors = Factors(self.vault, load_sender("log"), self.auditor)
        self.trust: AssertionAuthority | None = None
        self.policy = bench_policy()

    @classmethod
    async def open(cls, spec: str, master: MasterKey) -> Services:
        s = cls(await open_store(spec), master)
        s.trust = await AssertionAuthority.open(s.store, master, s.auditor)
        return s

    async def issue_tokens(self, n: int, customers: int, rnd: random.Random, batch: int = 200) -> list[str]:
        """`n` fresh assertions, audited like real ones, `batch` per unit of work (untimed)."""
        assert self.trust is not None
        tokens: list[str] = []
        while len(tokens) < n:
            await self.trust.signing_ready(TENANT)  # the ring is read before the unit of work
            async with self.store.transaction() as tx:
                for _ in range(min(batch, n - len(tokens))):
                    cid = customer(rnd.randrange(customers))
                    issued = await self.trust.issue(self.policy, cid, ("voice",), "AAL1", "voice", tx=tx)
                    tokens.append(issued.token)
        return tokens

    def operation(self, op: str, rnd: random.Random, customers: int, totp_customers: int, tokens: list[str]):
        """-> a coroutine function running one `op`; it returns a note ("" when as expected)."""
        if op == "template_load":

            async def run() -> str:
                loaded = await self.vault.load(TENANT, customer(rnd.randrange(customers)), "voice")
                return "" if len(loaded) == TEMPLATES_PER_CUSTOMER else "wrong_template_count"

        elif op == "audit_append":

            async def run() -> str:
                await self.auditor.record(
                    TENANT,
                    "bench.audit",
                    customer(rnd.randrange(customers)),
                    "ok",
                    policy=self.policy.policy_id,
                    session=uuid.uuid4().hex,
                )
                return ""

        elif op == "factor_check":

            async def run() -> str:
                cid = customer(rnd.randrange(totp_customers))
                attempt = await self.factors.check_code(
                    self.policy, TENANT, cid, "totp", f"{rnd.randrange(10**6):06d}"
                )
                if attempt.ok:
                    return "guessed_right"  # 3 in a million
                return "locked_out" if attempt.note == "locked out" else ""

        elif op == "assertion_use":
            assert self.trust is not None
            trust = self.trust

            async def run() -> str:
                if not tokens:
                    raise TokensExhausted
                await trust.validate(self.policy, tokens.pop(), "chat")
                return ""

        else:
            raise ValueError(op)
        return run


class TokensExhausted(Exception):
    pass


# -- seeding (parent, once per backend) ---------------------------------------------------


async def seed(spec: str, master: MasterKey, customers: int, totp_customers: int, rng_seed: int) -> dict:
    started = time.perf_counter()
    store = await open_store(spec)
    try:
        await store.migrate()
        s = Services(store, master)
        rnd = random.Random(rng_seed)
        for first in range(0, customers, 50):
            async with store.transaction() as tx:
                for i in range(first, min(first + 50, customers)):
                    cid = customer(i)
                    # Registered with consent, as enrollment requires.
                    await tx.set_choices(
                        TENANT, cid, ["voice", "totp"], False, "bench", int(time.time() * 1000)
                    )
                    for j in range(TEMPLATES_PER_CUSTOMER):
                        payload = rnd.randbytes(TEMPLATE_BYTES)
                        digest = s.vault.sample_digest(TENANT, cid, "voice", payload)
                        await s.vault.put(
                            TENANT, cid, "voice", "ge2e", "bench-1", digest, payload, f"u{j}", tx
                        )
        secrets: dict[str, bytes] = {}
        for i in range(totp_customers):
            cid = customer(i)
            # The customer holds templates: adding a factor needs an authorization (the seeding
            # operator's, as a tenant-admin's would be).
            uri = await s.factors.enroll_totp(
                TENANT, cid, cid, "authsvc-bench", "bench", change="bench seeding"
            )
            b32 = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
            secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))
            if not await s.factors.confirm_totp(TENANT, cid, totp.generate(secret, time.time())):
                raise SystemExit(f"seeding: TOTP confirmation of {cid} failed")
            secrets[cid] = secret
        # The tenant's signing ring, created outside the measured window.
        await (await AssertionAuthority.open(store, master, s.auditor)).ring_of(TENANT)
    finally:
        await store.close()
    return {"seconds": round(time.perf_counter() - started, 1), "totp_secrets": secrets}


async def reset_lockouts(spec: str, totp_customers: int) -> None:
    store = await open_store(spec)
    try:
        async with store.transaction() as tx:
            for i in range(totp_customers):
                await tx.delete_state(TENANT, customer(i), _LOCKOUT)
    finally:
        await store.close()


# -- one node (a process of its own) ------------------------------------------------------


def node_main(conn, spec: str, key: bytes, node: int, concurrency: int, customers: int, totp_n: int) -> None:
    asyncio.run(_node(conn, spec, MasterKey(key), node, concurrency, customers, totp_n))


async def _node(conn, spec, master, node, concurrency, customers, totp_n) -> None:
    s = await Services.open(spec, master)
    tokens: list[str] = []
    rnd = random.Random(1000 + node)
    conn.send({"pid": os.getpid(), "store": s.store.description})
    try:
        while True:
            cmd = await asyncio.to_thread(conn.recv)
            if cmd["cmd"] == "stop":
                break
            if cmd["cmd"] == "prepare":
                started = time.perf_counter()
                tokens = await s.issue_tokens(cmd["tokens"], customers, rnd) if cmd["tokens"] else []
                conn.send({"tokens": len(tokens), "seconds": round(time.perf_counter() - started, 2)})
            elif cmd["cmd"] == "run":
                conn.send(await _cell(s, cmd, node, concurrency, customers, totp_n, tokens))
    finally:
        await s.store.close()


async def _cell(s: Services, cmd: dict, node: int, concurrency: int, customers, totp_n, tokens) -> dict:
    t_start, t_end = cmd["t_start"], cmd["t_end"]
    latencies: list[float] = []
    notes: Counter = Counter()
    errors: Counter = Counter()
    first_error: dict[str, str] = {}
    warmup_ops = 0

    async def worker(w: int) -> None:
        nonlocal warmup_ops
        run = s.operation(cmd["op"], random.Random(node * 1000 + w), customers, totp_n, tokens)
        while (t0 := time.monotonic()) < t_end:
            try:
                note = await run()
            except TokensExhausted:
                notes["tokens_exhausted"] += 1
                return
            except Exception as exc:
                name = type(exc).__name__
                errors[name] += 1
                first_error.setdefault(name, str(exc)[:200])
                continue
            t1 = time.monotonic()
            if t_start <= t1 <= t_end:
                latencies.append(t1 - t0)
                if note:
                    notes[note] += 1
            elif t1 < t_start:
                warmup_ops += 1

    tasks = [asyncio.create_task(worker(w)) for w in range(concurrency)]
    _done, late = await asyncio.wait(tasks, timeout=max(0.0, t_end - time.monotonic()) + 15.0)
    for t in late:
        t.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    return {
        "node": node,
        "latencies": np.asarray(latencies, dtype=np.float64),
        "warmup_ops": warmup_ops,
        "notes": dict(notes),
        "errors": dict(errors),
        "first_error": first_error,
        "cancelled_after_window": len(late),
        "tokens_left": len(tokens),
    }


# -- CPU sampling (parent) ----------------------------------------------------------------


def cpu_snapshot(node_pids: list[int]) -> dict:
    """CPU seconds so far of every process (by pid, with its name) and of the whole machine."""
    import psutil

    procs = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            procs[p.pid] = (p.info["name"] or "?", t.user + t.system)
    total = psutil.cpu_times()
    steal = getattr(total, "steal", 0.0)
    busy = (
        total.user + total.nice + total.system + getattr(total, "irq", 0.0) + getattr(total, "softirq", 0.0)
    )
    return {"t": time.monotonic(), "procs": procs, "nodes": set(node_pids), "machine": busy, "steal": steal}


def cpu_delta(a: dict, b: dict, ops: int) -> dict:
    """Cores used over the window: the nodes, PostgreSQL's processes, this parent, and the rest
    of the machine (with the three busiest other processes named: neighbours show up here)."""
    wall = b["t"] - a["t"]
    by_group: Counter = Counter()
    others: Counter = Counter()
    for pid, (name, cpu) in b["procs"].items():
        d = cpu - a["procs"].get(pid, (name, 0.0))[1]
        if pid in a["nodes"]:
            by_group["nodes"] += d
        elif name == "postgres":
            by_group["postgres"] += d
        elif pid == os.getpid():
            by_group["parent"] += d
        else:
            others[f"{name}[{pid}]"] += d
    machine = b["machine"] - a["machine"]

    def per_op(x: float) -> float | None:
        return round(1000 * x / ops, 3) if ops else None

    return {
        "node_cores": round(by_group["nodes"] / wall, 2),
        "postgres_cores": round(by_group["postgres"] / wall, 2),
        "other_cores": round(max(0.0, machine - sum(by_group.values())) / wall, 2),
        "machine_cores": round(machine / wall, 2),
        "steal_cores": round((b["steal"] - a["steal"]) / wall, 2),
        "busiest_others": {k: round(v / wall, 2) for k, v in others.most_common(3) if v / wall >= 0.01},
        "node_cpu_ms_per_op": per_op(by_group["nodes"]),
        "postgres_cpu_ms_per_op": per_op(by_group["postgres"]),
    }


def wait_quiet(limit_s: float, quiet_cores: float) -> tuple[float, float]:
    """Waits (up to limit_s) until the machine, nodes idle, is busier than quiet_cores no more;
    -> (seconds waited, busy cores seen last). This machine is shared: a neighbour's test run
    would otherwise be measured as the store's cost."""
    import psutil

    started = time.monotonic()
    while True:
        a = psutil.cpu_times()
        time.sleep(0.25)
        b = psutil.cpu_times()
        busy = (b.user + b.nice + b.system - a.user - a.nice - a.system) / 0.25
        if busy < quiet_cores or time.monotonic() - started >= limit_s:
            return time.monotonic() - started, busy


# -- the cells ----------------------------------------------------------------------------


def pct(samples: np.ndarray) -> dict:
    if samples.size == 0:
        return {"count": 0}
    ms = samples * 1000
    return {
        "count": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def run_topology(
    backend: str, spec: str, nodes: int, args, master: MasterKey, audit_rate: dict
) -> list[dict]:
    """Starts the nodes, runs every operation --repeats times (round-robin over the operations,
    so a neighbour's burst hits one round, not one operation) and returns one cell per op."""
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    for k in range(nodes):
        parent, child = ctx.Pipe()
        p = ctx.Process(
            target=node_main,
            args=(child, spec, master.key, k, args.concurrency, args.customers, args.totp_customers),
            daemon=True,
        )
        p.start()
        child.close()  # so that a node's death reads as EOF here, not as a hang
        procs.append(p)
        pipes.append(parent)
    rounds: dict[str, list[dict]] = {op: [] for op in args.ops}
    try:
        pids = [c.recv()["pid"] for c in pipes]
        for rep in range(args.repeats):
            for op in args.ops:
                r = measure(backend, nodes, op, spec, pipes, pids, args, audit_rate)
                rounds[op].append(r)
                print(f"  [{rep + 1}/{args.repeats}] " + cell_line(r), flush=True)
        for c in pipes:
            c.send({"cmd": "stop"})
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(10)
    return [combine(rs, args.quiet_cores) for rs in rounds.values()]


def measure(backend, nodes, op, spec, pipes, pids, args, audit_rate: dict) -> dict:
    """One window of one operation on all nodes at once."""
    if op == "factor_check":
        asyncio.run(reset_lockouts(spec, args.totp_customers))
    n_tokens = 0
    if op == "assertion_use":
        # Enough for the window at the audit rate (a validation writes more than an audit row).
        per_node = audit_rate.get((backend, nodes), 2000.0) / nodes
        n_tokens = int(per_node * (args.warmup_s + args.window_s + 1.0) * 1.5) + 200
    prepared = []
    for c in pipes:  # one node after the other: on SQLite, concurrent batches starve one
        c.send({"cmd": "prepare", "tokens": n_tokens})
        prepared.append(c.recv())
    waited, busy = wait_quiet(args.quiet_wait_s, args.quiet_cores)
    t_start = time.monotonic() + 0.3 + args.warmup_s
    t_end = t_start + args.window_s
    for c in pipes:
        c.send({"cmd": "run", "op": op, "t_start": t_start, "t_end": t_end})
    time.sleep(max(0.0, t_start - time.monotonic()))
    before = cpu_snapshot(pids)
    time.sleep(max(0.0, t_end - time.monotonic()))
    after = cpu_snapshot(pids)
    results = [c.recv() for c in pipes]
    lat = np.concatenate([r["latencies"] for r in results])
    errors: Counter = Counter()
    notes: Counter = Counter()
    first_error: dict = {}
    for r in results:
        errors.update(r["errors"])
        notes.update(r["notes"])
        first_error.update(r["first_error"])
    out = {
        "backend": backend,
        "nodes": nodes,
        "op": op,
        "ops_per_s": round(lat.size / args.window_s, 1),
        **pct(lat),
        "latencies": lat,
        "per_node_ops_per_s": [round(r["latencies"].size / args.window_s, 1) for r in results],
        "errors": dict(errors),
        "first_error": first_error,
        "notes": dict(notes),
        "cpu": cpu_delta(before, after, int(lat.size)),
        "before": {"machine_busy_cores": round(busy, 2), "waited_for_quiet_s": round(waited, 1)},
    }
    if n_tokens:
        out["tokens"] = {
            "per_node": n_tokens,
            "left": [r["tokens_left"] for r in results],
            "issue_s": [p["seconds"] for p in prepared],
        }
    if op == "audit_append":
        audit_rate[(backend, nodes)] = max(out["ops_per_s"], 200.0)
    return out


def combine(rounds: list[dict], quiet_cores: float) -> dict:
    """One cell from its rounds: the median round's ops/s (each round listed), latency
    percentiles over all rounds' samples, errors and notes summed, CPU per round. Rounds in
    which other processes used quiet_cores or more are listed but left out of the figures,
    unless every round was disturbed."""
    first = rounds[0]
    samples = {id(r): r.pop("latencies") for r in rounds}
    for r in rounds:
        r["disturbed"] = r["cpu"]["other_cores"] >= quiet_cores
    all_rounds, rounds = rounds, [r for r in rounds if not r["disturbed"]] or rounds
    lat = np.concatenate([samples[id(r)] for r in rounds])
    errors: Counter = Counter()
    notes: Counter = Counter()
    for r in rounds:
        errors.update(r["errors"])
        notes.update(r["notes"])
    cpu = {
        k: float(np.median([r["cpu"][k] for r in rounds if r["cpu"][k] is not None] or [np.nan]))
        for k in first["cpu"]
        if k != "busiest_others"
    }
    return {
        "backend": first["backend"],
        "nodes": first["nodes"],
        "op": first["op"],
        "ops_per_s": round(float(np.median([r["ops_per_s"] for r in rounds])), 1),
        "ops_per_s_rounds": [r["ops_per_s"] for r in rounds],
        "rounds_used": len(rounds),
        **pct(lat),
        "errors": dict(errors),
        "notes": dict(notes),
        "cpu_median": {k: round(v, 3) for k, v in cpu.items()},
        "rounds": all_rounds,
    }


def cell_line(c: dict) -> str:
    nan = float("nan")
    extra = ""
    if c["errors"]:
        extra += f" errors {c['errors']}"
    if c["notes"]:
        extra += f" notes {c['notes']}"
    cpu = c["cpu"]
    if cpu["other_cores"] >= 0.2:
        extra += f" (busiest: {cpu['busiest_others']})"
    return (
        f"{c['backend']:10s} {c['nodes']} node{'s' if c['nodes'] > 1 else ' '} {c['op']:14s} "
        f"{c['ops_per_s']:8.1f} ops/s  p50 {c.get('p50_ms', nan):7.2f} ms  p99 {c.get('p99_ms', nan):7.2f} ms"
        f"  | cpu/op node {cpu['node_cpu_ms_per_op']} ms, pg {cpu['postgres_cpu_ms_per_op']} ms,"
        f" other {cpu['other_cores']} cores{extra}"
    )


# -- where the time goes (parent, one caller, instrumented) -------------------------------


class Tally:
    def __init__(self) -> None:
        self.trips = 0
        self.wait_s = 0.0
        self.verbs: Counter = Counter()

    def reset(self) -> None:
        self.trips, self.wait_s, self.verbs = 0, 0.0, Counter()


def _tracked(gen, io: list[bool]):
    """`gen`, driven as is, noting in io[0] whether it ever waited on the socket."""
    try:
        wait = next(gen)
    except StopIteration as done:
        return done.value
    io[0] = True
    while True:
        try:
            ready = yield wait
        except BaseException as exc:  # a timeout or cancellation thrown in by the waiter
            try:
                wait = gen.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            wait = gen.send(ready)
        except StopIteration as done:
            return done.value


@contextlib.contextmanager
def instrumented(tally: Tally):
    """Counts and times every PostgreSQL round trip (`AsyncConnection.wait`) and SQLite executor
    hand-off (`SQLiteStore._run`), and records the verb of every statement the SQL layer sends."""
    import psycopg

    from authsvc.store.postgres import PostgresTransaction
    from authsvc.store.sqlite import SQLiteStore, SQLiteTransaction

    saved: list[tuple[type, str, Callable]] = []

    def patch(cls: type, name: str, make: Callable) -> None:
        original = cls.__dict__[name]
        saved.append((cls, name, original))
        setattr(cls, name, make(original))

    def timed(original):
        async def wrapper(self, *a, **kw):
            t = time.perf_counter()
            try:
                return await original(self, *a, **kw)
            finally:
                tally.trips += 1
                tally.wait_s += time.perf_counter() - t

        return wrapper

    def pg_wait(original):
        # A wait whose generator never yields did no I/O (the pool's commit of an idle
        # connection after the unit of work's own COMMIT): no round trip.
        async def wrapper(self, gen, *a, **kw):
            io = [False]
            t = time.perf_counter()
            try:
                return await original(self, _tracked(gen, io), *a, **kw)
            finally:
                if io[0]:
                    tally.trips += 1
                    tally.wait_s += time.perf_counter() - t

        return wrapper

    def verb(original):
        async def wrapper(self, sql, args=()):
            tally.verbs[sql.split(None, 1)[0].upper() if sql.strip() else "(empty)"] += 1
            return await original(self, sql, args)

        return wrapper

    def pg_execute(original):
        async def wrapper(self, query, *a, **kw):
            if query == "":
                tally.verbs["(pool check)"] += 1
            return await original(self, query, *a, **kw)

        return wrapper

    patch(psycopg.AsyncConnection, "wait", pg_wait)
    patch(psycopg.AsyncConnection, "execute", pg_execute)
    patch(SQLiteStore, "_run", timed)
    for cls in (PostgresTransaction, SQLiteTransaction):
        patch(cls, "_all", verb)
        patch(cls, "_count", verb)
    try:
        yield
    finally:
        for cls, name, original in reversed(saved):
            setattr(cls, name, original)


async def profile(backend: str, spec: str, master: MasterKey, args, totp_secrets: dict[str, bytes]) -> dict:
    import psycopg

    tally = Tally()
    out: dict = {"unit": "round trips" if backend == "postgresql" else "executor hand-offs"}
    s = await Services.open(spec, master)
    try:
        with instrumented(tally):
            # The floor: one bare statement, and a unit of work with nothing in it.
            if backend == "postgresql":
                conn = await psycopg.AsyncConnection.connect(spec, autocommit=True)
                try:
                    bare = []
                    for _ in range(500):
                        t = time.perf_counter()
                        await conn.execute("SELECT 1")
                        bare.append(time.perf_counter() - t)
                finally:
                    await conn.close()
                out["select1_rtt_ms"] = pct(np.asarray(bare[50:]))
            else:
                bare = []
                for _ in range(500):
                    t = time.perf_counter()
                    await s.store.ping()
                    bare.append(time.perf_counter() - t)
                out["select1_hop_ms"] = pct(np.asarray(bare[50:]))

            async def empty() -> str:
                async with s.store.transaction():
                    pass
                return ""

            rnd = random.Random(7)
            tokens = await s.issue_tokens(PROFILE_OPS + 20, args.customers, rnd)
            ops: dict[str, Callable] = {"empty_unit_of_work": empty}
            for op in OPS:
                ops[op] = s.operation(op, rnd, args.customers, args.totp_customers, tokens)
            right = iter(sorted(totp_secrets.items()))

            async def right_code() -> str:
                # The code of the next 30 s step: accepted once (the seed confirmed the current one).
                cid, secret = next(right)
                code = totp.generate(secret, time.time() + 30)
                attempt = await s.factors.check_code(s.policy, TENANT, cid, "totp", code)
                return "" if attempt.ok else "rejected"

            ops["factor_check_right_code"] = right_code
            for name, run in ops.items():
                n = min(PROFILE_OPS, len(totp_secrets)) if name == "factor_check_right_code" else PROFILE_OPS
                for _ in range(20 if name != "factor_check_right_code" else 0):
                    await run()  # warm: data key cache, prepared statements
                tally.reset()
                lat, notes = [], Counter()
                for _ in range(n):
                    t = time.perf_counter()
                    note = await run()
                    lat.append(time.perf_counter() - t)
                    if note:
                        notes[note] += 1
                row = pct(np.asarray(lat))
                row["trips_per_op"] = round(tally.trips / n, 2)
                row["db_wait_ms_per_op"] = round(1000 * tally.wait_s / n, 3)
                row["outside_db_ms_per_op"] = round(row["mean_ms"] - row["db_wait_ms_per_op"], 3)
                row["statements_per_op"] = {k: round(v / n, 2) for k, v in sorted(tally.verbs.items())}
                if notes:
                    row["notes"] = dict(notes)
                out[name] = row
    finally:
        await s.store.close()
    return out


def explain(backend: str, prof: dict) -> list[str]:
    floor = prof.get("select1_rtt_ms") or prof.get("select1_hop_ms")
    unit = "round trips" if backend == "postgresql" else "hand-offs"
    rtt = floor["p50_ms"]
    lines = [
        f"{backend}: bare SELECT 1 p50 {rtt:.3f} ms ({'one connection' if unit == 'round trips' else 'ping'})"
    ]
    for name, row in prof.items():
        if not isinstance(row, dict) or "trips_per_op" not in row:
            continue
        stmts = ", ".join(f"{k} {v:g}" for k, v in row["statements_per_op"].items())
        lines.append(
            f"  {name:24s} mean {row['mean_ms']:6.3f} ms = {row['trips_per_op']:4.1f} {unit} "
            f"({row['db_wait_ms_per_op']:.3f} ms waiting; {row['trips_per_op']:.1f} x {rtt:.3f} = "
            f"{row['trips_per_op'] * rtt:.3f}) + {row['outside_db_ms_per_op']:.3f} ms outside  [{stmts}]"
        )
    return lines


# -- report -------------------------------------------------------------------------------


def ratios(cells: list[dict]) -> dict:
    by = {(c["backend"], c["nodes"], c["op"]): c["ops_per_s"] for c in cells}

    def r(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    out: dict = {"postgresql_over_sqlite": {}, "two_over_one_node": {}}
    for nodes in (1, 2):
        out["postgresql_over_sqlite"][f"{nodes}_node"] = {
            op: r(by.get(("postgresql", nodes, op)), by.get(("sqlite", nodes, op))) for op in OPS
        }
    for backend in ("sqlite", "postgresql"):
        out["two_over_one_node"][backend] = {
            op: r(by.get((backend, 2, op)), by.get((backend, 1, op))) for op in OPS
        }
    return out


def table(cells: list[dict]) -> str:
    configs = sorted({(c["backend"], c["nodes"]) for c in cells}, key=lambda k: (k[0] != "sqlite", k[1]))
    by = {(c["backend"], c["nodes"], c["op"]): c for c in cells}
    head = f"{'operation':15s}" + "".join(f"{f'{b} x{n}':>30s}" for b, n in configs)
    lines = [head, f"{'':15s}" + "".join(f"{'ops/s spread  p50ms   p99ms':>30s}" for _ in configs)]
    for op in OPS:
        row = f"{op:15s}"
        for b, n in configs:
            c = by.get((b, n, op))
            if c is None or not c.get("count"):
                row += f"{'-':>30s}"
            else:
                rounds = c.get("ops_per_s_rounds") or [c["ops_per_s"]]
                spread = (max(rounds) - min(rounds)) / c["ops_per_s"] if c["ops_per_s"] else 0.0
                spread_text = f"±{50 * spread:.0f}%"
                row += f"{c['ops_per_s']:>8.0f}{spread_text:>6s}{c['p50_ms']:>8.2f}{c['p99_ms']:>8.2f}"
        lines.append(row)
    lines.append(
        "ops/s: the median round; spread: half the range of the rounds, as a share of the median "
        "(rounds a neighbour disturbed are left out)"
    )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["cells"]
    cfg = results["config"]
    configs = sorted({(c["backend"], c["nodes"]) for c in cells}, key=lambda k: (k[0] != "sqlite", k[1]))
    by = {(c["backend"], c["nodes"], c["op"]): c for c in cells}
    colors = {("sqlite", 1): "#9ecae1", ("sqlite", 2): "#3182bd", ("postgresql", 1): "#fdae6b"}
    colors[("postgresql", 2)] = "#e6550d"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.2))
    width = 0.8 / max(1, len(configs))
    xs = np.arange(len(OPS))
    for i, (b, n) in enumerate(configs):
        ops = [by[(b, n, op)]["ops_per_s"] if (b, n, op) in by else 0 for op in OPS]
        p50 = [by[(b, n, op)].get("p50_ms", np.nan) if (b, n, op) in by else np.nan for op in OPS]
        p99 = [by[(b, n, op)].get("p99_ms", np.nan) if (b, n, op) in by else np.nan for op in OPS]
        x = xs + (i - (len(configs) - 1) / 2) * width
        label = f"{b}, {n} node{'s' if n > 1 else ''}"
        color = colors.get((b, n))
        rounds = [by[(b, n, op)].get("ops_per_s_rounds", []) if (b, n, op) in by else [] for op in OPS]
        low = [v - min(r) if r else 0 for v, r in zip(ops, rounds, strict=True)]
        high = [max(r) - v if r else 0 for v, r in zip(ops, rounds, strict=True)]
        bars = ax1.bar(x, ops, width, label=label, color=color, yerr=[low, high], capsize=2, ecolor="grey")
        ax1.bar_label(bars, fmt="%.0f", fontsize=7)
        ax2.bar(x, p99, width, label=f"{label}: p99", color=color)
        ax2.scatter(x, p50, color="black", marker="_", s=120, zorder=3, label="p50" if i == 0 else None)
    for ax in (ax1, ax2):
        ax.set_xticks(xs, OPS)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("operations per second (all nodes)")
    ax1.set_title(f"throughput (median of {cfg['repeats']} rounds; whiskers: min-max)")
    ax2.set_ylabel("latency, ms (bar: p99, tick: p50)")
    ax2.set_yscale("log")
    ax2.set_title("latency")
    pg = results.get("postgres", {})
    fig.suptitle(
        f"authsvc store operations, {cfg['concurrency']} workers per node, {cfg['repeats']} x "
        f"{cfg['window_s']:g} s per cell, "
        f"{results['machine']['cpu_count']} cores; PostgreSQL {pg.get('server_version', '')}"
        f" (synchronous_commit {pg.get('synchronous_commit', '?')}), "
        f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def code_version() -> dict:
    """The commit measured and the files that differ from it (the nodes run the working tree)."""
    import subprocess

    def git(*cmd: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            root = Path(__file__).resolve().parent.parent
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, timeout=10).stdout
        return ""

    return {
        "commit": git("rev-parse", "HEAD").strip(),
        # The service's code alone: a commit of docs or tests during the run changes nothing measured.
        "authsvc_tree": git("rev-parse", "HEAD:authsvc").strip(),
        "authsvc_uncommitted_sha256": hashlib.sha256(
            git("diff", "HEAD", "--", "authsvc").encode()
        ).hexdigest(),
        "uncommitted": [line[3:] for line in git("status", "--porcelain").splitlines()],
    }


def pg_settings(dsn: str) -> dict:
    import psycopg

    names = (
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "shared_buffers",
        "max_connections",
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),))
        return dict(rows.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", default=os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--nodes", default="1,2", help="node counts to run (default 1,2)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"operations (default {','.join(OPS)})")
    parser.add_argument("--concurrency", type=int, default=8, help="asyncio workers per node (default 8)")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="load before each window (default 0.5)")
    parser.add_argument(
        "--window-s", type=float, default=1.5, help="measured seconds per round (default 1.5)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds per cell (default 3)")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--totp-customers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=20.0,
        help="before each round, wait up to this long for a quiet machine (default 20)",
    )
    parser.add_argument("--quiet-cores", type=float, default=0.3, help="'quiet': busy under this many cores")
    parser.add_argument("--out", type=Path, default=RESULTS / "store.json")
    args = parser.parse_args()
    backends = args.backends.split(",")
    args.ops = [op for op in OPS if op in args.ops.split(",")]
    node_counts = [int(x) for x in args.nodes.split(",")]
    started = time.perf_counter()
    master = MasterKey(os.urandom(32))
    from authsvc.store.postgres import PostgresStore, describe_dsn

    results: dict = {
        "benchmark": "bench/store.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "backends": backends,
            "nodes": node_counts,
            "ops": args.ops,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup_s,
            "window_s": args.window_s,
            "repeats": args.repeats,
            "customers": args.customers,
            "templates_per_customer": TEMPLATES_PER_CUSTOMER,
            "template_bytes": TEMPLATE_BYTES,
            "totp_customers": args.totp_customers,
            "policy": POLICY_RAW,
            "postgres": describe_dsn(args.postgres)[0] if "postgresql" in backends else None,
            "postgres_pool_max_size": PostgresStore.__init__.__defaults__[1],
            "sqlite": f"{sqlite3.sqlite_version}, WAL, synchronous=NORMAL, busy_timeout 5000 ms, "
            "BEGIN IMMEDIATE per unit of work",
            "quiet": f"before each cell, up to {args.quiet_wait_s:g} s wait for under "
            f"{args.quiet_cores:g} busy cores",
            "load": "closed loop per worker; an operation counts when it completes in the window",
            "factor_check": "wrong TOTP code, customer not locked out (lockouts reset before the cell)",
            "assertion_use": "validate of assertions issued just before the cell, each once",
        },
        "machine": {**machine(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "code": code_version(),
        "cells": [],
        "profile": {},
        "seeding": {},
    }
    with contextlib.suppress(Exception):
        import psycopg

        results["machine"]["versions"]["psycopg"] = psycopg.__version__
    audit_rate: dict = {}
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-store-") as tmp:
        for backend in backends:
            schema = None
            if backend == "sqlite":
                spec = f"sqlite:{Path(tmp) / 'store' / 'authsvc.sqlite3'}"
            else:
                results["postgres"] = pg_settings(args.postgres)
                schema = f"bench_{uuid.uuid4().hex[:12]}"
                spec = create_schema(args.postgres, schema)
            try:
                print(f"== {backend}: seeding {args.customers} customers ...", flush=True)
                seeded = asyncio.run(seed(spec, master, args.customers, args.totp_customers, args.seed))
                results["seeding"][backend] = {"seconds": seeded["seconds"]}
                print(f"   seeded in {seeded['seconds']} s; profiling one caller ...", flush=True)
                prof = asyncio.run(profile(backend, spec, master, args, seeded["totp_secrets"]))
                results["profile"][backend] = prof
                for line in explain(backend, prof):
                    print("   " + line, flush=True)
                for nodes in node_counts:
                    results["cells"] += run_topology(backend, spec, nodes, args, master, audit_rate)
            finally:
                if schema:
                    drop_schema(args.postgres, schema)
    results["ratios"] = ratios(results["cells"])
    if code_version()["authsvc_tree"] != results["code"]["authsvc_tree"]:
        results["code"]["warning"] = (
            "authsvc/ was committed anew during the run: the figures may mix versions"
        )
        print(f"warning: {results['code']['warning']}", flush=True)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.perf_counter() - started, 1)
    print()
    print(table(results["cells"]))
    print("\nratio PostgreSQL / SQLite (ops/s):")
    for k, v in results["ratios"]["postgresql_over_sqlite"].items():
        print(f"  {k}: " + "  ".join(f"{op} {x}" for op, x in v.items()))
    print("ratio two nodes / one node (ops/s):")
    for k, v in results["ratios"]["two_over_one_node"].items():
        print(f"  {k}: " + "  ".join(f"{op} {x}" for op, x in v.items()))
    write_results(results, args.out, plot)


if __name__ == "__main__":
    main()
