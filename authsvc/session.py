"""One verification session: gathers evidence over a stream and asks the policy.

The transport feeds it audio chunks, typing samples and step-up answers, and
forwards whatever decisions it returns. Voice decides PENDING until the
policy's net speech is reached, then scores, and re-scores each time another
`redecide_interval_s` of net speech has arrived. Typing is scored per sample
(free text once enough keys have accumulated). Every new piece of evidence
goes through the decision engine, which fuses the modalities present.

Each scored decision is a look, and a call gets at most `decision.max_looks`,
each held to target_far / max_looks (authsvc.policy.schema.DecisionRules). A
look that does not authenticate is a failed biometric attempt, counted in the
same unit of work that audits the decision and before the caller sees it, so
hanging up cannot take it back; the customer's count is read again there, so a
limit reached by another call holds from the next look (authsvc.attempts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from authsvc import keystroke
from authsvc.attempts import BiometricStatus
from authsvc.audio.codecs import Encoding, check_rate, count_encoded_peaks, decode
from authsvc.audio.fingerprint import VERSION as FINGERPRINT_VERSION
from authsvc.audio.fingerprint import Fingerprint, fingerprint, fingerprints_at_speeds
from authsvc.audio.quality import assess
from authsvc.audio.vad import FRAME_MS, SpeechTracker
from authsvc.context import ServiceContext
from authsvc.enrollment import (
    FINGERPRINT,
    KEYSTROKE_FREE,
    VOICE,
    keystroke_modality,
    profile_bytes,
    profile_samples,
)
from authsvc.errors import ConfigError, InvalidInput, Overloaded, PreconditionFailed
from authsvc.fraud import caller_voices, replay, synthetic
from authsvc.identifiers import check_id
from authsvc.policy.engine import (
    UNENROLLED,
    CustomerView,
    Decision,
    ModalityEvidence,
    Outcome,
    StepUpState,
    decide,
    look_far,
    voice_threshold,
)
from authsvc.policy.risk import REPLAY, SYNTHETIC, DetectorRisk, FraudAssessment
from authsvc.policy.schema import TenantPolicy
from authsvc.scoring.cosine import aggregate, check_same_encoder, cosine, embedding_from_bytes, usable
from authsvc.store.base import Transaction
from authsvc.tracing import DECIDE, EMBED, RECEIVE, SCORE, LookTrace
from authsvc.voice.pipeline import to_encoder_rate

log = logging.getLogger(__name__)
# The LLR a wrong password or PIN scores: far below any threshold, like a rhythm that is not the
# customer's, so the decision has the same shape either way.
KNOWLEDGE_FAILURE_LLR = -12.0

# PENDING updates are sent each time net speech grows by this much: often
# enough for an IVR progress cue, rare enough not to flood the stream.
PENDING_STEP_S = 0.5
# Speech left over at the end of a call shorter than this is not embedded on its own.
MIN_SEGMENT_S = 0.75
# Free text keeps at most this many recent keys for scoring.
MAX_FREE_TEXT_KEYS = 400
# Typing samples kept until a call's customer is claimed.
MAX_TYPED_BEFORE_CLAIM = 8
# The latest audio a call keeps (int16, in memory only) to fingerprint against recordings.
REPLAY_WINDOW_S = 60.0
# The countermeasure judges the latest this-many seconds of speech for each look (one AASIST
# window: its cost on a CPU is about a second per window).
CM_WINDOW_S = 4.0
# That second is more than a decision may wait, so each look's window is taken this much net
# speech (at least as much time) before the look and judged beside the call: the look finds it
# done, or nearly. The speech of those last moments is judged for the next look.
CM_LEAD_S = 1.0
# Fingerprints of the customer's latest authenticated calls kept as recorded material.
CALL_FINGERPRINTS = 5
CALL_SLOT = "call-"
CM_DEADLINE_S = 5.0


@dataclass(frozen=True)
class EnrollmentMaterial:
    speech: np.ndarray  # int16: the call's latest voiced audio
    audio: np.ndarray  # int16: the call's latest audio as heard (for its fingerprint)
    sample_rate: int
    net_speech_s: float
    risks: tuple[DetectorRisk, ...]


@dataclass(frozen=True)
class SessionStart:
    tenant: str
    customer_id: str
    channel: str
    encoding: Encoding | None
    sample_rate: int
    session_id: str = ""
    assertion: str = ""
    # Who is calling from where ("<principal>@<peer host>"): failures are throttled per source.
    source: str = ""


class VerificationSession:
    def __init__(self, ctx: ServiceContext, start: SessionStart, policy: TenantPolicy) -> None:
        check_id(start.tenant, "start.tenant")
        if start.customer_id:  # else claimed later (claim): until then speech is only tracked
            check_id(start.customer_id, "start.customer_id")
        self.has_audio = start.encoding is not None or start.sample_rate != 0
        if self.has_audio:
            if start.encoding is None:
                raise InvalidInput("start.audio_format.encoding", "must be PCM16_LE, MULAW or ALAW")
            check_rate(start.sample_rate, "start.audio_format.sample_rate_hz")
        self.ctx = ctx
        self.start = start
        self.policy = policy
        self.tracker = SpeechTracker(start.sample_rate or 8000, max_speech_s=self.policy.voice.max_window_s)
        self._clip_level = int(start.encoding.full_scale * 0.98) if start.encoding else 0
        self._voice_template: np.ndarray | None = None
        self._segments: list[tuple[np.ndarray, float]] = []  # (embedding, seconds of voiced audio)
        self._voiced_mark = 0
        self._typing: dict[str, tuple[bytes, int]] = {}  # modality -> (profile bytes, samples)
        self._free_events: list[keystroke.KeyEvent] = []
        self._evidence: dict[str, ModalityEvidence] = {}
        self._view = CustomerView(frozenset())
        self._step = StepUpState()
        self._closed_outcome: Decision | None = None  # opted out / assertion: nothing more to decide
        self._samples = 0
        self._typed = 0
        self._sequence = 0
        self._last_pending_s = -PENDING_STEP_S
        self._scored_at_s: float | None = None
        self._last: Decision | None = None
        self._audited: Decision | None = None  # the last decision the audit trail holds
        self._assertion = None
        self._looks = 0
        # Set by a look until its decision is emitted: "biometric", or the profile whose
        # password or PIN was wrong ("knowledge:<modality>").
        self._look: str | None = None
        self._factors: tuple[str, ...] = ()
        self._record = None
        self._authenticators: tuple[str, ...] = ()
        self._step_passed = False  # a second factor was just verified (reset the count once)
        self._spent: set[str] = set()  # typing evidence whose failure has been counted
        self._recent: deque[np.ndarray] = deque()  # the call's latest audio, for replay detection
        self._recent_size = 0
        self._recent_limit = int(REPLAY_WINDOW_S * self.tracker.sample_rate)  # samples in the window
        self._references: list[Fingerprint] = []  # the customer's recorded material
        self._fraud = FraudAssessment()
        self._watchlist = None  # the tenant's fraudster index, as the store held it at begin
        self._countermeasure: asyncio.Task | None = None  # the next look's window, being judged
        self._finishing = False  # the last decision: it waits for every detector
        self._embedded_at_s: float | None = None  # before a claim: net speech last embedded
        self._typed_before_claim: list[tuple[str, keystroke.Sample]] = []
        self._trace: LookTrace | None = None  # the stages of the voice look under way
        # Told of every decision once it is stored (the call's feed: its stream and watchers).
        self.emitted: Callable[[Decision], None] | None = None

    @property
    def claimed(self) -> bool:
        return bool(self.start.customer_id)

    # -- helpers ---------------------------------------------------------------------------

    async def _emit(self, decision: Decision) -> Decision:
        """Numbers the decision, counts it as a look, issues its assertion and audits it, in one
        unit of work: a decision reaches the caller only once all of that is stored."""
        look, self._look = self._look, None
        passed, self._step_passed = self._step_passed, False
        # The trail holds what changed (a counted look, a new outcome, an assertion) and the final
        # answer; a rolling re-decision that repeats the last outcome is only a metric.
        audited = (
            look is not None
            or decision.final
            or decision.outcome is not (self._audited.outcome if self._audited else Outcome.PENDING)
        )
        a = self._assertion
        # A new assertion only when what it states changes (more methods, higher assurance).
        issue = (
            decision.outcome is Outcome.AUTHENTICATED
            and decision.assertion is None
            and (a is None or (a.methods, a.assurance_level) != (decision.methods, decision.assurance_level))
        )
        if issue:
            await self.ctx.trust.signing_ready(self.start.tenant)
        if issue or audited:
            async with self.ctx.store.transaction() as tx:
                if look is not None:
                    decision = await self._count_look(decision, look, tx)
                elif decision.outcome is Outcome.AUTHENTICATED and passed:
                    # Once, for the answer that authenticated (not for re-sent decisions).
                    await self._succeeded(tx, biometric=bool(set(decision.methods) & {"voice", "typing"}))
                issue = issue and decision.outcome is Outcome.AUTHENTICATED
                decision = replace(decision, sequence=self._sequence + 1)
                if issue:
                    # A successful authentication: the customer's retention counts from here.
                    now_ms = int(time.time() * 1000)
                    await tx.touch_customer(self.start.tenant, self.start.customer_id, now_ms)
                    a = await self.ctx.trust.issue(
                        self.policy,
                        self.start.customer_id,
                        decision.methods,
                        decision.assurance_level,
                        self.start.channel,
                        tx=tx,
                        # One session, one authentication event: its later assertions share it.
                        auth_id=a.auth_id if a is not None else None,
                    )
                await self.ctx.auditor.record(
                    self.start.tenant,
                    "decision",
                    self.start.customer_id,
                    decision.outcome.value,
                    policy=decision.policy_id,
                    channel=self.start.channel,
                    session=self.start.session_id,
                    sequence=decision.sequence,
                    final=decision.final,
                    **({"look": self._looks} if look is not None else {}),
                    # Levels and versions only: scores would make the trail a tuning oracle.
                    **(
                        {"fraud": {r.detector: f"{r.level}/{r.version}" for r in decision.fraud.risks}}
                        if decision.fraud.risks
                        else {}
                    ),
                    tx=tx,
                )
            self._assertion = a
            self._audited = decision
        else:
            decision = replace(decision, sequence=self._sequence + 1)
        if decision.outcome is Outcome.AUTHENTICATED and decision.assertion is None:
            decision = replace(decision, assertion=self._assertion)
        self._sequence = decision.sequence
        self._last = decision
        self.ctx.metrics.decided(decision.outcome.value, self.policy.sector, decision.final)
        if self.emitted is not None:
            self.emitted(decision)
        return decision

    async def _count_look(self, decision: Decision, look: str, tx: Transaction) -> Decision:
        """Checks the customer's count before the look's decision is given, and counts it."""
        tenant, cid = self.start.tenant, self.start.customer_id
        if await tx.lock_customer(tenant, cid) is None:
            return decision
        status = await self.ctx.attempts.status(self.policy, tenant, cid, tx)
        if status.blocked:
            # Another call reached the limit since this look began: its score is not given.
            self._blocked(status)
            return replace(self._decide(), final=decision.final)
        if not self._look_allowed_by_source():
            return replace(self._decide(), final=decision.final)  # over budget meanwhile
        if decision.outcome is Outcome.AUTHENTICATED:
            await self.ctx.attempts.succeeded(tenant, cid, tx)
            return decision
        if decision.outcome is not Outcome.REJECTED and not decision.fraud.high():
            # A match waiting for its second factor, or typing before the voice of a voice call
            # (still a look: its score must not be free to probe): neither failure nor success.
            # A look with a high fraud risk counts as failed whatever the policy does with it, so
            # a fraudster cannot tune a replay or a clone against the detector for free.
            return decision
        status = await self.ctx.attempts.failed(
            self.policy, tenant, cid, self._can_step_up(), tx, self.start.session_id
        )
        if look.startswith("knowledge:"):
            await self.ctx.auditor.record(
                tenant,
                "knowledge.attempt",
                cid,
                "locked_out" if status.blocked else "failed",
                profile=look.removeprefix("knowledge:"),
                session=self.start.session_id,
                attempts_remaining=status.attempts_left,
                tx=tx,
            )
        if self.ctx.throttle.failed(self.policy, self.start.source):
            await self.ctx.auditor.record(
                tenant,
                "throttle.source",
                cid,
                "limited",
                source=self.start.source,
                per_hour=self.policy.lockout.source_failures_per_hour,
                tx=tx,
            )
        if status.blocked:
            self._blocked(status)
        # A counted typing failure is not held against the rest of the call (the voice that
        # follows would fail its floor at every look): it counted once, and is spent at the next.
        self._spent = {k for k, e in self._evidence.items() if e.client_timed and not e.llr >= e.floor_llr}
        return replace(decision, attempts_remaining=status.attempts_left)

    async def _succeeded(self, tx: Transaction, biometric: bool) -> None:
        """A second factor authenticated: with a biometric match the count resets; alone, the
        biometric is only re-enabled (attempts.reenabled)."""
        tenant, cid = self.start.tenant, self.start.customer_id
        if await tx.lock_customer(tenant, cid) is None:
            return
        if biometric:
            await self.ctx.attempts.succeeded(tenant, cid, tx)
        else:
            await self.ctx.attempts.reenabled(self.policy, tenant, cid, tx)

    def _can_step_up(self) -> bool:
        """Whether a disabled biometric has a real authenticator to stand in (else: the delay)."""
        return any(f in self._authenticators for f in self.policy.step_up.factors)

    def _blocked(self, status: BiometricStatus) -> None:
        """The biometric may not decide any more in this session: no more looks."""
        self._step = replace(
            self._step,
            biometric_off=status.off and not status.operator_only,
            retry_after_s=max(self._step.retry_after_s, status.retry_after_s),
        )
        self._evidence = {}

    def _begin_look(self) -> None:
        self._looks += 1
        self._look = "biometric"
        for key in self._spent:
            self._evidence.pop(key, None)
        self._spent = set()

    def _max_looks(self) -> int:
        # A fixed raw threshold is one look's threshold: it cannot be shared among several.
        return 1 if self.policy.voice.threshold is not None else self.policy.decision.max_looks

    def _may_look(self) -> bool:
        return (
            self._looks < self._max_looks()
            and not self._step.biometric_off
            and self._step.retry_after_s == 0
            and self._look_allowed_by_source()
        )

    def _look_allowed_by_source(self) -> bool:
        """A source over its failure budget gets no more looks, in sessions already open too."""
        wait = self.ctx.throttle.over(self.policy, self.start.source)
        if wait and self._closed_outcome is None and self._assertion is not None:
            self._closed_outcome = self._last  # authenticated already: no more looks, outcome kept
        elif wait and self._closed_outcome is None:
            self._step = replace(self._step, retry_after_s=max(self._step.retry_after_s, wait))
            self._evidence = {}
            self._closed_outcome = replace(
                self._decide(), reason="too many failed attempts from this caller; no more looks for now"
            )
        return not wait

    def _decide(self) -> Decision:
        if self._closed_outcome is not None:
            return self._closed_outcome
        if not self.claimed:
            return Decision(
                Outcome.PENDING,
                self.policy.policy_id,
                self.tracker.net_speech_s,
                self.policy.voice.min_net_speech_s,
                reason="no customer claimed yet: the call's speech is kept and scored once one is",
            )
        quality = tuple(assess(self.tracker, self.policy.voice.min_net_speech_s)) if self._samples else ()
        return decide(
            self.policy,
            self._view,
            tuple(self._evidence.values()),
            self._step,
            self.tracker.net_speech_s,
            quality,
            voice_required=self.has_audio,
            fraud=self._fraud,
        )

    async def enrollment_material(self) -> EnrollmentMaterial:
        """What passive enrollment takes from the call: its latest speech (max_window_s of it,
        int16), the audio to fingerprint, and fresh replay and synthetic risks with those of
        earlier looks (a high one stands)."""
        speech, _ = self.tracker.voiced_since(0)
        recent = np.concatenate(self._recent) if self._recent else np.zeros(0, np.int16)
        fresh = await self._audio_risks(wait=True) if self._recent else []
        earlier = [r for r in self._fraud.risks if r.high]
        return EnrollmentMaterial(
            speech, recent, self.tracker.sample_rate, self.tracker.net_speech_s, (*earlier, *fresh)
        )

    @property
    def issued_assertion(self):
        """The assertion this call issued (it authenticated the customer here), if any."""
        return None if self.start.assertion else self._assertion

    def current(self) -> Decision:
        """The call's decision as it stands now, without emitting (or counting) one."""
        return replace(self._decide(), sequence=self._sequence)

    # -- stream events ---------------------------------------------------------------------

    async def begin(self) -> list[Decision]:
        """Loads what the claimed customer has; some outcomes are known before any evidence."""
        cid = self.start.customer_id
        if self.start.assertion:
            if not cid:
                raise InvalidInput("start.customer_id", "an assertion is for a named customer: set it")
            claims = await self.ctx.trust.validate(self.policy, self.start.assertion, self.start.channel)
            if claims.customer_id != cid:
                raise InvalidInput("start.assertion", "the assertion names another customer")
            self._assertion = claims
            self._closed_outcome = Decision(
                Outcome.AUTHENTICATED,
                self.policy.policy_id,
                methods=claims.methods,
                assurance_level=claims.assurance_level,
                assertion=claims,
                reason=f"assertion {claims.id} from channel {claims.channel} accepted",
            )
            return [await self._emit(self._closed_outcome)]
        # A source over its failure budget gets no new session (RateLimited).
        self.ctx.throttle.check(self.policy, self.start.source)
        return await self._load_customer() if cid else []

    async def claim(self, customer_id: str) -> list[Decision]:
        """Names the call's customer (the IVR identified the caller midway): loads them and,
        where enough speech was heard, scores it at once. A call claims one customer only, so a
        call cannot be used to search customers one claim at a time."""
        check_id(customer_id, "customer_id")
        if self.claimed:
            if customer_id == self.start.customer_id:
                return []
            # An attempt to move a call to another customer (a search by claims): on the record.
            await self.ctx.auditor.record(
                self.start.tenant,
                "session.claim",
                customer_id,
                "refused_second_claim",
                session=self.start.session_id,
                claimed=self.start.customer_id,
            )
            raise PreconditionFailed("the call has already claimed another customer; a call claims one")
        if self.start.assertion:
            raise PreconditionFailed("the call was decided by an assertion")
        self.ctx.throttle.check(self.policy, self.start.source)
        self.start = replace(self.start, customer_id=customer_id)
        await self.ctx.auditor.record(
            self.start.tenant,
            "session.claim",
            customer_id,
            "claimed",
            session=self.start.session_id,
            net_speech_s=round(self.tracker.net_speech_s, 1),
        )
        decisions = await self._load_customer()
        speech = self.tracker.net_speech_s
        scorable = self._voice_template is not None and self._closed_outcome is None and self._may_look()
        if scorable and speech >= self.policy.voice.min_net_speech_s:
            decisions += await self._look_at_voice(speech)
        typed, self._typed_before_claim = self._typed_before_claim, []
        for profile, sample in typed:
            decisions += await self._score_keystrokes(profile, sample)
        return decisions

    async def _load_customer(self) -> list[Decision]:
        tenant, cid = self.start.tenant, self.start.customer_id
        # One read of everything the session needs: a consistent view of the customer (a snapshot,
        # which does not wait for the units that write).
        async with self.ctx.store.transaction(read_only=True) as tx:
            record = await tx.get_customer(tenant, cid)
            templates = await self.ctx.vault.load(tenant, cid, None, tx)
            self._factors = await self.ctx.factors.active(tenant, cid, tx)
            self._authenticators = await self.ctx.factors.authenticators(tenant, cid, self._factors, tx)
            await self._refresh_lockout(tx)
            biometric = await self.ctx.attempts.status(self.policy, tenant, cid, tx)
            self._watchlist = await self.ctx.watchlists.index(tenant, tx)
        registered = record is not None and record.registered
        if registered and record.opted_out:
            self._closed_outcome = Decision(
                Outcome.OPTED_OUT, self.policy.policy_id, reason="the customer opted out of biometrics"
            )
            return [await self._emit(self._closed_outcome)]
        if biometric.blocked:
            self._blocked(biometric)
        if self._step.retry_after_s > 0:
            # Locked out: no template is loaded and nothing is scored, so a locked session
            # cannot be used to probe the matcher.
            self._closed_outcome = self._decide()
            return [await self._emit(self._closed_outcome)]
        if self._step.biometric_off:
            # Only another factor can decide now: no template is loaded, nothing is scored.
            self._record = record
            self._view = CustomerView(frozenset(), False, self._factors)
            return [await self._emit(self._decide())]
        self._record = record
        self._use_templates(templates)
        self._check_thresholds()
        first = self._decide()
        if first.outcome in UNENROLLED:
            self._closed_outcome = first  # nothing of this customer is ever scored in this call
        return [] if first.outcome is Outcome.PENDING else [await self._emit(first)]

    def _check_thresholds(self) -> None:
        """Leaves out, before anything is scored, a typing profile whose calibration cannot resolve
        the per-look target this session would judge it by (typing alone): it is not used here."""
        if self.has_audio:
            return
        far = look_far(self.policy, self.policy.keystroke.target_far)
        for modality, (stored, _) in list(self._typing.items()):
            _, model_id, _ = keystroke.template_identity(stored)
            try:
                self.ctx.keystroke_calibrations[model_id].threshold_for(far)
            except ConfigError as exc:
                log.warning("session %s: %s left out: %s", self.start.session_id, modality, exc)
                del self._typing[modality]
                self._view = replace(self._view, enrolled=self._view.enrolled - {modality})

    def _use_templates(self, templates: list) -> None:
        record = self._record
        chosen = record.methods if record is not None and record.registered else ("voice", "typing")
        enrolled = set()
        if "voice" in chosen:
            self._load_voice([t for t in templates if t.modality == VOICE])
            if self._voice_template is not None:
                enrolled.add(VOICE)
        if "typing" in chosen:
            for t in templates:
                if t.modality.startswith("keystroke"):
                    self._typing[t.modality] = (profile_bytes(t.payload), profile_samples(t.payload))
                    enrolled.add(t.modality)
        expired = record is not None and record.expired_ms > 0
        self._view = CustomerView(frozenset(enrolled), False, self._factors, expired)
        if VOICE in enrolled:
            for t in templates:
                # Only fingerprints this version can compare (another version's hashes never match).
                if t.modality == FINGERPRINT and t.encoder_version == FINGERPRINT_VERSION:
                    try:
                        self._references.append(Fingerprint.from_bytes(t.payload))
                    except ValueError:
                        log.warning("session %s: an unreadable fingerprint is skipped", self.start.session_id)

    def _load_voice(self, templates: list) -> None:
        if not templates or not self.has_audio:
            return
        enc = self.ctx.encoder
        usable = [t for t in templates if (t.encoder_id, t.encoder_version) == (enc.encoder_id, enc.version)]
        if not usable:
            # Never score across encoders: the operator has to re-enroll.
            check_same_encoder(
                (enc.encoder_id, enc.version), (templates[0].encoder_id, templates[0].encoder_version)
            )
        self._voice_template = aggregate([embedding_from_bytes(t.payload) for t in usable])
        self._voice_samples = len(usable)
        self._voice_threshold, self._voice_far = voice_threshold(self.policy, self.ctx.calibration)
        cal = self.ctx.calibration
        # A fixed raw threshold has no LLR scale to fuse on: voice must then pass on its own.
        self._voice_floor = cal.llr(cal.threshold_for(self.policy.voice.floor_far)) if cal else 0.0

    async def _refresh_lockout(self, tx: Transaction) -> None:
        retry, left = await self.ctx.factors.lock_status(
            self.policy, self.start.tenant, self.start.customer_id, tx
        )
        self._step = replace(self._step, retry_after_s=retry, attempts_remaining=left)

    async def feed_audio(self, data: bytes) -> list[Decision]:
        received = time.perf_counter_ns()
        if not self.has_audio:
            raise InvalidInput(
                "audio", "the session was opened without start.audio_format; audio cannot be sent"
            )
        encoding = self.start.encoding
        samples = decode(data, encoding)  # type: ignore[arg-type]
        self._samples += samples.size
        self._keep_recent(samples)
        # Clipping counted on the G.711 bytes: cheaper than on the decoded samples, same count.
        peaks = count_encoded_peaks(data, encoding, self._clip_level)  # type: ignore[arg-type]
        self.tracker.feed(samples, self._clip_level, peaks)
        if not self.claimed:
            return await self._track_unclaimed()
        if self._voice_template is None or self._closed_outcome is not None or not self._may_look():
            return []
        speech = self.tracker.net_speech_s
        rules = self.policy.voice
        next_look = (
            rules.min_net_speech_s
            if self._scored_at_s is None
            else self._scored_at_s + rules.redecide_interval_s
        )
        if speech >= next_look - CM_LEAD_S:
            self._start_countermeasure()
        if speech < rules.min_net_speech_s:
            if not self._evidence and speech - self._last_pending_s >= PENDING_STEP_S:
                self._last_pending_s = speech
                return [await self._emit(self._decide())]
            return []
        if self._scored_at_s is None or speech - self._scored_at_s >= rules.redecide_interval_s:
            return await self._look_at_voice(speech, received)
        return []

    async def _look_at_voice(self, speech: float, received: int | None = None) -> list[Decision]:
        """`received`: when the chunk that completed the look's speech came in (perf_counter_ns);
        None for a look at a claim, which has no such chunk."""
        self._trace = LookTrace(received)
        if received is not None:
            self._trace.mark(RECEIVE)
        try:
            await self._score_voice(deadline=time.monotonic() + self.policy.voice.redecide_interval_s)
        except (Overloaded, TimeoutError) as exc:
            self._trace = None
            # The embedding core is saturated: keep the decision already made and try
            # again a full interval later (retrying sooner would add load exactly when
            # there is too much), rather than ending the call's stream.
            log.warning("session %s: voice scoring deferred (%s)", self.start.session_id, exc)
            self._scored_at_s = speech
            return []
        decisions = await self._decide_look()
        self._end_trace(decisions[0])
        return decisions

    def _end_trace(self, decision: Decision) -> None:
        """The voice look's stages to the look histogram, and to a trace where one records."""
        trace, self._trace = self._trace, None
        if trace is None:
            return
        trace.mark(DECIDE)
        trace.end(
            self.ctx.metrics.look_stage,
            lambda: {
                "authsvc.session_id": self.start.session_id,
                "authsvc.tenant": self.start.tenant,
                "authsvc.sector": self.policy.sector,
                "authsvc.look": self._looks,
                "authsvc.outcome": decision.outcome.value,
                "authsvc.final": decision.final,
                "authsvc.net_speech_s": round(self.tracker.net_speech_s, 2),
            },
        )

    async def _track_unclaimed(self) -> list[Decision]:
        """Before a claim: PENDING progress, and the speech embedded as it grows (at the pace of
        re-decisions), so that a claim is scored at once on what was heard."""
        speech = self.tracker.net_speech_s
        rules = self.policy.voice
        if speech < rules.min_net_speech_s:
            if speech - self._last_pending_s >= PENDING_STEP_S:
                self._last_pending_s = speech
                return [await self._emit(self._decide())]
            return []
        if self._embedded_at_s is None or speech - self._embedded_at_s >= rules.redecide_interval_s:
            self._embedded_at_s = speech
            try:
                await self._embed_new_speech(time.monotonic() + rules.redecide_interval_s)
            except (Overloaded, TimeoutError) as exc:  # not lost: embedded with the next piece
                log.warning("session %s: embedding deferred (%s)", self.start.session_id, exc)
        return []

    def _keep_recent(self, samples: np.ndarray) -> None:
        # From the first chunk, claimed or not: a claim is scored on what was heard before it,
        # and a call's voice may be enrolled (both must see a replay played before either).
        closed = self._closed_outcome is not None and self._closed_outcome.outcome not in UNENROLLED
        if closed or samples.size == 0:
            return  # nothing of this call will be scored or enrolled
        limit = self._recent_limit
        if samples.size > limit:  # one chunk longer than the window keeps only its end
            samples = samples[-limit:]
        self._recent.append(samples)  # decode() gives a fresh int16 array: nothing to convert or copy
        self._recent_size += samples.size
        while self._recent_size - self._recent[0].size >= limit:
            self._recent_size -= self._recent.popleft().size

    async def _audio_risks(self, wait: bool = False) -> list[DetectorRisk]:
        """Replay and synthetic speech on the call's latest audio, together and off the event loop
        (beside the embedding of the look: neither needs the voiceprint)."""
        audio = np.concatenate(self._recent) if self._recent else np.zeros(0, np.int16)
        rate, refs = self.tracker.sample_rate, self._references

        def replay_risk():
            if not refs:  # nothing to compare with: no need to fingerprint the call at nine speeds
                none = np.zeros(0, np.uint32)
                return replay.assess(Fingerprint(none, none, audio.size / rate), refs)
            return replay.assess(fingerprints_at_speeds(audio, rate), refs)

        # A detector the policy ignores is not run: its risk would never be reported or acted on.
        rules = self.policy.fraud
        jobs = {REPLAY: lambda: asyncio.to_thread(replay_risk), SYNTHETIC: lambda: self._synthetic_risk(wait)}
        return list(
            await asyncio.gather(*(job() for d, job in jobs.items() if getattr(rules, d) != "ignore"))
        )

    async def _assess_fraud(self, audio_risks: list[DetectorRisk]) -> None:
        """The look's fraud assessment: the audio detectors' risks and the watchlist screen."""
        risks = [*audio_risks]
        if self.policy.fraud.fraudster != "ignore":
            risks.append(await asyncio.to_thread(self._fraudster_risk))
        for r in risks:
            self.ctx.metrics.fraud_risk(r.detector, r.level)
        # A high risk stands for the rest of the call: what was heard once cannot be talked over
        # (a replay followed by a minute of noise and a few words of the fraudster's own voice).
        before = {r.detector: r for r in self._fraud.risks if r.high}
        self._fraud = FraudAssessment(tuple(before.get(r.detector, r) for r in risks))

    def _pooled(self) -> np.ndarray:
        """The call's voice so far: its segments' unit embeddings, weighted by their speech."""
        return sum(e / max(np.linalg.norm(e), 1e-12) * d for e, d in self._segments)

    def _fraudster_risk(self):
        return self.ctx.watchlists.screen(self.policy, self._watchlist, self._pooled())

    def _start_countermeasure(self) -> None:
        """Starts judging the next look's window now, unless it is being judged already."""
        runner = self.ctx.countermeasure
        if self._countermeasure is not None or runner is None or self.policy.fraud.synthetic == "ignore":
            return
        if self.tracker.net_speech_s < runner.encoder.min_samples / runner.encoder.sample_rate:
            return  # too little yet: the look itself judges what it has
        task = asyncio.get_running_loop().create_task(self._judge_latest_speech())
        # A call that ends before its look never reads the result: nor its exception.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._countermeasure = task

    async def _synthetic_risk(self, wait: bool = False) -> DetectorRisk:
        """The look's synthetic-speech risk: the window started ahead of it, else the latest one.

        Where the policy only flags the risk (it changes no outcome), a look does not wait for a
        window still being judged: it says so, and the result joins the next decision (a high
        one stands). Where it steps up or rejects, and at the call's end, the look waits."""
        if self.policy.fraud.synthetic == "flag" and not (self._finishing or wait):
            if self._countermeasure is None:
                self._start_countermeasure()
            task = self._countermeasure
            if task is not None and not task.done():
                return synthetic.judging(self.ctx.countermeasure.encoder.version)  # type: ignore[union-attr]
        task, self._countermeasure = self._countermeasure, None
        return await (task if task is not None else self._judge_latest_speech())

    async def _judge_latest_speech(self) -> DetectorRisk:
        """The countermeasure on the latest window of the caller's speech (through its batcher)."""
        runner = self.ctx.countermeasure
        if runner is None:
            return synthetic.unavailable()
        cm = runner.encoder
        frames = int(CM_WINDOW_S * 1000 / FRAME_MS)
        samples, _ = self.tracker.voiced_since(max(0, self.tracker.voiced_frames - frames))
        seconds = samples.size / self.tracker.sample_rate
        if samples.size < cm.min_samples * self.tracker.sample_rate // cm.sample_rate:
            return synthetic.not_enough(seconds, cm.min_samples / cm.sample_rate, cm.version)
        wav = to_encoder_rate(samples, self.tracker.sample_rate, cm.sample_rate)
        try:
            margin = float((await runner.embed(wav, deadline=time.monotonic() + CM_DEADLINE_S))[0])
        except (Overloaded, TimeoutError) as exc:
            # Not a low risk: the decision says it was not assessed this time.
            return synthetic.unavailable(
                f"the countermeasure is saturated ({exc or type(exc).__name__})", cm.version
            )
        return synthetic.assess(margin, cm.version)

    async def _decide_look(self, final: bool = False) -> list[Decision]:
        """Emits a look's decision; when it reached the failure limit, also what follows (the
        other factor the customer is now asked for, or the wait)."""
        decision = await self._emit(replace(self._decide(), final=final))
        if final or not (self._step.biometric_off or self._step.retry_after_s):
            return [decision]
        if self._step.retry_after_s:
            self._closed_outcome = self._decide()
        return [decision, await self._emit(self._decide())]

    async def _embed_new_speech(self, deadline: float | None) -> None:
        """Embeds the speech since the last segment; segments older than `max_window_s` go."""
        samples, mark = self.tracker.voiced_since(self._voiced_mark)
        if samples.size >= MIN_SEGMENT_S * self.tracker.sample_rate or not self._segments:
            wav = to_encoder_rate(samples, self.tracker.sample_rate, self.ctx.encoder.sample_rate)
            embedding = await self.ctx.runner.embed(wav, deadline=deadline)
            self._segments.append((embedding, samples.size / self.tracker.sample_rate))
            self._voiced_mark = mark  # only once embedded: a refused segment is retried, not lost
            window = self.policy.voice.max_window_s
            while sum(d for _, d in self._segments) - self._segments[0][1] >= window:
                self._segments.pop(0)

    async def _score_voice(self, deadline: float | None = None) -> None:
        """Embeds only the speech that arrived since the last decision and pools it with the rest.

        GE2E's utterance embedding is itself a mean over 1.6 s windows, so a
        duration-weighted mean of segment embeddings stays close to embedding the
        whole call (mean cosine 0.98 / 0.99 to it for 2 s / 3 s segments on
        LibriSpeech over 8 kHz mu-law), while each second of speech is embedded
        once instead of at every re-decision: the cost of a call grows with its
        length, not with its length squared. Segments older than `max_window_s` of speech drop
        out, so a handset passed to someone else is noticed.
        """
        assert self._voice_template is not None
        speech = self.tracker.net_speech_s
        enc = self.ctx.encoder
        audio_risks = asyncio.ensure_future(self._audio_risks())
        try:
            await self._embed_new_speech(deadline)
        except BaseException:
            audio_risks.cancel()
            raise
        if self._trace is not None:
            self._trace.mark(EMBED)
        self._scored_at_s = speech
        await self._assess_fraud(await audio_risks)
        self._begin_look()
        # A degenerate segment makes the score NaN, which the engine rejects (and counts).
        pooled = self._pooled()
        score = cosine(pooled, self._voice_template) if usable(pooled) else float("nan")
        if not all(usable(e) for e, _ in self._segments):
            score = float("nan")
        cal = self.ctx.calibration
        # Without a calibration (a fixed raw threshold), the LLR is only the margin over it.
        if cal:
            llr, thr_llr = cal.llr(score), cal.llr(self._voice_threshold)
        else:
            llr, thr_llr = score - self._voice_threshold, 0.0
        self._evidence[VOICE] = ModalityEvidence(
            VOICE,
            score,
            llr,
            self._voice_threshold,
            thr_llr,
            self._voice_far,
            enc.encoder_id,
            enc.version,
            self._voice_samples,
            floor_llr=self._voice_floor,
        )
        if self._trace is not None:
            self._trace.mark(SCORE)

    async def feed_keystrokes(self, profile: str, sample: keystroke.Sample) -> list[Decision]:
        self._typed += 1
        if not self.claimed:
            # Typed before the claim (an account number keyed into the IVR): judged once the
            # customer is known. The first few only: typing is a few samples per call.
            if len(self._typed_before_claim) < MAX_TYPED_BEFORE_CLAIM:
                self._typed_before_claim.append((profile, sample))
            return []
        return await self._score_keystrokes(profile, sample)

    async def _score_keystrokes(self, profile: str, sample: keystroke.Sample) -> list[Decision]:
        if self._closed_outcome is not None or not self._may_look():
            return []
        modality = keystroke_modality(sample.kind, profile)
        if modality == KEYSTROKE_FREE:
            self._free_events = [*self._free_events, *sample.events][-MAX_FREE_TEXT_KEYS:]
            if len(self._free_events) < self.policy.keystroke.min_free_text_keys:
                return []
            sample = keystroke.make_sample(self._free_events, "free")
        stored = self._typing.get(modality)
        if stored is not None:
            self._begin_look()
            try:
                llr = keystroke.verify(stored[0], sample).llr
            except keystroke.KeystrokeInputError:
                # A wrong password or PIN, or a sample whose timing cannot be compared: a failed
                # attempt, counted and audited with the decision, and answered as a rhythm that
                # does not match (so neither tells whether the text was right).
                llr = KNOWLEDGE_FAILURE_LLR
                self._look = f"knowledge:{modality}"
            _, model_id, version = keystroke.template_identity(stored[0])
            self._evidence[modality] = self._typing_evidence(
                modality, llr, model_id, version, stored[1], profile, sample.kind
            )
        if stored is None:
            decision = self._decide()
            return [
                await self._emit(
                    replace(decision, reason=f"{decision.reason}; no typing profile {modality!r} to compare")
                )
            ]
        return await self._decide_look()

    def _typing_evidence(
        self, modality: str, llr: float, model_id: str, version: str, samples: int, profile: str, kind: str
    ) -> ModalityEvidence:
        """Beside voice, typing is held to its floor; without voice, to its own per-look target."""
        rules = self.policy.keystroke
        cal = self.ctx.keystroke_calibrations[model_id]
        floor = cal.threshold_for(rules.floor_far)
        far = rules.floor_far if self.has_audio else look_far(self.policy, rules.target_far)
        thr = floor if self.has_audio else cal.threshold_for(far)
        return ModalityEvidence(
            modality,
            llr,
            llr,
            thr,
            thr,
            far,
            model_id,
            version,
            samples,
            profile if modality != KEYSTROKE_FREE else "free",
            floor_llr=floor,
            # Keypad timing is scored with the keyboard calibration: none fits the channel. On a
            # call any fixed text comes from a keypad, whatever the client labels it.
            calibrated=kind != "dtmf" and not self.has_audio,
        )

    async def step_up(self, factor: str, code: str) -> list[Decision]:
        self._require_step_up("a second factor is asked for after a biometric match")
        attempt = await self.ctx.factors.check_code(
            self.policy, self.start.tenant, self.start.customer_id, factor, code
        )
        self._step = StepUpState(
            passed_factor=factor if attempt.ok else None,
            passed_kind=attempt.kind if attempt.ok else "",
            attempts_remaining=attempt.attempts_remaining,
            retry_after_s=attempt.retry_after_s,
            note="" if attempt.ok else attempt.note,
            biometric_off=self._step.biometric_off,
        )
        alone = self.policy.lockout.other_factor_alone and not self.policy.step_up.required
        if not attempt.ok:
            if self.ctx.throttle.failed(self.policy, self.start.source):
                await self.ctx.auditor.record(
                    self.start.tenant,
                    "throttle.source",
                    self.start.customer_id,
                    "limited",
                    source=self.start.source,
                    per_hour=self.policy.lockout.source_failures_per_hour,
                )
        elif self._step.biometric_off and not alone:
            await self._reenable_biometric()
        else:
            self._step_passed = True
        return [await self._emit(self._decide())]

    async def _reenable_biometric(self) -> None:
        """Where a second factor alone must not authenticate (a tenant that needs both), passing
        it re-enables the biometric instead: the count is reset and the call goes on to be
        decided by both, so locking the biometric on purpose never lowers the bar to one factor."""
        tenant, cid = self.start.tenant, self.start.customer_id
        async with self.ctx.store.transaction() as tx:
            if await tx.lock_customer(tenant, cid) is not None:
                await self.ctx.attempts.reenabled(self.policy, tenant, cid, tx)
                await self.ctx.auditor.record(
                    tenant, "biometric.limit", cid, "reenabled", session=self.start.session_id, tx=tx
                )
            templates = await self.ctx.vault.load(tenant, cid, None, tx)
        self._step = replace(self._step, biometric_off=False)
        self._use_templates(templates)
        self._check_thresholds()

    def _require_step_up(self, why: str) -> None:
        if self._last is None or self._last.outcome is not Outcome.STEP_UP_REQUIRED:
            raise PreconditionFailed(f"no step-up is pending: {why}")

    async def send_code(self) -> list[Decision]:
        self._require_step_up("a code is sent after a biometric match")
        await self.ctx.factors.send_code(self.policy, self.start.tenant, self.start.customer_id)
        self._step = replace(self._step, note="a one-time code was sent to the registered destination")
        return [await self._emit(self._decide())]

    def has_evidence(self) -> bool:
        """Whether `finish` has anything to decide on (else it is InvalidInput)."""
        # With the biometric disabled, a second factor alone is a whole session.
        decided = self._closed_outcome is not None and self._closed_outcome.outcome not in UNENROLLED
        return decided or self._samples > 0 or self._typed > 0 or self._step.biometric_off

    async def finish(self) -> Decision:
        """The last decision after the client half-closed, over all the evidence received."""
        if not self.has_evidence():
            raise InvalidInput(
                "audio" if self.has_audio else "keystrokes", "the stream ended without any evidence"
            )
        self._finishing = True
        new, _ = self.tracker.voiced_since(self._voiced_mark)
        # Only new speech makes a final look (the same score must not count twice).
        fresh = new.size >= MIN_SEGMENT_S * self.tracker.sample_rate or not self._segments
        voice_pending = self._voice_template is not None and fresh
        enough = self.tracker.net_speech_s >= self.policy.voice.min_net_speech_s
        self._trace = None
        if voice_pending and enough and self._closed_outcome is None and self._may_look():
            self._trace = LookTrace()
            try:
                await self._score_voice(deadline=time.monotonic() + self.policy.voice.redecide_interval_s)
            except (Overloaded, TimeoutError) as exc:
                self._trace = None
                log.warning("session %s: final voice scoring skipped (%s)", self.start.session_id, exc)
        final = (await self._decide_look(final=True))[0]
        self._end_trace(final)
        if self._countermeasure is not None:  # started for a look that never came
            self._countermeasure.cancel()
        if not self.claimed:
            return final  # nobody to keep the call's voice or fingerprint under
        try:
            await self._keep_call_fingerprint(final)
            await self._keep_caller_voice()
        except Exception:  # a reference not kept must not cost the caller the decision
            log.exception("session %s: the call's fingerprint was not kept", self.start.session_id)
        return final

    async def _keep_caller_voice(self) -> None:
        """The caller's pooled voiceprint, sealed under the claimed customer for a day (the latest
        few calls), so a tenant administrator can put whoever called on a watchlist afterwards
        (`AddFraudster` from a session). Never audio."""
        if not self._segments or not self.start.session_id:
            return
        pooled = self._pooled()
        if not usable(pooled):
            return
        await caller_voices.keep(
            self.ctx, self.start.tenant, self.start.customer_id, self.start.session_id, pooled
        )

    async def _keep_call_fingerprint(self, final: Decision) -> None:
        """After a call authenticated by voice, its audio's fingerprint joins the customer's recorded
        material (in one of CALL_FINGERPRINTS slots, the oldest replaced): a recording of this call
        replayed later is then caught. Only the customer's own, authenticated calls are kept."""
        voiced = any(e.modality == VOICE for e in final.evidence)
        if final.outcome is not Outcome.AUTHENTICATED or not voiced or not self._recent:
            return
        audio, rate = np.concatenate(self._recent), self.tracker.sample_rate
        if audio.size < replay.MIN_PROBE_S * rate:
            return
        print_ = await asyncio.to_thread(fingerprint, audio, rate)
        tenant, cid = self.start.tenant, self.start.customer_id
        async with self.ctx.store.transaction() as tx:
            record = await tx.lock_customer(tenant, cid)
            # Erased, opted out or voice dropped while the call went on: nothing is kept.
            if record is None or record.opted_out or (record.registered and "voice" not in record.methods):
                return
            kept = {
                t.encoder_id: t.created_ms
                for t in await self.ctx.vault.load(tenant, cid, FINGERPRINT, tx)
                if t.encoder_id.startswith(CALL_SLOT)
            }
            slots = [f"{CALL_SLOT}{i}" for i in range(CALL_FINGERPRINTS)]
            slot = next((s for s in slots if s not in kept), None) or min(kept, key=kept.__getitem__)
            await self.ctx.vault.replace(
                tenant, cid, FINGERPRINT, slot, FINGERPRINT_VERSION, print_.to_bytes(), tx
            )
