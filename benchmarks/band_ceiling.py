"""How far can a chain with B frequency bands get on a fidelity task, if its per-frame settings were perfect?

Why: before training a chain on a task, know whether the chain's resolution can do the job at all. This scores an
*ideal per-frame band gain*: for every 1024-sample frame (the control rate of training) and every band, the gain
(at most 0 dB, an attenuator like a gate or a cut) that gives the output the target's energy in that band. No
chain can do better with that many bands at that rate, so if this ceiling does not beat the identity, no training
will. Computed in the STFT domain (2048-point Hann, hop 512, rectangular band masks), scored with ``afx
evaluate``'s metrics (per-coefficient d_MFCC, MR-STFT) on the test split of a set built by ``fidelity_data.py``.

Measured on the breath set (issue 11): broadband (1 band) and 4 bands, the resolution of ``pb_mb_gate``, stay
at the identity's d_MFCC however they are driven; octave bands take it 32% lower, 1/3-octave bands 75%::

    python benchmarks/band_ceiling.py --task breath

Output: one JSON object, ``{"benchmark": "band_ceiling", "task": T, "identity": {...}, "bands": {name: {...}}}``,
test-split means.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fidelity_data  # noqa: E402

from afx_lightning.metrics import mfcc_distance, multi_resolution_stft_distance  # noqa: E402

N_FFT, HOP, FRAME = 2048, 512, 1024
#: band edges in Hz: the gate's default crossovers, octaves and 1/3 octaves (ISO centres' edges) up to 10 kHz
BAND_EDGES: dict[str, list[float]] = {
    "1 band": [],
    "4 bands (pb_mb_gate defaults)": [55.0, 949.0, 5477.0],
    "8 octave bands": [88.0, 177.0, 355.0, 710.0, 1420.0, 2840.0, 5680.0],
    "32 third-octave bands": [float(f) for f in np.geomspace(56.0, 10000.0, 31)],
}


def ideal_band_gain(x: np.ndarray, y: np.ndarray, edges: Sequence[float], sample_rate: int) -> np.ndarray:
    """``x`` with each frame's band energies cut to ``y``'s (never boosted)."""
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    spec = torch.stft(torch.from_numpy(x.astype(np.float64)), N_FFT, HOP, window=window, return_complex=True)
    ref = torch.stft(torch.from_numpy(y.astype(np.float64)), N_FFT, HOP, window=window, return_complex=True)
    band = torch.from_numpy(np.digitize(np.fft.rfftfreq(N_FFT, 1.0 / sample_rate), edges))
    per_frame = FRAME // HOP
    gain = torch.ones(spec.shape, dtype=torch.float64)
    for start in range(0, spec.shape[1], per_frame):
        frames = slice(start, start + per_frame)
        for b in range(len(edges) + 1):
            rows = band == b
            have = spec[rows, frames].abs().pow(2).sum() + 1e-20
            want = ref[rows, frames].abs().pow(2).sum() + 1e-20
            gain[rows, frames] = min(float(torch.sqrt(want / have)), 1.0)
    out = torch.istft(spec * gain, N_FFT, HOP, window=window, length=x.size)
    return out.numpy().astype(np.float32)


def scores(out: np.ndarray, target: np.ndarray, sample_rate: int) -> dict[str, float]:
    pred, tgt = torch.from_numpy(out)[None], torch.from_numpy(target)[None]
    return {
        "d_mfcc": float(mfcc_distance(pred, tgt, sample_rate, over="coefficients")[0]),
        "mrstft": float(multi_resolution_stft_distance(pred, tgt)[0]),
    }


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=fidelity_data.TASKS, default="breath")
    parser.add_argument("--split", choices=fidelity_data.SPLITS, default="test")
    parser.add_argument("--data-dir", type=Path, default=fidelity_data.DEFAULT_ROOT)
    parser.add_argument("--quick", action="store_true", help="the tiny set the tests build")
    args = parser.parse_args(argv)

    data = fidelity_data.ensure(args.task, args.data_dir, quick=args.quick)
    inputs = sorted((data / args.split / "input").glob("*.wav"))
    if not inputs:
        raise SystemExit(f"band_ceiling: no WAV files in {data / args.split / 'input'}")
    identity: list[dict[str, float]] = []
    bands: dict[str, list[dict[str, float]]] = {name: [] for name in BAND_EDGES}
    for path in inputs:
        x, sample_rate = sf.read(path, dtype="float32")
        y, _ = sf.read(data / args.split / "target" / path.name, dtype="float32")
        identity.append(scores(x, y, sample_rate))
        for name, edges in BAND_EDGES.items():
            bands[name].append(scores(ideal_band_gain(x, y, edges, sample_rate), y, sample_rate))
    result = {
        "benchmark": "band_ceiling",
        "task": args.task,
        "split": args.split,
        "files": len(inputs),
        "identity": mean(identity),
        "bands": {name: mean(rows) for name, rows in bands.items()},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
