"""``afx predict``: which files to process, and the Lightning callback that writes what ``predict_step`` returns.

``DeepAFx.predict_step`` processes one input file (as ``afx process`` does) and returns a :class:`FilePrediction`
holding the processed audio; :class:`PredictionFileWriter` (a ``BasePredictionWriter``, added by ``afx predict``
by default) writes it under the input's name into ``data.predict_output_dir``, atomically (a temporary file in
the same folder, then renamed), in the input's format family, and then drops the audio so the predictions
Lightning keeps stay small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from .audio_files import write_audio_atomic
from .datasets import DataError


@dataclass(frozen=True)
class PredictOptions:
    """The data module's ``predict_*`` options. ``smoothing_hz`` None: the ``Processor``'s own default."""

    files: Sequence[str] | None = None
    output_dir: str | None = None
    overwrite: bool = False
    smoothing_hz: float | None = None

    def check(self) -> None:
        """One-line errors for a predict run that cannot write its outputs (before any model is loaded)."""
        if not self.files:
            raise DataError(
                "data.predict_files is empty: list the audio files to process (--data.predict_files [a.wav,b.wav])"
            )
        if self.output_dir is None:
            raise DataError("data.predict_output_dir is not set: name an existing folder for the processed files")
        out = Path(self.output_dir).expanduser()
        if not out.is_dir():
            raise DataError(f"data.predict_output_dir {out} does not exist (or is not a folder)")
        seen: dict[str, str] = {}
        for f in self.files:
            if not Path(f).expanduser().is_file():
                raise DataError(f"data.predict_files: {f} does not exist")
            target = self.output_path(f)
            if target.name in seen:
                raise DataError(f"data.predict_files: {seen[target.name]} and {f} would both be written to {target}")
            seen[target.name] = f
            if target.resolve() == Path(f).expanduser().resolve():
                raise DataError(f"data.predict_files: {f} lies in data.predict_output_dir and would be overwritten")
            if target.exists() and not self.overwrite:
                raise DataError(f"output {target} already exists; set data.predict_overwrite true to replace it")

    def output_path(self, path: str) -> Path:
        if self.output_dir is None:
            raise DataError("data.predict_output_dir is not set: name an existing folder for the processed files")
        return Path(self.output_dir).expanduser() / Path(path).name

    def processor_args(self) -> dict[str, Any]:
        """Keyword arguments for ``inference.Processor`` (only those set here: its defaults stay its own)."""
        return {} if self.smoothing_hz is None else {"smoothing_hz": float(self.smoothing_hz)}


@dataclass
class FilePrediction:
    """One processed file, as ``predict_step`` returns it; ``audio`` is None once the writer has written it."""

    input: str
    audio: np.ndarray | None  # float32 (channels, samples) at the input's rate
    sample_rate: int
    subtype: str | None  # the input's soundfile subtype: the output keeps its family (PCM_16, FLOAT, ...)
    seconds: float = 0.0
    dropped_frames: int = 0
    wall_s: float = 0.0
    input_gain_db: float | None = None
    preprocessing: str = ""
    output: str | None = None
    clipped_samples: int = 0
    faults: dict = field(default_factory=dict)


class PredictionFileWriter(BasePredictionWriter):
    """Writes each :class:`FilePrediction` as it comes (``write_interval="batch"``).

    Args:
        output_dir: where the files go; default: the data module's ``predict_output_dir``.
        overwrite: replace existing files; default: the data module's ``predict_overwrite``.
    """

    def __init__(self, output_dir: str | None = None, overwrite: bool | None = None):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.overwrite = overwrite

    def _options(self, trainer: Any) -> PredictOptions:
        options = getattr(getattr(trainer, "datamodule", None), "predict_options", None)
        options = options if isinstance(options, PredictOptions) else PredictOptions()
        return PredictOptions(
            options.files,
            self.output_dir if self.output_dir is not None else options.output_dir,
            options.overwrite if self.overwrite is None else bool(self.overwrite),
            options.smoothing_hz,
        )

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(prediction, FilePrediction) or prediction.audio is None:
            return
        options = self._options(trainer)
        path = options.output_path(prediction.input)
        prediction.clipped_samples = write_audio_atomic(
            path, prediction.audio, prediction.sample_rate, prediction.subtype, overwrite=options.overwrite
        )
        prediction.output = str(path)
        prediction.audio = None  # written: trainer.predict's returned list keeps the record, not the audio
