"""Discrete parameters: does training find a choice and a toggle from audio alone, against rounding a continuous one?

Known-answer task: ``testing.switched_filter_chain`` (filter type ∈ {lowpass, highpass, bandpass}, a saturation
toggle, continuous cutoff and gain) renders white noise at hidden settings; ``testing.fit_known_answer`` trains a
small encoder through the black-box layer from the chain's defaults (lowpass, off) and decodes the most likely
values. Compared:

* ``relaxed``: the parameter kinds (``ParamSpec.choice`` / ``toggle``) with the layer's estimator (SPSA on the
  relaxation with common random numbers, true losses for the jumps);
* ``naive_defaults``: the same DSP with the type and the toggle declared continuous and rounded inside the
  effect (how a switch had to be written before kinds), started at the defaults;
* ``naive_middle``: the naive chain started mid-range (the toggle on its rounding threshold, the type in the
  middle bin), its best chance;
* ``relaxed_sure`` (not run by default): the kinds started sure of their defaults (P = 0.98) instead of
  ``ParamCodec.defaults``' mild preference, to show why the start explores.

Prints one JSON object: per mode the success rate (type and toggle right), each part's rate, the median cutoff
error (octaves) and gain error (dB) of the runs that found both, and seconds per run. ``--quick``: 2 truths, 1 seed.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afx_lightning.effects.discrete import ParamCodec  # noqa: E402
from afx_lightning.effects.params import defaults_normalized  # noqa: E402
from afx_lightning.testing import FILTER_TYPES, fit_known_answer, switched_filter_chain  # noqa: E402

CUTOFF_HZ, GAIN_DB = 2000.0, 6.0


def run(mode: str, kind: str, drive: bool, seed: int, steps: int, lr: float, discrete_epsilon: float) -> dict:
    naive = mode.startswith("naive")
    chain = functools.partial(switched_filter_chain, naive=True) if naive else switched_filter_chain
    truth = {"cutoff": CUTOFF_HZ, "gain": GAIN_DB}
    truth.update(
        {"type": float(FILTER_TYPES.index(kind)), "drive": float(drive)}
        if naive
        else {"type": kind, "drive": "on" if drive else "off"}
    )
    start = None
    if mode == "naive_middle":
        start = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    elif mode == "relaxed_sure":
        specs = switched_filter_chain(22050, 1024).params
        start = ParamCodec(specs).encode(defaults_normalized(specs))  # one-hot; the encoder clips it to 0.01 / 0.99
    fit = fit_known_answer(chain, truth, steps=steps, lr=lr, seed=seed, discrete_epsilon=discrete_epsilon, start=start)
    found_type = FILTER_TYPES[int(round(fit.found["type"]))] if naive else fit.found["type"]
    found_drive = (fit.found["drive"] >= 0.5) if naive else fit.found["drive"] == "on"
    return {
        "mode": mode,
        "truth_type": kind,
        "truth_drive": drive,
        "seed": seed,
        "found_type": found_type,
        "found_drive": bool(found_drive),
        "cutoff_hz": round(float(fit.found["cutoff"]), 1),
        "gain_db": round(float(fit.found["gain"]), 2),
        "first_loss": round(fit.first_loss, 3),
        "last_loss": round(fit.last_loss, 3),
        "seconds": round(fit.seconds, 1),
    }


def summarise(runs: list[dict]) -> dict:
    type_ok = [r["found_type"] == r["truth_type"] for r in runs]
    drive_ok = [r["found_drive"] == r["truth_drive"] for r in runs]
    both = [r for r, a, b in zip(runs, type_ok, drive_ok) if a and b]
    return {
        "runs": len(runs),
        "success_rate": round(len(both) / len(runs), 3),
        "type_rate": round(float(np.mean(type_ok)), 3),
        "toggle_rate": round(float(np.mean(drive_ok)), 3),
        "median_cutoff_error_octaves": round(
            float(np.median([abs(np.log2(r["cutoff_hz"] / CUTOFF_HZ)) for r in both])), 3
        )
        if both
        else None,
        "median_gain_error_db": round(float(np.median([abs(r["gain_db"] - GAIN_DB) for r in both])), 2)
        if both
        else None,
        "seconds_per_run": round(float(np.mean([r["seconds"] for r in runs])), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="relaxed,naive_defaults,naive_middle")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--discrete-epsilon", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    truths = [(k, d) for k in FILTER_TYPES for d in (False, True)]
    seeds = range(args.seeds)
    if args.quick:
        truths, seeds = [("bandpass", True), ("highpass", False)], range(1)
    t0 = time.perf_counter()
    results, details = {}, []
    for mode in args.modes.split(","):
        runs = [run(mode, k, d, s, args.steps, args.lr, args.discrete_epsilon) for k, d in truths for s in seeds]
        for r in runs:
            print(json.dumps(r), file=sys.stderr, flush=True)
        details += runs
        results[mode] = summarise(runs)
    print(
        json.dumps(
            {
                "task": "switched_filter known answer",
                "steps": args.steps,
                "lr": args.lr,
                "discrete_epsilon": args.discrete_epsilon,
                "truth": {"cutoff_hz": CUTOFF_HZ, "gain_db": GAIN_DB},
                "results": results,
                "runs": details,
                "wall_s": round(time.perf_counter() - t0, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
