"""What typing does to a decision under the fusion caps, for the keystroke benchmarks.

`fused_under_caps(genuine_llr, impostor_llr, model_id)` takes a benchmark's held-out
typing LLRs and reports, per sector preset:

- alone: typing in a session without audio. The presets never let a typing match
  authenticate alone (it needs a second factor); with `keystroke.alone = true` it is held
  to target_far / max_looks per look, and the FAR / FRR observed there are given.
- beside_voice: typing on a call, fused with voice through the engine's own `fuse()`. A
  typing sample must clear its floor (floor_far) and adds at most `keystroke.max_llr`, so
  the voice LLR a look needs is lowered by at most the cap. The voice side is the shipped
  GE2E calibration's impostor curve (its FAR at the lowered threshold), so the fused
  per-look FAR is exact under the usual assumption that voice and typing of an impostor
  are independent (chimeric trials): mean over impostor typings of [floor cleared] *
  voice FAR at the lowered bar. Reported beside the same figure without the rules (LLRs
  add, no cap, no floor: the engine before issue 10), and the worst case of forged timings
  (every sample at or above the cap).
- genuine_floor_reject: genuine typings below their floor, which fail a look whatever
  the voice (the FRR price of the floor).
"""

from __future__ import annotations

import math

import numpy as np

from authsvc.policy.engine import ModalityEvidence, fuse, look_far
from authsvc.policy.schema import SECTORS, TenantPolicy, build_policy
from authsvc.scoring.calibration import Calibration, load_calibration
from authsvc.voice.registry import load_encoder

# The hill-climbed timings of the issue-10 attack reached this LLR.
FORGED_LLR = 5.85


def _voice(cal: Calibration, llr: float, thr_llr: float, floor_llr: float) -> ModalityEvidence:
    score = (llr - cal.llr_offset) / cal.llr_slope
    return ModalityEvidence("voice", score, llr, 0.0, thr_llr, 0.0, "ge2e", "", 1, floor_llr=floor_llr)


def _typing(llr: float, floor_llr: float) -> ModalityEvidence:
    return ModalityEvidence(
        "keystroke_fixed", llr, llr, floor_llr, floor_llr, 0.0, "k", "", 5, floor_llr=floor_llr
    )


def _needed_voice_llr(policy: TenantPolicy, typing: float, thr: float, vfloor: float, tfloor: float) -> float:
    """The least voice LLR with which a look passes beside this typing LLR (inf: none does)."""
    if not typing >= tfloor:
        return math.inf
    return max(thr - min(typing, policy.keystroke.max_llr), vfloor)


def _check_against_engine(policy: TenantPolicy, cal: Calibration, thr: float, vfloor: float, tfloor: float):
    """The closed form above must be what `fuse()` decides: probe it on both sides of the bar."""
    for typing in (tfloor - 0.1, tfloor, 0.0, policy.keystroke.max_llr, FORGED_LLR):
        need = _needed_voice_llr(policy, typing, thr, vfloor, tfloor)
        for voice_llr, passes in ((need + 1e-6, True), (need - 1e-3, False)):
            if not math.isfinite(voice_llr):
                voice_llr, passes = thr + 50.0, False
            ev = (_voice(cal, voice_llr, thr, vfloor), _typing(typing, tfloor))
            fused, needed, broken = fuse(policy, ev)
            ok = not broken and fused >= needed
            if ok != passes:
                raise AssertionError(f"bench fusion model disagrees with the engine at typing {typing}")


def _voice_far(cal: Calibration, needed_llr: np.ndarray) -> np.ndarray:
    """FAR of one voice look that needs this LLR (0 where nothing passes)."""
    out = np.zeros(needed_llr.shape)
    finite = np.isfinite(needed_llr)
    scores = (needed_llr[finite] - cal.llr_offset) / cal.llr_slope
    # Below the calibration's table the curve is flat at its last point (FAR <= 0.5): conservative.
    out[finite] = [cal.far_at(float(s)) for s in scores]
    return out


