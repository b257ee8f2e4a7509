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
    python benchmarks/band_ceiling.py --task breath --learn-steps 800   # + an encoder trained onto the octave cuts

``--learn-steps N`` asks whether the encoder can learn the cuts at all: ``SmallEncoder(centre=True)`` trained by
backprop (no plugin, no SPSA) onto the training split's ideal octave cuts, its predicted cuts scored on the split
(breath, 800 steps: d_MFCC / MR-STFT 0.0514 / 0.414 on test against identity's 0.0504 / 0.706; another seed
0.0459 / 0.412). A training run that stays far above this is limited by its gradient or its loss, not by the
encoder or the data.

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
CONTEXT = 40960  # the encoder's context with --learn-steps (the recipes' 40 960 samples)
FLOOR_DB = -36.0  # deepest cut the learned gains reach (pb_octave_eq's range)
#: band edges in Hz: the gate's default crossovers, octaves and 1/3 octaves (ISO centres' edges) up to 10 kHz
BAND_EDGES: dict[str, list[float]] = {
    "1 band": [],
    "4 bands (pb_mb_gate defaults)": [55.0, 949.0, 5477.0],
    "8 octave bands": [88.0, 177.0, 355.0, 710.0, 1420.0, 2840.0, 5680.0],
    "32 third-octave bands": [float(f) for f in np.geomspace(56.0, 10000.0, 31)],
}


def _stft(x: np.ndarray) -> torch.Tensor:
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    return torch.stft(torch.from_numpy(x.astype(np.float64)), N_FFT, HOP, window=window, return_complex=True)


def _bands(edges: Sequence[float], sample_rate: int) -> torch.Tensor:
    return torch.from_numpy(np.digitize(np.fft.rfftfreq(N_FFT, 1.0 / sample_rate), edges))


def _frame_count(samples: int) -> int:
    """Frames of FRAME samples covering the STFT's ``1 + samples // HOP`` columns (centred STFT)."""
    return -(-(1 + samples // HOP) // (FRAME // HOP))


def ideal_gains_db(
    x: np.ndarray, y: np.ndarray, edges: Sequence[float], sample_rate: int, floor_db: float = -np.inf
) -> np.ndarray:
    """[frames, bands]: per 1024-sample frame and band, the cut (dB, <= 0, at least ``floor_db``) that gives ``x``
    the energy of ``y``."""
    spec, ref, band = _stft(x), _stft(y), _bands(edges, sample_rate)
    per_frame = FRAME // HOP
    frames = _frame_count(x.size)
    gains = np.zeros((frames, len(edges) + 1))
    for f in range(frames):
        cols = slice(f * per_frame, (f + 1) * per_frame)
        for b in range(len(edges) + 1):
            have = float(spec[band == b, cols].abs().pow(2).sum()) + 1e-20
            want = float(ref[band == b, cols].abs().pow(2).sum()) + 1e-20
            gains[f, b] = np.clip(10.0 * np.log10(want / have), floor_db, 0.0)
    return gains


def apply_gains_db(x: np.ndarray, gains_db: np.ndarray, edges: Sequence[float], sample_rate: int) -> np.ndarray:
    """``x`` with each frame's bands scaled by ``gains_db`` [frames, bands] (rectangular masks in the STFT)."""
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    spec, band = _stft(x), _bands(edges, sample_rate)
    per_frame = FRAME // HOP
    mask = torch.from_numpy(10.0 ** (gains_db / 20.0))[:, band].T  # [freq, frames]
    mask = mask.repeat_interleave(per_frame, dim=1)[:, : spec.shape[1]]
    if mask.shape[1] < spec.shape[1]:
        mask = torch.cat([mask, mask[:, -1:].expand(-1, spec.shape[1] - mask.shape[1])], dim=1)
    out = torch.istft(spec * mask, N_FFT, HOP, window=window, length=x.size)
    return out.numpy().astype(np.float32)


def ideal_band_gain(x: np.ndarray, y: np.ndarray, edges: Sequence[float], sample_rate: int) -> np.ndarray:
    """``x`` with each frame's band energies cut to ``y``'s (never boosted)."""
    return apply_gains_db(x, ideal_gains_db(x, y, edges, sample_rate), edges, sample_rate)


def _contexts(x: np.ndarray, frames: int) -> np.ndarray:
    """[frames, CONTEXT] windows centred on each frame, zero-padded at the ends (as the data module centres them)."""
    padded = np.pad(x, (CONTEXT // 2, CONTEXT // 2 + max(0, frames * FRAME - x.size)))
    return np.stack([padded[f * FRAME + FRAME // 2 : f * FRAME + FRAME // 2 + CONTEXT] for f in range(frames)])


def learned_band_gains(
    pairs: list[tuple[np.ndarray, np.ndarray]], edges: Sequence[float], sample_rate: int, steps: int, seed: int = 0
):
    """Train the CPU encoder (``SmallEncoder(centre=True)``) by backprop onto the ideal cuts of the training
    ``pairs`` (MSE in dB; no plugin, no SPSA): can an encoder tell the frames and bands to cut from the audio?
    Returns a function ``x -> gains_db``."""
    from afx_lightning.encoders import SmallEncoder

    torch.manual_seed(seed)
    targets = [ideal_gains_db(x, y, edges, sample_rate, FLOOR_DB) for x, y in pairs]
    contexts = torch.from_numpy(np.concatenate([_contexts(x, len(g)) for (x, _), g in zip(pairs, targets)]))[:, None]
    gains = torch.from_numpy(np.concatenate(targets)).float()
    encoder = SmallEncoder(len(edges) + 1, sample_rate=sample_rate, centre=True)
    optimiser = torch.optim.Adam(encoder.parameters(), 2e-3)
    encoder.train()
    for _ in range(steps):
        rows = torch.randint(len(contexts), (16,))
        predicted = FLOOR_DB * (1.0 - encoder(contexts[rows]))
        loss = ((predicted - gains[rows]) / FLOOR_DB).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    encoder.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        frames = _frame_count(x.size)
        with torch.no_grad():
            return (FLOOR_DB * (1.0 - encoder(torch.from_numpy(_contexts(x, frames))[:, None]))).double().numpy()

    return predict


LEARNED_BANDS = "8 octave bands"  # what --learn-steps trains onto (pb_octave_eq's resolution)


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
    parser.add_argument(
        "--learn-steps",
        type=int,
        default=0,
        help="also train SmallEncoder by backprop onto the training split's ideal octave cuts for this many steps "
        "and score its predicted cuts (0: skip)",
    )
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
    learned = None
    if args.learn_steps > 0:
        edges = BAND_EDGES[LEARNED_BANDS]
        train = [
            (sf.read(p, dtype="float32")[0], sf.read(data / "train" / "target" / p.name, dtype="float32")[0])
            for p in sorted((data / "train" / "input").glob("*.wav"))
        ]
        predict = learned_band_gains(train, edges, sample_rate, args.learn_steps)
        rows = []
        for path in inputs:
            x, _ = sf.read(path, dtype="float32")
            y, _ = sf.read(data / args.split / "target" / path.name, dtype="float32")
            rows.append(scores(apply_gains_db(x, predict(x), edges, sample_rate), y, sample_rate))
        learned = {"bands": LEARNED_BANDS, "steps": args.learn_steps, **mean(rows)}
    result = {
        "benchmark": "band_ceiling",
        "task": args.task,
        "split": args.split,
        "files": len(inputs),
        "identity": mean(identity),
        "bands": {name: mean(rows) for name, rows in bands.items()},
    }
    if learned is not None:
        result["learned_by_backprop"] = learned
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
