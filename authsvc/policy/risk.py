"""Fraud risks as the decision engine sees them, kept apart from the authentication outcome.

As Amazon Connect Voice ID separates FraudDetectionResult from AuthenticationResult: a
caller can be the right customer and still be high risk. Policy (`[fraud]`) decides what
a high risk does to the decision; the assessment itself only reports.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLAY = "replay"
SYNTHETIC = "synthetic"
FRAUDSTER = "fraudster"
DETECTORS = (REPLAY, SYNTHETIC, FRAUDSTER)

# Levels. NOT_ENOUGH_AUDIO and UNAVAILABLE are never a low risk: they say nothing was judged.
LOW = "low"
HIGH = "high"
NOT_ENOUGH_AUDIO = "not_enough_audio"
UNAVAILABLE = "unavailable"
LEVELS = (LOW, HIGH, NOT_ENOUGH_AUDIO, UNAVAILABLE)


@dataclass(frozen=True)
class DetectorRisk:
    detector: str
    level: str
    # The detector's own score (replay: probe hashes aligned with recorded material) and the
    # threshold at which it calls the risk high: evidence, for principals granted evidence.
    score: float = 0.0
    threshold: float = 0.0
    reason: str = ""
    version: str = ""
    # The reason without numbers, for principals not granted evidence ("" = reason).
    summary: str = ""

    @property
    def high(self) -> bool:
        return self.level == HIGH


@dataclass(frozen=True)
class FraudAssessment:
    risks: tuple[DetectorRisk, ...] = ()

    def get(self, detector: str) -> DetectorRisk | None:
        return next((r for r in self.risks if r.detector == detector), None)

    def high(self) -> tuple[DetectorRisk, ...]:
        return tuple(r for r in self.risks if r.high)


NO_RISK = FraudAssessment()
