"""Everything a running service shares across sessions: encoder, store, keys, policies.

Built once by `authsvc serve` (or a test) and handed to the servicers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from authsvc.crypto import load_master_key
from authsvc.errors import ConfigError
from authsvc.policy.schema import PolicyBook
from authsvc.scoring.calibration import Calibration, load_calibration
from authsvc.store.sqlite import SQLiteStore
from authsvc.templates import TemplateVault
from authsvc.voice.encoder import SpeakerEncoder
from authsvc.voice.registry import load_encoder
from authsvc.voice.runner import EmbeddingRunner

log = logging.getLogger(__name__)


@dataclass
class ServiceConfig:
    data_dir: Path
    encoder: str = "ge2e"
    model_dir: Path | None = None
    device: str = "cpu"
    threads: int | None = None
    # Policy files; defaults to <data_dir>/policies.
    policy_dir: Path | None = None


@dataclass
class ServiceContext:
    config: ServiceConfig
    encoder: SpeakerEncoder
    runner: EmbeddingRunner
    vault: TemplateVault
    policies: PolicyBook
    calibration: Calibration | None

    def close(self) -> None:
        self.runner.close()
        self.vault.store.close()


def build_context(config: ServiceConfig, encoder: SpeakerEncoder | None = None) -> ServiceContext:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    master = load_master_key(config.data_dir)
    store = SQLiteStore(config.data_dir / "authsvc.sqlite3")
    if encoder is None:
        encoder = load_encoder(
            config.encoder, model_dir=config.model_dir, device=config.device, threads=config.threads
        )
    try:
        calibration = load_calibration(encoder.encoder_id, encoder.version)
    except ConfigError as exc:
        # Tenants may still fix voice.threshold explicitly; target-FAR policies fail per request.
        log.warning("%s", exc)
        calibration = None
    policy_dir = config.policy_dir or config.data_dir / "policies"
    return ServiceContext(
        config=config,
        encoder=encoder,
        runner=EmbeddingRunner(encoder),
        vault=TemplateVault(store, master),
        policies=PolicyBook(policy_dir),
        calibration=calibration,
    )
