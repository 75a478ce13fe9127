"""Everything a running service shares across sessions: encoder, store, keys, policies.

Built once by `authsvc serve` (or a test) and handed to the servicers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from authsvc import crypto
from authsvc.attempts import Attempts, SourceThrottle
from authsvc.audit import Auditor
from authsvc.calls import LiveCalls
from authsvc.errors import ConfigError
from authsvc.factors import Factors
from authsvc.fraud.watchlist import Watchlists
from authsvc.identity.credentials import Credentials
from authsvc.identity.refusals import RefusalLog
from authsvc.identity.tenants import Tenants, adopt_policy_sectors
from authsvc.metrics import Metrics
from authsvc.policy.schema import PolicyBook, PolicyUnusable, TenantPolicy
from authsvc.scoring.calibration import Calibration, load_calibration
from authsvc.stepup.senders import load_sender
from authsvc.store import Store, migrations, open_store, store_spec
from authsvc.store.timed import TimedStore
from authsvc.templates import TemplateVault
from authsvc.trust import ROTATE_AFTER_S, AssertionAuthority
from authsvc.voice.batcher import BatchConfig, default_config
from authsvc.voice.encoder import SpeakerEncoder
from authsvc.voice.registry import load_encoder
from authsvc.voice.runner import EmbeddingRunner
from authsvc.voice.worker_process import ProcessEncoder, countermeasure_spec, encoder_spec
from authsvc.webhooks import Webhooks

log = logging.getLogger(__name__)


# One intra-op thread per encoder worker on the CPU. Measured on 2 cores, GE2E on a
# 2.4 s segment (a re-decision): 22 ms with 1 thread; 83 ms with 2 threads and
# OMP_WAIT_POLICY=PASSIVE; 9 ms with 2 spinning (ACTIVE) threads, which then hold
# the core the event loop needs. Batching, not intra-op threads, gives throughput.
CPU_THREADS = 1
# Models run in a worker process of their own by default: in the server's thread a GE2E batch
# computed 2.4x slower than alone, waiting for the GIL (authsvc.voice.worker_process).
ENCODER_WORKERS = 1


@dataclass
class ServiceConfig:
    data_dir: Path
    encoder: str = "ge2e"
    model_dir: Path | None = None
    # "auto": CUDA when torch sees a GPU, else the CPU.
    device: str = "auto"
    # CPU intra-op threads; None: CPU_THREADS on the CPU.
    threads: int | None = None
    # Worker processes per model (the speaker encoder, the countermeasure): 0 runs the model in
    # the server's own thread, as an injected encoder always is.
    encoder_workers: int = ENCODER_WORKERS
    # Batching knobs; None: the measured default for the encoder and device
    # (authsvc.voice.batcher.default_config, reasons in BatchConfig).
    max_batch: int | None = None
    max_wait_ms: float | None = None
    max_queue: int = BatchConfig.max_queue
    # float16 on CUDA, accepted only within authsvc.voice.device.HALF_MIN_COSINE of float32.
    half: bool = False
    # Embed probe signals at start so the first caller does not pay one-time costs.
    warm_up: bool = True
    # Policy files; defaults to <data_dir>/policies.
    policy_dir: Path | None = None
    # Where one-time codes go: "file:PATH", "log" or "python:module:Class" (see docs/second-factors.md);
    # defaults to a development outbox file in the data directory.
    code_sender: str | None = None
    # "postgresql://..." (shared by several nodes) or "sqlite:PATH"; None: $AUTHSVC_STORE, else
    # the SQLite file in the data directory.
    store: str | None = None
    # Apply pending schema migrations at start (else refuse to start on an older schema).
    migrate: bool = True
    # Age at which the assertion signing key is rotated (by whichever node notices first).
    key_rotation_s: float = ROTATE_AFTER_S
    # PostgreSQL connections per node.
    store_pool_size: int = 8
    # Where the master key comes from (crypto.KeySource); None: $AUTHSVC_MASTER_KEY_PROVIDER,
    # $AUTHSVC_MASTER_KEY_FILE, $AUTHSVC_MASTER_KEY, else <data_dir>/master.key.
    master_key_provider: str | None = None
    master_key_file: Path | None = None
    # During a master-key rotation: the key being rotated away from.
    previous_master_key_file: Path | None = None
    # The synthetic-speech countermeasure (AASIST, clovaai layout); None: not assessed.
    countermeasure_dir: Path | None = None
    # Webhook URLs may be plain http / private addresses (development and tests only).
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False


@dataclass
class ServiceContext:
    config: ServiceConfig
    encoder: SpeakerEncoder
    runner: EmbeddingRunner
    store: Store
    vault: TemplateVault
    policies: PolicyBook
    calibration: Calibration | None
    keystroke_calibrations: dict[str, Calibration]
    auditor: Auditor
    factors: Factors
    attempts: Attempts
    trust: AssertionAuthority
    tenants: Tenants
    credentials: Credentials
    refusals: RefusalLog
    # Failed biometric attempts per calling source (per node).
    throttle: SourceThrottle
    # Known fraudsters, screened 1:N (an in-memory index per tenant, kept in step with the store).
    watchlists: Watchlists
    # The service's Prometheus metrics (its own registry; `authsvc serve` exposes it).
    metrics: Metrics = field(default_factory=Metrics)
    # The synthetic-speech countermeasure behind its own batcher; None when not configured.
    countermeasure: EmbeddingRunner | None = None
    # The calls this node holds, by call id (claims and watchers find them there).
    calls: LiveCalls = field(default_factory=LiveCalls)
    # Where tenants' call decisions are POSTed (set by build_context).
    webhooks: Webhooks | None = None
    # The models this context started in worker processes (stopped when it closes).
    worker_models: list[ProcessEncoder] = field(default_factory=list)

    async def policy_for(self, tenant: str) -> TenantPolicy:
        """The policy of a provisioned tenant, at no less than the sector it was created with.

        A tenant that is not provisioned is NotFound; an unusable policy fails closed: logged at
        ERROR, audited (summarised like refusals) and raised as PolicyUnusable."""
        record = await self.tenants.get(tenant)
        try:
            return self.policies.get(tenant, record.sector)
        except PolicyUnusable as exc:
            log.error("tenant %s fails closed: %s", tenant, exc)
            await self.refusals.refused(tenant, "", "policy-file", "policy", exc.reason)
            raise

    async def close(self) -> None:
        self.runner.close()
        if self.countermeasure is not None:
            self.countermeasure.close()
        try:
            if self.webhooks is not None:
                await self.webhooks.close()
            self.metrics.close()
            await self.refusals.flush_due(everything=True)
            await self.auditor.drain()
            await self.store.close()
        finally:
            # Last, and whatever happened above: the trail and the store never wait on them.
            for model in self.worker_models:
                await asyncio.to_thread(model.close)


async def open_context_store(config: ServiceConfig) -> tuple[Store, crypto.MasterKey]:
    """The store (migrated) and the master key that opens it; refuses a key that does not match."""
    # Only the service account needs the store, key file and outbox.
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if config.data_dir.stat().st_mode & 0o077:
        # An operator's own directory is not changed, but its files are 0600 regardless.
        log.warning("%s is open to group or others; the service's files in it are 0600", config.data_dir)
    spec = store_spec(config.store, config.data_dir)
    if _has_password(spec):
        log.warning("the store DSN holds a password, which `ps` shows: use PGPASSWORD or ~/.pgpass")
    store = await open_store(spec, pool_size=config.store_pool_size)
    try:
        if config.migrate:
            await store.migrate()
        else:
            current, latest = await store.schema_version(), migrations.latest(store.dialect)
            if current != latest:
                raise ConfigError(
                    f"{store.description}: schema version {current}, this build needs {latest}; "
                    "run `authsvc db migrate` (or start without --no-migrate)"
                )
        async with store.transaction() as tx:
            sealed, sealed_by = await tx.has_sealed_data(), await tx.master_key_ids()
        source = crypto.KeySource.from_env(
            provider=config.master_key_provider,
            key_file=config.master_key_file,
            previous_file=config.previous_master_key_file,
        )
        master = crypto.load_master_key(
            config.data_dir, sealed=sealed, sealed_by=sealed_by, where=store.description, source=source
        )
    except BaseException:
        await store.close()
        raise
    return store, master


def _has_password(spec: str) -> bool:
    if spec.startswith("sqlite:"):
        return False
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return bool(conninfo_to_dict(spec).get("password"))
    except psycopg.Error:
        return False  # open_store says what is wrong with it


async def build_context(config: ServiceConfig, encoder: SpeakerEncoder | None = None) -> ServiceContext:
    store, master = await open_context_store(config)
    try:
        return await _build(config, store, master, encoder)
    except BaseException:
        await store.close()
        raise


async def _build(
    config: ServiceConfig, store: Store, master: crypto.MasterKey, encoder: SpeakerEncoder | None
) -> ServiceContext:
    # Imported here: torch loads only when a service really starts, not for every CLI command.
    from authsvc.voice.device import enable_half, resolve_device

    metrics = Metrics()
    # Store latency is measured here, where the store is called; the store knows no metrics.
    store = TimedStore(store, metrics.store_timer)
    if config.encoder_workers < 0:
        raise ConfigError(f"encoder_workers must be 0 or more, got {config.encoder_workers}")
    workers: list[ProcessEncoder] = []  # the context's own: stopped when it closes
    try:
        if encoder is None:
            device = resolve_device(config.device)
            threads = _threads(config, device)
            if config.encoder_workers:
                spec = encoder_spec(
                    config.encoder,
                    model_dir=config.model_dir,
                    device=device,
                    threads=threads,
                    half=config.half,
                )
                encoder = await asyncio.to_thread(ProcessEncoder, spec, config.encoder_workers)
                workers.append(encoder)
            else:
                encoder = await asyncio.to_thread(
                    load_encoder, config.encoder, model_dir=config.model_dir, device=device, threads=threads
                )
        if config.half and not isinstance(encoder, ProcessEncoder):
            enable_half(encoder)
        return await _build_rest(config, store, encoder, metrics, workers, master)
    except BaseException:
        for w in workers:
            await asyncio.to_thread(w.close)
        raise


def _threads(config: ServiceConfig, device: str) -> int | None:
    """CPU intra-op threads of a model: the configured count, else CPU_THREADS on the CPU."""
    return config.threads or (CPU_THREADS if device == "cpu" else None)


async def _build_rest(
    config: ServiceConfig,
    store: Store,
    encoder: SpeakerEncoder,
    metrics: Metrics,
    workers: list[ProcessEncoder],
    master: crypto.MasterKey,
) -> ServiceContext:
    from authsvc.voice.device import resolve_device

    countermeasure = None
    if config.countermeasure_dir is not None:
        from authsvc.voice.countermeasure import load_countermeasure

        device = resolve_device(config.device)
        if config.encoder_workers:
            spec = countermeasure_spec(
                config.countermeasure_dir,
                device=device,
                threads=_threads(config, device),
            )
            cm = await asyncio.to_thread(ProcessEncoder, spec, config.encoder_workers)
            workers.append(cm)
        else:
            cm = await asyncio.to_thread(load_countermeasure, config.countermeasure_dir, device)
        log.info("synthetic-speech countermeasure %s from %s", cm.version, config.countermeasure_dir)
    else:
        cm = None
        log.warning("no countermeasure model folder: synthetic speech is not assessed")
    measured = default_config(encoder)
    batching = BatchConfig(
        max_batch=measured.max_batch if config.max_batch is None else config.max_batch,
        max_wait_ms=measured.max_wait_ms if config.max_wait_ms is None else config.max_wait_ms,
        max_queue=config.max_queue,
    )
    try:
        calibration = load_calibration(encoder.encoder_id, encoder.version)
    except ConfigError as exc:
        # Tenants may still fix voice.threshold explicitly; target-FAR policies fail per request.
        log.warning("%s", exc)
        calibration = None
    policy_dir = config.policy_dir or config.data_dir / "policies"
    vault = TemplateVault(store, master)
    await vault.ready()
    auditor = Auditor(store, vault)
    await auditor.ready()
    sender = load_sender(config.code_sender or f"file:{config.data_dir / 'outbox' / 'codes.jsonl'}")
    if cm is not None:
        # Its own batcher beside the encoder's: a batch holds one model's inputs. On the CPU one
        # window at a time: AASIST on 4 s costs 0.91 s alone and 1.10 s per window in a batch of
        # 2 or 4 (one thread, this repository's measurement), and every window of a batch waits
        # for the whole batch.
        on_cpu = str(getattr(cm, "device", "cpu")).startswith("cpu")
        cm_batching = BatchConfig(max_batch=1, max_wait_ms=0.0) if on_cpu else BatchConfig(max_batch=8)
        countermeasure = EmbeddingRunner(cm, cm_batching, metrics, warm_up=config.warm_up)
    trust = await AssertionAuthority.open(store, master, auditor, rotate_after_s=config.key_rotation_s)
    tenants = Tenants(store, auditor)
    policies = PolicyBook(
        policy_dir,
        on_change=lambda tenant, old, new: auditor.record_soon(
            tenant, "policy.change", "", "reloaded", actor="policy-file", old=old, new=new
        ),
    )
    await adopt_policy_sectors(tenants, policies)
    webhooks = Webhooks(vault, store, metrics, config.webhook_allow_http, config.webhook_allow_private)
    return ServiceContext(
        config=config,
        encoder=encoder,
        runner=EmbeddingRunner(encoder, batching, metrics, warm_up=config.warm_up),
        store=store,
        vault=vault,
        policies=policies,
        calibration=calibration,
        keystroke_calibrations=load_keystroke_calibrations(),
        auditor=auditor,
        factors=Factors(vault, sender, auditor, metrics=metrics),
        attempts=Attempts(vault, auditor, metrics=metrics),
        trust=trust,
        tenants=tenants,
        credentials=Credentials(store, auditor),
        refusals=RefusalLog(auditor),
        throttle=SourceThrottle(metrics=metrics),
        watchlists=Watchlists(store, vault, auditor, encoder.encoder_id, encoder.version, calibration),
        metrics=metrics,
        countermeasure=countermeasure,
        calls=LiveCalls(webhooks.notify),
        webhooks=webhooks,
        worker_models=workers,
    )


def load_keystroke_calibrations() -> dict[str, Calibration]:
    """FAR -> threshold tables of the keystroke models, by model id (shipped with the package)."""
    from authsvc.keystroke import fixed_text, free_text

    return {m.MODEL_ID: load_calibration(m.MODEL_ID, m.MODEL_VERSION) for m in (fixed_text, free_text)}
