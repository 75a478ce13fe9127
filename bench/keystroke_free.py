"""Free-text keystroke benchmark: freetext-dev (Facebook / Instagram / Twitter forms).

Protocol: a user's profile is built from everything they typed on one form;
probes are non-overlapping windows of 50, 100 and 200 keystrokes (key presses,
inside one session) from the other two forms. Genuine = the same user's
windows, impostor = every other user's windows. Done for each of the three
enrollment forms; the headline EER pools all trials of the three choices at
one global threshold; the mean of per-user EERs is given too.

Baseline, reproduced in the same run on the same digraphs (consecutive
non-modifier keys, case folded, press-to-press time <= 1.5 s): Gunetti &
Picardi (2005) on digraphs shared by profile and probe (mean duration of
each): R = disorder of their duration ranking / maximum disorder; A =
fraction of shared digraphs whose durations differ by a ratio > 1.25;
R + A. Distances are negated so that higher = more genuine. G&P use
digraph times only; the project detector also uses hold times, so the run
adds the project detector restricted to digraphs as an ablation.

Users whose files hold no usable row (rounded timestamps: users 28, 31, 32,
34) cannot take part; skipped rows are counted per file and logged.

    python -m bench.keystroke_free [--data DIR] [--out DIR]   (from the repo root)
    python -m bench.keystroke_free --fit    # refit calibration.FREE (and the hold prior of FIXED)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

# Runnable as `python bench/X.py` as well as `python -m bench.X`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authsvc.keystroke import calibration as cal
from authsvc.keystroke import free_text
from authsvc.keystroke.datasets import FREETEXT_FORMS, load_freetext, windows
from authsvc.keystroke.events import Sample
from authsvc.keystroke.features import MAX_DIGRAPH_S, FreeTextObservations, free_text_observations
from authsvc.keystroke.free_text import FreeTextProfile
from bench.common import ROOT, default_data_dir, machine
from bench.keystroke_fusion import fused_under_caps

WINDOWS = (50, 100, 200)
GP_RATIO = 1.25
PROJECT = "project (t-LLR vs population)"
ABLATION = "project, DD only (ablation)"
BASELINES = ("G&P R", "G&P A", "G&P R+A")
DETECTORS = (PROJECT, ABLATION, *BASELINES)


def gp_distances(profile: dict[tuple[str, str], float], obs: FreeTextObservations) -> tuple[float, float]:
    """Gunetti & Picardi R and A between profile digraph means and a probe (seconds)."""
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for k, v in zip(obs.digraphs, np.exp(obs.dd), strict=True):
        durations[k].append(float(v))
    shared = [k for k in durations if k in profile]
    n = len(shared)
    if n < 2:
        return 1.0, 1.0  # nothing to compare: maximal distance
    e = np.array([profile[k] for k in shared])
    p = np.array([np.mean(durations[k]) for k in shared])
    rank_e = np.argsort(np.argsort(e, kind="stable"), kind="stable")
    rank_p = np.argsort(np.argsort(p, kind="stable"), kind="stable")
    max_disorder = n * n / 2 if n % 2 == 0 else (n * n - 1) / 2
    r = float(np.abs(rank_e - rank_p).sum() / max_disorder)
    ratio = np.maximum(e, p) / np.minimum(e, p)
    a = float(1.0 - np.mean(ratio <= GP_RATIO))
    return r, a


def gp_profile(sessions: list[Sample]) -> dict[tuple[str, str], float]:
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in sessions:
        obs = free_text_observations(s.events)
        for k, v in zip(obs.digraphs, np.exp(obs.dd), strict=True):
            durations[k].append(float(v))
    return {k: float(np.mean(v)) for k, v in durations.items()}


def collect(files: dict, users: list[str], calibration: cal.ModelCalibration, baselines: bool = True) -> dict:
    """scores[detector][n] -> list of (enroll form, target user, probe user, score)."""
    probes = {
        (form, user, n): [free_text_observations(w) for w in windows(files[form, user].sessions, n)]
        for form in FREETEXT_FORMS
        for user in users
        for n in WINDOWS
    }
    scores: dict[str, dict[int, list]] = {d: {n: [] for n in WINDOWS} for d in DETECTORS}
    for enroll in FREETEXT_FORMS:
        for target in users:
            sessions = [Sample(s) for s in files[enroll, target].sessions]
            profile = FreeTextProfile.build(sessions)
            gp = gp_profile(sessions)
            for form in FREETEXT_FORMS:
                if form == enroll:
                    continue
                for probe_user in users:
                    for n in WINDOWS:
                        for obs in probes[form, probe_user, n]:
                            row = (enroll, target, probe_user)
                            scores[PROJECT][n].append(
                                (*row, profile.score_observations(obs, calibration).raw)
                            )
                            if not baselines:
                                continue
                            dd_only = replace(obs, hold_keys=(), hold=obs.hold[:0])
                            scores[ABLATION][n].append(
                                (*row, profile.score_observations(dd_only, calibration).raw)
                            )
                            r, a = gp_distances(gp, obs)
                            scores["G&P R"][n].append((*row, -r))
                            scores["G&P A"][n].append((*row, -a))
                            scores["G&P R+A"][n].append((*row, -(r + a)))
    return scores


def split(rows: list) -> tuple[np.ndarray, np.ndarray]:
    gen = np.array([s for _, t, p, s in rows if t == p])
    imp = np.array([s for _, t, p, s in rows if t != p])
    return gen, imp


def evaluate(rows: list, users: list[str]) -> dict:
    gen, imp = split(rows)
    per_form = {}
    for form in FREETEXT_FORMS:
        g, i = split([r for r in rows if r[0] == form])
        per_form[form] = cal.eer(g, i)
    per_user = [cal.eer(*split([r for r in rows if r[1] == u])) for u in users]
    return {
        "genuine_trials": int(gen.size),
        "impostor_trials": int(imp.size),
        "eer_pooled": cal.eer(gen, imp),
        "eer_pooled_by_enroll_form": per_form,
        "eer_per_user_mean": float(np.mean(per_user)),
    }


def priors(files: dict, users: list[str]) -> tuple[cal.Prior, cal.Prior]:
    """Hold and DD priors: overall mean/sd of log times, pooled within-key (-digraph) sd."""
    out = []
    for attr, keys in (("hold", "hold_keys"), ("dd", "digraphs")):
        values, ss, dof = [], 0.0, 0
        for (_, user), f in files.items():
            if user not in users:
                continue
            groups: dict = defaultdict(list)
            for s in f.sessions:
                obs = free_text_observations(s)
                for k, v in zip(getattr(obs, keys), getattr(obs, attr), strict=True):
                    groups[k].append(v)
            for v in groups.values():
                arr = np.asarray(v)
                values.append(arr)
                ss += float(((arr - arr.mean()) ** 2).sum())
                dof += arr.size - 1
        allv = np.concatenate(values)
        out.append(
            cal.Prior(round(float(allv.mean()), 4), round(float(allv.std()), 4), round(np.sqrt(ss / dof), 4))
        )
    return out[0], out[1]


def det_plot(path: Path, scores: dict, table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    ticks = np.array([0.005, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6])
    fig, axes = plt.subplots(1, len(WINDOWS), figsize=(6 * len(WINDOWS), 5.5))
    for ax, n in zip(axes, WINDOWS, strict=True):
        for name in DETECTORS:
            far, frr = cal.error_rates(*split(scores[name][n]))
            eer = table[n][name]["eer_pooled"]
            ax.plot(
                norm.ppf(np.clip(far, 1e-4, 1 - 1e-4)),
                norm.ppf(np.clip(frr, 1e-4, 1 - 1e-4)),
                label=f"{name}: EER {eer:.3f}",
                lw=2.2 if name == PROJECT else 1.2,
            )
        ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
        ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
        ax.set_xlim(norm.ppf(0.003), norm.ppf(0.6))
        ax.set_ylim(norm.ppf(0.003), norm.ppf(0.6))
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("false reject rate")
        ax.set_title(f"windows of {n} keystrokes (pooled over 3 enrollment forms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("freetext-dev: enroll on one form, verify on windows from the other two")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, default=default_data_dir(), help="shared data dir (env AUTHSVC_DATA)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--fit", action="store_true", help="refit FREE priors and Platt mapping, print them, exit"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    t0 = time.time()
    loaded = load_freetext(args.data)
    files = {(f.form, f.user): f for f in loaded}
    all_users = sorted({f.user for f in loaded})
    users = [
        u
        for u in all_users
        if all(files.get((form, u)) and files[form, u].sessions for form in FREETEXT_FORMS)
    ]
    excluded = [u for u in all_users if u not in users]
    logging.info("usable users: %s; excluded (no usable rows in some form): %s", users, excluded)

    if args.fit:
        hold, dd = priors(files, users)
        trial = replace(cal.FREE, hold=hold, dd=dd, platt=cal.Platt(1.0, 0.0))
        rows = [r for n in WINDOWS for r in collect(files, users, trial, baselines=False)[PROJECT][n]]
        platt = cal.fit_platt(*split(rows))
        print(f"hold=Prior(center={hold.center}, spread={hold.spread}, within={hold.within}),")
        print(f"dd=Prior(center={dd.center}, spread={dd.spread}, within={dd.within}),")
        print(f"platt=Platt(a={platt.a:.4f}, b={platt.b:.4f}),")
        return 0

    scores = collect(files, users, cal.FREE)
    table: dict[int, dict] = {}
    for n in WINDOWS:
        table[n] = {name: evaluate(scores[name][n], users) for name in DETECTORS}
        best = min(BASELINES, key=lambda b: table[n][b]["eer_pooled"])
        table[n]["best_baseline"] = best
        for name in DETECTORS:
            table[n][name]["ratio_to_best_baseline"] = (
                table[n][name]["eer_pooled"] / table[n][best]["eer_pooled"]
            )
        g, i = split(scores[PROJECT][n])
        g_llr, i_llr = cal.FREE.platt.a * g + cal.FREE.platt.b, cal.FREE.platt.a * i + cal.FREE.platt.b
        table[n]["project_llr"] = {
            "cllr_bits": cal.cllr(g_llr, i_llr),
            "genuine_llr_positive": float(np.mean(g_llr > 0)),
            "impostor_llr_negative": float(np.mean(i_llr < 0)),
        }
        # In-sample LLRs (the Platt mapping was fitted on this data), through the fusion rules.
        table[n]["fused"] = fused_under_caps(g_llr, i_llr, free_text.MODEL_ID, free_text.MODEL_VERSION)
    args.out.mkdir(parents=True, exist_ok=True)
    det_plot(args.out / "keystroke_free.png", scores, table)

    result = {
        "benchmark": "keystroke_free",
        "data": str(args.data / "keystroke" / "freetext-dev"),
        "protocol": {
            "enroll": "all sessions of one form (each of the 3 forms in turn)",
            "probes": "non-overlapping windows of N key presses inside a session, from the other two forms",
            "genuine": "same user id; impostor: every other usable user",
            "eer_pooled": "one global threshold over all trials of the 3 enrollment choices (headline)",
            "eer_per_user_mean": "each target user's own threshold, averaged",
            "digraphs": f"consecutive non-modifier keys, case folded, press-to-press <= {MAX_DIGRAPH_S} s",
            "gp_ratio_t": GP_RATIO,
        },
        "users": users,
        "excluded_users": excluded,
        "files": {
            f"{f.form}/{f.path.name}": {
                "keystrokes": f.n_keystrokes,
                "sessions": len(f.sessions),
                **dict(f.counts),
            }
            for f in loaded
        },
        "skipped_rows_total": sum(v for f in loaded for k, v in f.counts.items() if k.startswith("skipped")),
        "project_detector": {
            "model": f"{free_text.MODEL_ID} v{free_text.MODEL_VERSION}",
            "min_count": free_text.MIN_COUNT,
            "nu_person": free_text.NU_PERSON,
            "nu_population": free_text.NU_POPULATION,
            "shrink_entry": free_text.SHRINK_ENTRY,
            "shrink_person": free_text.SHRINK_PERSON,
            "calibration": {
                "hold": asdict(cal.FREE.hold),
                "dd": asdict(cal.FREE.dd),
                "platt": asdict(cal.FREE.platt),
                "fitted_on": cal.FREE.fitted_on,
            },
            "note": "priors and Platt mapping are fitted on this same data (10 usable users are too few to "
            "hold some out); EERs do not depend on the Platt mapping, Cllr does",
        },
        "goal": "project pooled EER <= 0.7 x best baseline at every window length",
        "eer": {str(n): table[n] for n in WINDOWS},
        "machine": machine(),
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "keystroke_free.json").write_text(json.dumps(result, indent=1) + "\n")

    print(f"\nfreetext-dev, {len(users)} users; pooled EER (per-user mean EER) | ratio to best baseline")
    print(f"{'detector':32s}" + "".join(f"{f'n={n}':>28s}" for n in WINDOWS))
    for name in DETECTORS:
        cells = [
            f"{table[n][name]['eer_pooled']:.4f} ({table[n][name]['eer_per_user_mean']:.4f}) | "
            f"{table[n][name]['ratio_to_best_baseline']:.2f}"
            for n in WINDOWS
        ]
        print(f"{name:32s}" + "".join(f"{c:>28s}" for c in cells))
    print(
        "project LLR Cllr (bits): "
        + ", ".join(f"n={n}: {table[n]['project_llr']['cllr_bits']:.3f}" for n in WINDOWS)
    )
    print(f"skipped rows: {result['skipped_rows_total']}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
