"""`authsvc serve`: runs the service until SIGINT/SIGTERM, then drains gracefully."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from authsvc.context import ServiceConfig, build_context
from authsvc.server.app import AuthServer, TlsFiles

log = logging.getLogger("authsvc")


def default_data_dir() -> Path:
    if os.environ.get("AUTHSVC_DATA_DIR"):
        return Path(os.environ["AUTHSVC_DATA_DIR"])
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "authsvc"


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
        "--encoder", choices=["ge2e", "ecapa"], default="ge2e", help="speaker encoder (default ge2e)"
    )
    p.add_argument("--model-dir", type=Path, help="model folder (ECAPA in the spkrec-ecapa-voxceleb layout)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads for the encoder")
    p.add_argument("--policy-dir", type=Path, help="tenant policy files (default <data-dir>/policies)")
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS with --tls-key")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, help="CA for client certificates; enables mutual TLS")


async def _serve(args: argparse.Namespace) -> None:
    config = ServiceConfig(
        data_dir=args.data_dir or default_data_dir(),
        encoder=args.encoder,
        model_dir=args.model_dir,
        device=args.device,
        threads=args.threads,
        policy_dir=args.policy_dir,
    )
    ctx = await asyncio.to_thread(build_context, config)
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    server = AuthServer(ctx, args.listen, tls)
    await server.start()
    log.info(
        "authsvc serving on %s (%s), data in %s, encoder %s %s",
        args.listen,
        "TLS" if tls else "plaintext",
        config.data_dir,
        ctx.encoder.encoder_id,
        ctx.encoder.version,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()


def serve(args: argparse.Namespace) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("authsvc: error: --tls-cert and --tls-key go together")
    asyncio.run(_serve(args))
    return 0
