"""Makes the keystroke score calibrations the service ships (authsvc/scoring/calibrations/<model>.json).

One file per keystroke model, named by the model id of `keystroke.template_identity`
and stamped with its model version, so the service finds it with
`load_calibration(model_id, version)`. The calibrated score is the model's
natural-log LLR (`KeystrokeScore.llr`); every trial goes through the
production path: `keystroke.enroll(samples) -> profile bytes`, then
`keystroke.verify(profile bytes, sample)`.

Fixed text (keystroke-fixed-tllr), keystroke100 ("try4-mbs", 100 users x 10
typings): each user is enrolled on typings 1-5; impostor trials = all 10
typings of every other user (100 x 99 x 10 = 99,000); genuine trials =
typings 6-10 of the user (500), used only for the printed FRR. All 100 users
are used, so that the impostor statistics rest on as many trials as the data
allow; note that users 51-100 are the split on which the model's DD prior and
Platt mapping were fitted (calibration.FIXED), so half the impostor trials
are in-sample for those constants. For reference the script also prints the
thresholds from the held-out users 1-50 alone (impostors from users 1-50).

Free text (keystroke-free-tllr), freetext-dev: each usable user is enrolled
on all sessions of one form, in turn each of the three forms; probes are
non-overlapping windows of WINDOW (default 100) key presses inside one session
from the other two forms. Impostor trials = other users' windows, genuine =
the user's own windows. Users without usable rows in some form are left out,
as in bench/keystroke_free.py. calibration.FREE was fitted on this same data,
so these thresholds are in-sample.

FRR at a threshold = share of genuine trials with llr < threshold (accept is
llr >= threshold).

    python bench/calibrate_keystroke.py [--data DIR] [--window 100] [--out-dir DIR]
    python -m bench.calibrate_keystroke ...   (same, from the repo root)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc import keystroke
from authsvc.keystroke.datasets import (
    FREETEXT_FORMS,
    keystroke100_sample,
    load_freetext,
    load_keystroke100,
    windows,
)
from authsvc.scoring.calibration import Calibration, calibration_path, load_calibration
from bench.common import default_data_dir

TARGET_FARS = (0.1, 0.01, 0.001, 1e-4)
N_ENROLL_FIXED = 5
HELD_OUT_USERS = range(1, 51)
DEFAULT_WINDOW = 100


def fixed_trials(data_dir: Path) -> tuple[dict[str, np.ndarray], tuple[str, str, str], str]:
    """(llrs by {all,held}_{genuine,impostor}, template identity, data description)."""
    lat = load_keystroke100(data_dir)
    users = sorted(lat)
    samples = {u: [keystroke100_sample(row) for row in lat[u]] for u in users}
    genuine: list[float] = []
    impostor: list[float] = []
    held_genuine: list[float] = []
    held_out: list[float] = []
    identity = None
    for u in users:
        profile = keystroke.enroll(samples[u][:N_ENROLL_FIXED])
        ident = keystroke.template_identity(profile)
        if identity is None:
            identity = ident
        elif ident != identity:
            raise SystemExit(f"profiles of one run disagree on the model: {identity} vs {ident}")
        own = [keystroke.verify(profile, s).llr for s in samples[u][N_ENROLL_FIXED:]]
        genuine.extend(own)
        if u in HELD_OUT_USERS:
            held_genuine.extend(own)
        for v in users:
            if v == u:
                continue
            llrs = [keystroke.verify(profile, s).llr for s in samples[v]]
            impostor.extend(llrs)
            if u in HELD_OUT_USERS and v in HELD_OUT_USERS:
                held_out.extend(llrs)
    assert identity is not None
    n_typings = {len(samples[u]) for u in users}
    data = (
        f"keystroke100 'try4-mbs' (all {len(users)} users, {'/'.join(map(str, sorted(n_typings)))} typings "
        f"each; users 51-100 are in-sample for the model's DD prior and Platt mapping): profile from "
        f"typings 1-{N_ENROLL_FIXED} via keystroke.enroll, impostor probes = every typing of every other "
        f"user via keystroke.verify, {len(impostor)} impostor trials"
    )
    llrs = {
        "all_genuine": np.array(genuine),
        "all_impostor": np.array(impostor),
        "held_genuine": np.array(held_genuine),
        "held_impostor": np.array(held_out),
    }
    return llrs, identity, data


def free_trials(
    data_dir: Path, window: int
) -> tuple[np.ndarray, np.ndarray, tuple[str, str, str], str, list[str], list[str]]:
    """(genuine llr, impostor llr, template identity, data description, users, excluded users)."""
    loaded = load_freetext(data_dir)
    files = {(f.form, f.user): f for f in loaded}
    all_users = sorted({f.user for f in loaded})
    users = [
        u
        for u in all_users
        if all(files.get((form, u)) and files[form, u].sessions for form in FREETEXT_FORMS)
    ]
    excluded = [u for u in all_users if u not in users]
    probes = {
        (form, u): [keystroke.make_sample(w, "free") for w in windows(files[form, u].sessions, window)]
        for form in FREETEXT_FORMS
        for u in users
    }
    genuine: list[float] = []
    impostor: list[float] = []
    identity = None
    for enroll_form in FREETEXT_FORMS:
        for target in users:
            sessions = [keystroke.make_sample(s, "free") for s in files[enroll_form, target].sessions]
            profile = keystroke.enroll(sessions)
            ident = keystroke.template_identity(profile)
            if identity is None:
                identity = ident
            elif ident != identity:
                raise SystemExit(f"profiles of one run disagree on the model: {identity} vs {ident}")
            for form in FREETEXT_FORMS:
                if form == enroll_form:
                    continue
                for probe_user in users:
                    llrs = [keystroke.verify(profile, s).llr for s in probes[form, probe_user]]
                    (genuine if probe_user == target else impostor).extend(llrs)
    assert identity is not None
    data = (
        f"freetext-dev ({len(users)} usable users, {len(FREETEXT_FORMS)} forms; calibration.FREE was "
        f"fitted on this same data): profile from all sessions of one form via keystroke.enroll "
        f"(each form in turn), impostor probes = non-overlapping {window}-keystroke windows (within a "
        f"session) of every other user's other two forms via keystroke.verify, {len(impostor)} "
        f"impostor trials"
    )
    return np.array(genuine), np.array(impostor), identity, data, users, excluded


def report(cal: Calibration, genuine: np.ndarray, impostor: np.ndarray) -> None:
    """Threshold, empirical FAR and FRR at each target FAR (the floor 1/n where a target is below it)."""
    floor = 1.0 / cal.impostor_trials
    print(f"  impostor trials {impostor.size}, genuine trials {genuine.size}, FAR floor {floor:.3g}")
    print(f"  {'target FAR':>12s} {'threshold (LLR)':>16s} {'FAR measured':>13s} {'FRR':>8s}")
    for far in TARGET_FARS:
        label = f"{far:g}"
        if far < floor:
            label = f"{far:g}->{floor:.2g}"
            far = floor
        thr = cal.threshold_for(far)
        far_meas = float(np.mean(impostor >= thr))
        frr = float(np.mean(genuine < thr))
        print(f"  {label:>12s} {thr:16.4f} {far_meas:13.2e} {frr:8.4f}")


def write(cal: Calibration, out_dir: Path | None) -> Path:
    out = (out_dir / f"{cal.encoder_id}.json") if out_dir else calibration_path(cal.encoder_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cal.to_json() + "\n")
    # The service's lookup must find exactly what was written.
    if load_calibration(cal.encoder_id, cal.encoder_version, out) != cal:
        raise SystemExit(f"{out} does not load back as written")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=default_data_dir(), help="shared data dir (env AUTHSVC_DATA)"
    )
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help="free-text probe length in key presses"
    )
    parser.add_argument(
        "--out-dir", type=Path, help="write <model_id>.json here instead of authsvc/scoring/calibrations/"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    llrs, (_, model_id, version), data = fixed_trials(args.data)
    cal = Calibration.from_impostor_scores(llrs["all_impostor"], model_id, version, data)
    out = write(cal, args.out_dir)
    print(f"{model_id} v{version}: {data}")
    report(cal, llrs["all_genuine"], llrs["all_impostor"])
    held_cal = Calibration.from_impostor_scores(llrs["held_impostor"], model_id, version, "users 1-50")
    print("  reference, held-out users 1-50 only (impostors from users 1-50; not written):")
    report(held_cal, llrs["held_genuine"], llrs["held_impostor"])
    print(f"wrote {out}\n")

    genuine, impostor, (_, model_id, version), data, users, excluded = free_trials(args.data, args.window)
    cal = Calibration.from_impostor_scores(impostor, model_id, version, data)
    out = write(cal, args.out_dir)
    print(f"{model_id} v{version}: {data}")
    print(f"  users {users}; excluded (no usable rows in some form): {excluded}")
    report(cal, genuine, impostor)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
