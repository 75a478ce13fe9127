"""One verification session: gathers voice evidence over a stream and asks the policy.

The transport feeds it chunks and forwards whatever decisions it returns. It
decides PENDING until the policy's net speech is reached, then scores, and
re-scores each time another `redecide_interval_s` of net speech has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from authsvc.audio.codecs import Encoding, check_rate, decode
from authsvc.audio.quality import assess
from authsvc.audio.vad import SpeechTracker
from authsvc.context import ServiceContext
from authsvc.enrollment import VOICE
from authsvc.errors import InvalidInput
from authsvc.identifiers import check_id
from authsvc.policy.engine import (
    Decision,
    VoiceEvidence,
    decide_voice,
    not_enrolled,
    voice_threshold,
)
from authsvc.scoring.cosine import aggregate, check_same_encoder, cosine, embedding_from_bytes
from authsvc.voice.pipeline import encoder_input

# PENDING updates are sent each time net speech grows by this much: often
# enough for an IVR progress cue, rare enough not to flood the stream.
PENDING_STEP_S = 0.5


@dataclass(frozen=True)
class SessionStart:
    tenant: str
    customer_id: str
    channel: str
    encoding: Encoding | None
    sample_rate: int
    session_id: str = ""


class VerificationSession:
    def __init__(self, ctx: ServiceContext, start: SessionStart) -> None:
        check_id(start.tenant, "start.tenant")
        check_id(start.customer_id, "start.customer_id")
        if start.encoding is None:
            raise InvalidInput("start.audio_format.encoding", "must be PCM16_LE, MULAW or ALAW")
        check_rate(start.sample_rate, "start.audio_format.sample_rate_hz")
        self.ctx = ctx
        self.start = start
        self.policy = ctx.policies.get(start.tenant)
        self.tracker = SpeechTracker(start.sample_rate, max_speech_s=self.policy.voice.max_window_s)
        self._clip_level = int(start.encoding.full_scale * 0.98)
        self._template: np.ndarray | None = None
        self._samples = 0
        self._sequence = 0
        self._last_pending_s = -PENDING_STEP_S
        self._scored_at_s: float | None = None
        self._last: Decision | None = None

    def _emit(self, decision: Decision) -> Decision:
        self._sequence += 1
        self._last = replace(decision, sequence=self._sequence)
        return self._last

    async def begin(self) -> list[Decision]:
        """Loads the claimed customer's template; a customer without one is told at once."""
        enc = self.ctx.encoder
        templates = self.ctx.vault.load(self.start.tenant, self.start.customer_id, VOICE)
        if not templates:
            return [self._emit(not_enrolled(self.policy, self.start.customer_id))]
        usable = [t for t in templates if (t.encoder_id, t.encoder_version) == (enc.encoder_id, enc.version)]
        if not usable:
            # Never score across encoders: the operator has to re-enroll.
            check_same_encoder(
                (enc.encoder_id, enc.version), (templates[0].encoder_id, templates[0].encoder_version)
            )
        self._template = aggregate([embedding_from_bytes(t.payload) for t in usable])
        self._enrolled_samples = len(usable)
        self._threshold, self._target_far = voice_threshold(self.policy.voice, self.ctx.calibration)
        return []

    async def feed_audio(self, data: bytes) -> list[Decision]:
        samples = decode(data, self.start.encoding)  # type: ignore[arg-type]
        self._samples += samples.size
        self.tracker.feed(samples, self._clip_level)
        if self._template is None:
            return []
        speech = self.tracker.net_speech_s
        rules = self.policy.voice
        if speech < rules.min_net_speech_s:
            if speech - self._last_pending_s >= PENDING_STEP_S:
                self._last_pending_s = speech
                return [self._emit(decide_voice(self.policy, speech, None))]
            return []
        if self._scored_at_s is None or speech - self._scored_at_s >= rules.redecide_interval_s:
            return [self._emit(await self._score())]
        return []

    async def _score(self) -> Decision:
        assert self._template is not None
        speech = self.tracker.net_speech_s
        self._scored_at_s = speech
        enc = self.ctx.encoder
        probe = await self.ctx.runner.embed(encoder_input(self.tracker, enc.sample_rate))
        evidence = VoiceEvidence(
            score=cosine(probe, self._template),
            threshold=self._threshold,
            target_far=self._target_far,
            encoder_id=enc.encoder_id,
            encoder_version=enc.version,
            enrolled_samples=self._enrolled_samples,
        )
        quality = tuple(assess(self.tracker, self.policy.voice.min_net_speech_s))
        return decide_voice(self.policy, speech, evidence, quality)

    async def finish(self) -> Decision:
        """The last decision after the client half-closed, over all the audio received."""
        if self._samples == 0:
            raise InvalidInput("audio", "the stream ended without any audio")
        speech = self.tracker.net_speech_s
        quality = tuple(assess(self.tracker, self.policy.voice.min_net_speech_s))
        if self._template is None:
            decision = not_enrolled(self.policy, self.start.customer_id)
        elif speech < self.policy.voice.min_net_speech_s:
            decision = decide_voice(self.policy, speech, None, quality)
        elif self._scored_at_s == speech and self._last is not None:
            decision = self._last
        else:
            decision = await self._score()
        return self._emit(replace(decision, final=True, net_speech_s=speech, quality=quality))
