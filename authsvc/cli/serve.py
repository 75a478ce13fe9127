"""`authsvc serve`: runs the service until SIGINT/SIGTERM, then drains gracefully."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from authsvc import retention
from authsvc.context import ENCODER_WORKERS, ServiceConfig, ServiceContext, build_context
from authsvc.errors import ConfigError, NotFound
from authsvc.files import write_private
from authsvc.server.app import AuthServer, TlsFiles
from authsvc.server.observe import json_formatter
from authsvc.store.base import StoreUnavailable
from authsvc.tracing import configure_otlp
from authsvc.trust import ROTATE_AFTER_S
from authsvc.voice.batcher import BatchConfig
from authsvc.voice.registry import KNOWN_ENCODERS

log = logging.getLogger("authsvc")

#: The OpenTelemetry Prometheus exporter's customary port.
DEFAULT_METRICS_PORT = 9464
#: The interpreter's switch interval under `authsvc serve` (see `serve`).
GIL_SWITCH_MS = 0.5


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not 0.01 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0.01 and 100 ms, got {text}")
    return value


def default_data_dir() -> Path:
    if os.environ.get("AUTHSVC_DATA_DIR"):
        return Path(os.environ["AUTHSVC_DATA_DIR"])
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "authsvc"


def add_key_args(p: argparse.ArgumentParser) -> None:
    """Where the master key comes from (docs/keys.md); the first one given wins."""
    p.add_argument(
        "--master-key-provider",
        help="python:package.module:ClassName whose load() returns the key (a KMS client); "
        "default $AUTHSVC_MASTER_KEY_PROVIDER",
    )
    p.add_argument(
        "--master-key-file",
        type=Path,
        help="the master key file, e.g. a mounted secret outside the data directory "
        "(default $AUTHSVC_MASTER_KEY_FILE, else $AUTHSVC_MASTER_KEY, else <data-dir>/master.key)",
    )
    p.add_argument(
        "--previous-master-key-file",
        type=Path,
        help="during a master-key rotation: the key being rotated away from",
    )


def key_config(args: argparse.Namespace) -> dict:
    return {
        "master_key_provider": args.master_key_provider,
        "master_key_file": args.master_key_file,
        "previous_master_key_file": args.previous_master_key_file,
    }


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="store, key file and policies (default $AUTHSVC_DATA_DIR or ~/.local/share/authsvc)",
    )
    p.add_argument(
        "--listen", default="127.0.0.1:50051", help="address to listen on (default 127.0.0.1:50051)"
    )
    p.add_argument(
        "--encoder",
        choices=KNOWN_ENCODERS,
        default="ge2e",
        help="speaker encoder (default ge2e; ge2e-onnx: the same model on ONNX Runtime; "
        "wespeaker: a WeSpeaker ONNX model folder, models/onnx.md)",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        help="model folder (ECAPA in the spkrec-ecapa-voxceleb layout; wespeaker: config.yaml + .onnx)",
    )
    p.add_argument(
        "--countermeasure-dir",
        type=Path,
        default=os.environ.get("AUTHSVC_COUNTERMEASURE_DIR") or None,
        help="synthetic-speech countermeasure (AASIST, clovaai layout: .conf + .pth); "
        "without it synthetic speech is not assessed ($AUTHSVC_COUNTERMEASURE_DIR)",
    )
    p.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda, cuda:1 ..."
    )
    p.add_argument("--threads", type=int, help="CPU threads for the encoder (default 1 on the CPU)")
    p.add_argument(
        "--gil-switch-ms",
        type=_positive_ms,
        default=GIL_SWITCH_MS,
        help=f"the interpreter's thread switch interval (default {GIL_SWITCH_MS:g}; Python's own is 5)",
    )
    p.add_argument(
        "--encoder-workers",
        type=int,
        default=ENCODER_WORKERS,
        help=f"worker processes per model, the encoder's and the countermeasure's (default "
        f"{ENCODER_WORKERS}: the model computes beside the server, not sharing its GIL; 0: in the "
        "server's own thread)",
    )
    p.add_argument(
        "--half", action="store_true", help="float16 on CUDA (refused if embeddings drift from float32)"
    )
    batching = BatchConfig()
    p.add_argument(
        "--max-batch",
        type=int,
        help=f"most requests per encoder call (default {batching.max_batch}; 1 for ECAPA on the CPU, "
        "where batching was measured to buy nothing)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        help=f"longest the oldest request waits for a batch to fill (default {batching.max_wait_ms:g})",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=batching.max_queue,
        help=f"queued requests before new ones get RESOURCE_EXHAUSTED (default {batching.max_queue})",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"Prometheus endpoint port (default {DEFAULT_METRICS_PORT}, skipped with a warning if taken; "
        "0 picks a free port)",
    )
    p.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the Prometheus endpoint (default 127.0.0.1)"
    )
    p.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("AUTHSVC_LOG_FORMAT") or "text",
        help="text lines, or one JSON object per log record (default $AUTHSVC_LOG_FORMAT, else text); "
        "the access log is logger authsvc.access (docs/observability.md)",
    )
    p.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces of decisions over OTLP (needs the otel extra and "
        "opentelemetry-exporter-otlp; OTEL_EXPORTER_OTLP_* say where)",
    )
    p.add_argument(
        "--store",
        help="postgresql://user@host/db (shared by several nodes; the password may come from "
        "PGPASSWORD or ~/.pgpass) or sqlite:PATH (default $AUTHSVC_STORE, else <data-dir>/authsvc.sqlite3)",
    )
    p.add_argument(
        "--store-pool-size",
        type=int,
        default=8,
        help="PostgreSQL connections of this node (default 8; units of work beyond it wait up to 5 s, "
        "then get UNAVAILABLE)",
    )
    p.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply schema migrations at start; refuse to start on an older schema instead "
        "(run `authsvc db migrate` first)",
    )
    p.add_argument(
        "--key-rotation-s",
        type=float,
        default=ROTATE_AFTER_S,
        help=f"rotate the assertion signing key at this age (default {ROTATE_AFTER_S:g} s); nodes sharing "
        "a store share the key ring, and the first to notice rotates it for all",
    )
    p.add_argument("--policy-dir", type=Path, help="tenant policy files (default <data-dir>/policies)")
    p.add_argument(
        "--code-sender",
        help="where one-time codes go: file:PATH, log, or python:module:Class "
        "(default: the development outbox <data-dir>/outbox/codes.jsonl)",
    )
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS with --tls-key")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, help="CA for client certificates; enables mutual TLS")
    add_key_args(p)
    p.add_argument(
        "--reflection",
        action="store_true",
        help="enable gRPC server reflection (off by default: it maps the whole API for anyone)",
    )
    p.add_argument(
        "--audiohook-listen",
        metavar="HOST:PORT",
        help="serve the Genesys AudioHook bridge (WebSocket) there; off unless given. TLS with "
        "--tls-cert/--tls-key, else terminate TLS in front (Genesys connects only to wss://)",
    )
    p.add_argument("--audiohook-path", default="/audiohook", help="its URL path (default /audiohook)")
    p.add_argument(
        "--twilio-listen",
        metavar="HOST:PORT",
        help="serve the Twilio Media Streams bridge (WebSocket) there; off unless given (needs "
        "--twilio-public-url). Twilio connects to wss:// only: TLS here or in front",
    )
    p.add_argument(
        "--twilio-public-url",
        metavar="WSS_URL",
        help="the base URL Twilio is given, e.g. wss://authsvc.example.com/twilio: a tenant's TwiML "
        "streams to <base>/<tenant>, and Twilio signs exactly that URL",
    )
    p.add_argument(
        "--audiosocket-listen",
        metavar="HOST:PORT",
        help="serve the Asterisk AudioSocket bridge (TCP) there, for --audiosocket-tenant; off unless "
        "given. AudioSocket has no authentication or TLS: a trusted network only (docs/bridges.md)",
    )
    p.add_argument("--audiosocket-tenant", help="the tenant whose calls the AudioSocket listener takes")
    p.add_argument(
        "--audiosocket-allow",
        action="append",
        metavar="CIDR",
        help="peer networks the AudioSocket listener accepts (repeatable; default loopback only)",
    )
    p.add_argument(
        "--webhook-allow-http",
        action="store_true",
        help="allow plain http:// webhook URLs (development only: decisions are personal data)",
    )
    p.add_argument(
        "--webhook-allow-private",
        action="store_true",
        help="allow webhook URLs on private or loopback addresses (development only: a tenant-admin "
        "could make the service call its own network)",
    )
    p.add_argument(
        "--bridge-idle-s",
        type=float,
        default=30.0,
        help="a bridge connection silent this long is closed and its call ended (default 30)",
    )
    p.add_argument(
        "--retention-interval-s",
        type=float,
        default=3600.0,
        help="how often biometric templates past each tenant's retention_days expire and audit rows "
        "past its audit_days are trimmed (default 3600; 0: never, run `authsvc customers expire`)",
    )
    p.add_argument(
        "--admin-credential-file",
        type=Path,
        help="where a first start writes the platform-admin API key (default <data-dir>/admin.credential)",
    )


def use_log_format(fmt: str) -> None:
    """Every handler of the root logger writes `fmt`: "json" (one object per record) or "text"."""
    if fmt != "json":
        return
    formatter = json_formatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


async def _serve(args: argparse.Namespace) -> None:
    tracer_provider = None
    if args.otel:
        try:
            tracer_provider = configure_otlp()
        except RuntimeError as exc:
            raise SystemExit(f"authsvc: error: {exc}") from None
        log.info("OpenTelemetry traces of decisions exported over OTLP")
    config = ServiceConfig(
        data_dir=args.data_dir or default_data_dir(),
        encoder=args.encoder,
        model_dir=args.model_dir,
        countermeasure_dir=Path(args.countermeasure_dir) if args.countermeasure_dir else None,
        device=args.device,
        threads=args.threads,
        encoder_workers=args.encoder_workers,
        policy_dir=args.policy_dir,
        code_sender=args.code_sender,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        half=args.half,
        store=args.store,
        migrate=not args.no_migrate,
        key_rotation_s=args.key_rotation_s,
        store_pool_size=args.store_pool_size,
        webhook_allow_http=args.webhook_allow_http,
        webhook_allow_private=args.webhook_allow_private,
        **key_config(args),
    )
    try:
        ctx = await build_context(config)
    except (ConfigError, StoreUnavailable) as exc:
        raise SystemExit(f"authsvc: error: {exc}") from None
    await _serve_metrics(ctx, args)
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    try:
        await _first_start(ctx, args.admin_credential_file or config.data_dir / ADMIN_CREDENTIAL)
    except (ConfigError, OSError) as exc:
        await ctx.close()
        raise SystemExit(f"authsvc: error: {exc}") from None
    if tls is None and not _loopback(args.listen):
        log.warning(
            "serving plaintext on %s: API keys cross the network in clear; give --tls-cert/--tls-key "
            "(or terminate TLS in front of the service)",
            args.listen,
        )
    server = AuthServer(ctx, args.listen, tls, reflection_on=args.reflection)
    await server.start()
    bridges = await _start_bridges(ctx, args)
    sweeps = (
        asyncio.create_task(retention.run_sweeps(ctx, args.retention_interval_s))
        if args.retention_interval_s > 0
        else None
    )
    log.info(
        "authsvc serving on %s (%s), store %s, encoder %s %s",
        args.listen,
        "TLS" if tls else "plaintext",
        ctx.store.description,
        ctx.encoder.encoder_id,
        ctx.encoder.version,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    if sweeps is not None:
        sweeps.cancel()
    for bridge in bridges:
        await bridge.stop()
    await server.stop()
    if tracer_provider is not None:
        tracer_provider.shutdown()  # flushes the spans still batched


ADMIN_CREDENTIAL = "admin.credential"


def _host_port(value: str, flag: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"authsvc: error: {flag} takes HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


async def _start_bridges(ctx: ServiceContext, args: argparse.Namespace) -> list:
    started = []
    if args.audiohook_listen:
        from authsvc.bridges.audiohook import AudioHookServer

        host, port = _host_port(args.audiohook_listen, "--audiohook-listen")
        tls = _server_ssl(args)
        if tls is None and not _loopback(args.audiohook_listen):
            log.warning("AudioHook on %s without TLS: terminate TLS in front of it", args.audiohook_listen)
        bridge = AudioHookServer(ctx, host, port, args.audiohook_path, args.bridge_idle_s, tls)
        bound = await bridge.start()
        log.info("AudioHook bridge on %s://%s:%d%s", "wss" if tls else "ws", host, bound, args.audiohook_path)
        started.append(bridge)
    if args.twilio_listen:
        from authsvc.bridges.twilio import TwilioServer

        if not args.twilio_public_url or not args.twilio_public_url.startswith("wss://"):
            raise SystemExit("authsvc: error: --twilio-listen needs --twilio-public-url wss://HOST/PATH")
        host, port = _host_port(args.twilio_listen, "--twilio-listen")
        bridge = TwilioServer(ctx, args.twilio_public_url, host, port, args.bridge_idle_s, _server_ssl(args))
        bound = await bridge.start()
        log.info("Twilio bridge on %s:%d (streams to %s/<tenant>)", host, bound, args.twilio_public_url)
        started.append(bridge)
    if args.audiosocket_listen:
        from authsvc.bridges.audiosocket import LOOPBACK, AudioSocketServer

        if not args.audiosocket_tenant:
            raise SystemExit("authsvc: error: --audiosocket-listen needs --audiosocket-tenant")
        host, port = _host_port(args.audiosocket_listen, "--audiosocket-listen")
        allow = tuple(args.audiosocket_allow or LOOPBACK)
        try:
            bridge = AudioSocketServer(ctx, args.audiosocket_tenant, host, port, allow, args.bridge_idle_s)
            bound = await bridge.start()
        except (ValueError, NotFound) as exc:
            raise SystemExit(f"authsvc: error: AudioSocket bridge: {exc}") from None
        log.info(
            "AudioSocket bridge on %s:%d for tenant %s (peers %s)",
            host,
            bound,
            args.audiosocket_tenant,
            allow,
        )
        started.append(bridge)
    return started


def _server_ssl(args: argparse.Namespace):
    if not args.tls_cert:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def _loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


async def _first_start(ctx: ServiceContext, path: Path) -> None:
    """On a store with no live platform credential (a first start): a platform-admin key,
    written to `path` (0600). A key file left from another store is replaced: its key opens
    nothing here. Should the file not be written, the key is revoked again, so no key exists
    that nobody holds."""
    made = await ctx.credentials.bootstrap()
    if made is None:
        return
    record, key = made
    try:
        write_private(path, key, replace=True)
    except OSError:
        await ctx.credentials.revoke("", record.id, "first-start")
        raise
    log.warning(
        "first start: a platform-admin API key is in %s (mode 0600). Use it with "
        "`export AUTHSVC_CREDENTIAL_FILE=%s`, create tenants and their credentials, then keep it offline",
        path,
        path,
    )


async def _serve_metrics(ctx: ServiceContext, args: argparse.Namespace) -> None:
    """Starts the Prometheus endpoint and says where it is.

    An explicitly chosen port that cannot be bound is fatal; the default port
    being taken (another authsvc on this host) only costs the endpoint.
    """
    if args.no_metrics:
        return
    port = DEFAULT_METRICS_PORT if args.metrics_port is None else args.metrics_port
    try:
        url = ctx.metrics.serve(args.metrics_host, port)
    except OSError as exc:
        if args.metrics_port is not None:
            await ctx.close()
            where = f"{args.metrics_host}:{port}"
            raise SystemExit(f"authsvc: error: cannot serve metrics on {where}: {exc}") from exc
        log.warning("no Prometheus endpoint: %s:%d is unavailable (%s)", args.metrics_host, port, exc)
        return
    log.info("Prometheus metrics at %s", url)


def serve(args: argparse.Namespace) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("authsvc: error: --tls-cert and --tls-key go together")
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning.
    # Spinning threads stall whenever the event loop (or anything else) holds
    # a core: on 2 cores a GE2E batch ran 3x slower beside one busy process,
    # and over 10x under a loaded machine (bench/batching.py's docstring).
    # An operator's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A thread waiting for the GIL (the store's, the batcher's, gRPC's) waits until the event
    # loop lets go of it, and a busy loop re-takes it at once, so the wait is the switch
    # interval: 5 ms by default, paid on every store statement and embedding hand-back. At 0.5 ms
    # 200 calls held (p99 167 ms) where the default failed (p99 367-539 ms; bench/load.py).
    sys.setswitchinterval(args.gil_switch_ms / 1000)
    use_log_format(args.log_format)
    asyncio.run(_serve(args))
    return 0
