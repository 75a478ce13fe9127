"""Quality checks on a tracked utterance: too short, clipped, silent."""

from __future__ import annotations

import enum

from authsvc.audio.vad import SpeechTracker

# Audio counts as clipped when more than this share of samples sits at (or
# within 2 % of) the encoding's full scale. Clean speech almost never touches
# full scale, so 1 % flags saturated gain while ignoring the odd loud plosive.
CLIP_FRACTION = 0.01


class Quality(enum.Enum):
    TOO_SHORT = "too_short"
    CLIPPED = "clipped"
    SILENT = "silent"


def assess(tracker: SpeechTracker, min_net_speech_s: float) -> list[Quality]:
    issues: list[Quality] = []
    if tracker.total_frames and tracker.speech_frames == 0:
        issues.append(Quality.SILENT)
    elif tracker.net_speech_s < min_net_speech_s:
        issues.append(Quality.TOO_SHORT)
    if tracker.total_samples and tracker.peak_hits / tracker.total_samples > CLIP_FRACTION:
        issues.append(Quality.CLIPPED)
    return issues
