"""bench/calls.py drives the service's own session: it must keep working as the session grows."""

from __future__ import annotations

import asyncio

from authsvc.scoring.calibration import load_calibration
from bench.calls import call_chunks, run_condition, template_of


def test_whole_calls_run_through_the_real_session_and_the_rule_caps_the_looks(ge2e, speech):
    names = sorted(speech)[:2]
    speakers = {n: (template_of(ge2e, speech[n][:2]), [call_chunks(speech[n][4])]) for n in names}
    out = asyncio.run(run_condition(ge2e, load_calibration("ge2e", ge2e.version), speakers))
    general = out["general/on"]
    assert general["impostor_calls"] == 2 and general["genuine_calls"] == 2
    assert 1 <= general["mean_looks"] <= 3, "each call looked at least once, at most max_looks"
    assert out["general/off"]["mean_looks"] >= general["mean_looks"]
