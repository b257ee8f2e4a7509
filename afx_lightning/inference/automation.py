"""The predicted θ curves: zero-phase smoothing, and export as CSV / JSON in normalised and plugin units."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..effects.params import ParamSpec
from .errors import InferenceError, PathLike


def smooth_automation(theta: np.ndarray, frame_rate: float, cutoff_hz: float | None, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth low-pass of each θ curve (``filtfilt`` over frames), then clip to [0, 1].

    ``cutoff_hz`` <= 0 / None, or at or above the frame rate's Nyquist, disables smoothing. Short files get a
    shorter ``padlen`` (filtfilt needs more frames than it); a single frame is returned as is.
    """
    from scipy.signal import butter, filtfilt

    theta = np.asarray(theta, dtype=np.float64)
    frames = theta.shape[0]
    if not cutoff_hz or cutoff_hz <= 0 or frames < 2 or cutoff_hz >= frame_rate / 2:
        return np.clip(theta, 0.0, 1.0).astype(np.float32)
    b, a = butter(order, cutoff_hz / (frame_rate / 2))
    padlen = min(3 * max(len(a), len(b)), frames - 1)
    return np.clip(filtfilt(b, a, theta, axis=0, padlen=padlen), 0.0, 1.0).astype(np.float32)


def max_step(theta: np.ndarray) -> float:
    """Largest frame-to-frame change of any parameter curve (normalised units)."""
    theta = np.asarray(theta)
    return float(np.abs(np.diff(theta, axis=0)).max()) if theta.shape[0] > 1 else 0.0


@dataclass
class Automation:
    """Per-frame parameters: ``normalized`` [frames, P] in [0, 1] (smoothed), ``raw`` as predicted."""

    params: tuple[ParamSpec, ...]
    normalized: np.ndarray
    frame_rate: float
    raw: np.ndarray | None = None
    input_gain_db: float | None = None  # loudness gain the input got before prediction (render applies it too)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def times(self) -> np.ndarray:
        """Start time of each frame, in seconds of the input."""
        return np.arange(len(self.normalized)) / self.frame_rate

    @property
    def values(self) -> np.ndarray:
        """In plugin units as the ranges are written (``ParamSpec.to_display``: dB stays dB)."""
        return np.array(
            [[p.to_display(u) for p, u in zip(self.params, row)] for row in self.normalized], dtype=np.float64
        ).reshape(len(self.normalized), len(self.params))

    def save(self, path: PathLike) -> None:
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            values = self.values
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["time_s", *self.names, *[f"{p.name}[{p.unit}]" for p in self.params]])
                for t, u, v in zip(self.times, self.normalized, values):
                    w.writerow([f"{t:.6f}", *[f"{x:.6g}" for x in u], *[f"{x:.6g}" for x in v]])
        elif suffix == ".json":
            data = {
                "frame_rate": self.frame_rate,
                "params": [
                    {"name": p.name, "unit": p.unit, "min": p.min, "max": p.max, "scale": p.scale.value}
                    for p in self.params
                ],
                "normalized": np.round(self.normalized.astype(np.float64), 6).tolist(),
                "values": np.round(self.values, 6).tolist(),
            }
            path.write_text(json.dumps(data))
        else:
            raise InferenceError(f"automation file {path} must end in .csv or .json")
