"""bench/keystroke_fusion.py models the engine's fusion rules: it must agree with `fuse()`."""

from __future__ import annotations

import numpy as np

from bench.keystroke_fusion import FORGED_LLR, fused_under_caps


def test_typing_beside_voice_is_capped_and_floored_as_the_engine_does():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(1.5, 1.0, 200), rng.normal(-2.0, 1.5, 2000)
    out = fused_under_caps(genuine, impostor, "keystroke-fixed-tllr", "1")  # checks itself against fuse()
    for sector, r in out["presets"].items():
        side = r["beside_voice"]
        # Forged timings at the cap buy far less than uncapped forged timings (the issue-10 attack).
        assert (
            side["forged_typing_far_over_voice_target"] < side["forged_typing_far_over_voice_target_uncapped"]
        )
        # Impostor typing, mostly below its floor, can only lower the fused FAR under the rules.
        assert side["fused_far_per_look"] <= side["forged_typing_far_per_look"]
        assert side["impostor_typing_clears_floor"] == np.mean(impostor >= r["typing_floor_llr"])
        if r["cap_llr"] == 0.0:  # regulated presets: typing never lowers the voice bar
            assert side["forged_typing_far_over_voice_target"] <= 1.0 + 1e-9, sector
        assert not r["alone"]["authenticates_alone_in_preset"]
    assert out["presets"]["general"]["cap_llr"] < FORGED_LLR
