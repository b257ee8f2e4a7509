"""``afx evaluate``: score a trained model on paired files, next to the identity baseline.

For each input/target pair the model's output and the untouched input are scored against the target with the
paper's d_MFCC (per coefficient over time, as Table 1), a multi-resolution STFT distance and the loudness
difference in LU. A user sees at once whether the model helped.

The model's output is what ``afx process`` writes: its input preprocessed as in training (high-pass, loudness
normalisation; the gain is reported per file), the chain's latency compensated, so it is scored against the
target file as it is, on the same span as the identity baseline (the input file as it is).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .constants import PREDICT_SMOOTHING_HZ
from .data.datasets import DataError, read_audio
from .data.preprocess import resample
from .errors import AfxError
from .metrics import loudness_lufs, mfcc_distance, multi_resolution_stft_distance

Render = Callable[[np.ndarray, int], np.ndarray]  # (audio [C, T], sample rate) -> output [C, T] at that rate


def score(output: np.ndarray, target: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Metrics of ``output`` against ``target`` (both [C, T] at ``sample_rate``; trimmed to the shorter)."""
    n = min(output.shape[-1], target.shape[-1])
    out = torch.from_numpy(np.ascontiguousarray(output[..., :n], dtype=np.float32)).mean(0, keepdim=True)
    tgt = torch.from_numpy(np.ascontiguousarray(target[..., :n], dtype=np.float32)).mean(0, keepdim=True)
    return {
        "d_mfcc": float(mfcc_distance(out, tgt, sample_rate, over="coefficients")[0]),
        "mrstft": float(multi_resolution_stft_distance(out, tgt)[0]),
        "loudness_diff_lu": abs(
            loudness_lufs(out[0].numpy(), sample_rate) - loudness_lufs(tgt[0].numpy(), sample_rate)
        ),
    }


@dataclass
class FileResult:
    name: str
    seconds: float
    model: dict[str, float]
    identity: dict[str, float]
    input_gain_db: float | None = None  # loudness-normalisation gain the model's input got (None: none)


@dataclass
class EvaluationReport:
    files: list[FileResult] = field(default_factory=list)
    preprocessing: str = "none"  # what the model's inputs went through (Preprocessing.describe)

    def mean(self, which: str) -> dict[str, float]:
        keys = self.files[0].model.keys() if self.files else []
        return {k: float(np.nanmean([getattr(f, which)[k] for f in self.files])) for k in keys}

    def table(self) -> str:
        header = f"{'file':<28} {'d_MFCC':>8} {'(ident.)':>9} {'MR-STFT':>8} {'(ident.)':>9} {'dLU':>6} {'(ident.)':>9}"
        rows = [header, "-" * len(header)]

        def line(name: str, m: dict[str, float], i: dict[str, float]) -> str:
            return (
                f"{name[:28]:<28} {m['d_mfcc']:8.4f} {i['d_mfcc']:9.4f} {m['mrstft']:8.3f} {i['mrstft']:9.3f} "
                f"{m['loudness_diff_lu']:6.2f} {i['loudness_diff_lu']:9.2f}"
            )

        rows += [line(f.name, f.model, f.identity) for f in self.files]
        if self.files:
            rows += ["-" * len(header), line("mean", self.mean("model"), self.mean("identity"))]
        if self.preprocessing != "none":
            rows.append(f"model inputs preprocessed as in training: {self.preprocessing}")
        gains = [f"{f.name} {f.input_gain_db:+.1f}" for f in self.files if f.input_gain_db is not None]
        if gains:
            rows.append("input loudness gain (dB): " + ", ".join(gains))
        return "\n".join(rows)

    def to_json(self) -> dict:
        return {
            "files": [asdict(f) for f in self.files],
            "mean": {"model": self.mean("model"), "identity": self.mean("identity")},
            "preprocessing": self.preprocessing,
            "note": "d_mfcc: per-coefficient cosine distance (official DeepAFx/Table 1); mrstft: spectral "
            "convergence + log-magnitude L1 at 512/1024/2048; loudness_diff_lu: |LUFS(x) - LUFS(target)|",
        }


def paired_files(
    root: Path, split: str | None, input_dir: str = "input", target_dir: str = "target"
) -> list[tuple[Path, Path]]:
    base = root / split if split and (root / split).is_dir() else root
    inputs = sorted((base / input_dir).glob("*.wav"))
    if not inputs:
        raise DataError(f"no WAV files in {base / input_dir} (expected <root>/[<split>/]{input_dir}/*.wav)")
    pairs = []
    for path in inputs:
        target = base / target_dir / path.name
        if not target.is_file():
            raise DataError(f"{path}: no target file {target}")
        pairs.append((path, target))
    return pairs


def evaluate(
    pairs: Iterable[tuple[Path, Path]],
    render: Render,
    input_gain_db: Callable[[], float | None] | None = None,
    preprocessing: str = "none",
) -> EvaluationReport:
    """Score ``render`` on each pair; ``input_gain_db`` (called after each render) tells the gain it applied."""
    report = EvaluationReport(preprocessing=preprocessing)
    for input_path, target_path in pairs:
        audio, rate = read_audio(input_path)
        target, target_rate = read_audio(target_path)
        if target_rate != rate:
            target = np.stack([resample(channel, target_rate, rate) for channel in target])
        output = render(audio, rate)
        report.files.append(
            FileResult(
                input_path.name,
                audio.shape[-1] / rate,
                score(output, target, rate),
                score(audio, target, rate),
                input_gain_db() if input_gain_db is not None else None,
            )
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="afx evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="trained checkpoint")
    parser.add_argument("--data", required=True, type=Path, help="folder with [<split>/]input/*.wav and target/*.wav")
    parser.add_argument("--split", default="test", help="sub-folder of --data to score (if it exists)")
    parser.add_argument("--json", type=Path, help="also write the per-file and mean scores here")
    parser.add_argument(
        "--smoothing-hz",
        type=float,
        default=None,
        help=f"automation low-pass cutoff (default: the checkpoint's model.smoothing_hz, {PREDICT_SMOOTHING_HZ:g} Hz "
        "unless its recipe set another; 0: none)",
    )
    args = parser.parse_args(argv)
    from .inference import Processor, load_inference_model

    try:
        pairs = paired_files(args.data, args.split)
        with Processor(load_inference_model(args.ckpt), smoothing_hz=args.smoothing_hz) as processor:
            report = evaluate(
                pairs,
                lambda audio, rate: processor.process_array(audio, rate)[0],
                input_gain_db=lambda: processor.last_stats.input_gain_db,
                preprocessing=processor.preprocessing.describe(),
            )
    except AfxError as exc:
        print(f"afx evaluate: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2, default=_json_number))
    return 0


def _json_number(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value