def preset_results(policy: TenantPolicy, genuine: np.ndarray, impostor: np.ndarray, typing_cal, voice_cal):
    rules = policy.keystroke
    per_look = look_far(policy, policy.voice.target_far)
    thr = voice_cal.llr(voice_cal.threshold_for(per_look))
    vfloor = voice_cal.llr(voice_cal.threshold_for(policy.voice.floor_far))
    tfloor = typing_cal.threshold_for(rules.floor_far)
    _check_against_engine(policy, voice_cal, thr, vfloor, tfloor)

    alone_far = look_far(policy, rules.target_far)
    try:
        alone_thr = typing_cal.threshold_for(alone_far)
        alone = {
            "authenticates_alone_in_preset": rules.alone,
            "per_look_target_far": alone_far,
            "threshold_llr": alone_thr,
            "false_accepts": int(np.sum(impostor >= alone_thr)),
            "far_observed": float(np.mean(impostor >= alone_thr)),
            # A FAR below 3 / trials is not resolved by this data (no false accept is expected).
            "resolvable": bool(alone_far >= 3.0 / impostor.size),
            "frr_observed": float(np.mean(genuine < alone_thr)),
        }
    except Exception as exc:  # the typing calibration cannot resolve the per-look target
        alone = {"authenticates_alone_in_preset": rules.alone, "refused": str(exc)}

    need = np.array([_needed_voice_llr(policy, x, thr, vfloor, tfloor) for x in impostor])
    uncapped = _voice_far(voice_cal, thr - impostor)  # before: LLRs add, no cap, no floor
    forged = _voice_far(voice_cal, np.array([_needed_voice_llr(policy, FORGED_LLR, thr, vfloor, tfloor)]))[0]
    forged_before = _voice_far(voice_cal, np.array([thr - FORGED_LLR]))[0]
    fused = float(_voice_far(voice_cal, need).mean())
    return {
        "voice_per_look_far": per_look,
        "voice_threshold_llr": thr,
        "cap_llr": rules.max_llr,
        "typing_floor_far": rules.floor_far,
        "typing_floor_llr": tfloor,
        "alone": alone,
        "beside_voice": {
            "impostor_typing_clears_floor": float(np.mean(impostor >= tfloor)),
            "fused_far_per_look": fused,
            "fused_far_over_voice_target": fused / per_look,
            "uncapped_far_per_look": float(uncapped.mean()),
            "uncapped_far_over_voice_target": float(uncapped.mean()) / per_look,
            "forged_typing_far_per_look": float(forged),
            "forged_typing_far_over_voice_target": float(forged) / per_look,
            "forged_typing_far_over_voice_target_uncapped": float(forged_before) / per_look,
            "genuine_floor_reject": float(np.mean(genuine < tfloor)),
            "genuine_mean_lift_llr": float(
                np.mean(np.where(genuine >= tfloor, np.minimum(genuine, rules.max_llr), 0))
            ),
        },
    }


def fused_under_caps(
    genuine_llr: np.ndarray, impostor_llr: np.ndarray, model_id: str, model_version: str
) -> dict:
    voice_cal = load_calibration("ge2e", load_encoder("ge2e").version)
    typing_cal = load_calibration(model_id, model_version)
    genuine, impostor = np.asarray(genuine_llr, float), np.asarray(impostor_llr, float)
    return {
        "genuine_trials": int(genuine.size),
        "impostor_trials": int(impostor.size),
        "voice_calibration": voice_cal.data,
        "forged_typing_llr": FORGED_LLR,
        "method": __doc__.split("\n\n", 2)[2].strip(),
        "presets": {
            sector: preset_results(
                build_policy("bench", {"sector": sector}, "bench", sector),
                genuine,
                impostor,
                typing_cal,
                voice_cal,
            )
            for sector in SECTORS
        },
    }
