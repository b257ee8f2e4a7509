"""Where the audio comes from and goes: file and array sources read in blocks, the output format of a file name
(:func:`afx_lightning.data.audio_files.output_format`, shared with ``afx predict``, as is the atomic write the
:class:`~afx_lightning.inference.Processor` uses) and the checks on an output path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..data.audio_files import output_format
from ..data.datasets import DataError
from .errors import InferenceError

READ_BLOCK = 65536  # input samples per read (per channel)


@dataclass
class _Source:
    """Where the audio comes from: a fresh block iterator per pass ([C, n] float32 blocks)."""

    name: str
    sample_rate: int
    channels: int
    frames: int
    blocks: Callable[[], Iterator[np.ndarray]]


def _file_source(path: Path) -> tuple[_Source, Any]:
    if not path.exists():
        raise InferenceError(f"input {path} does not exist")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InferenceError(f"cannot read {path} as audio ({reason})") from None
    if info.frames <= 0:
        raise InferenceError(f"input {path} holds no audio samples")

    def blocks() -> Iterator[np.ndarray]:
        with sf.SoundFile(str(path)) as f:
            while True:
                data = f.read(READ_BLOCK, dtype="float32", always_2d=True)
                if not len(data):
                    return
                yield data.T

    return _Source(str(path), int(info.samplerate), int(info.channels), int(info.frames), blocks), info


def _array_source(audio: np.ndarray, sample_rate: int) -> _Source:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise InferenceError(f"audio must be shaped [channels, samples] with samples > 0, got {audio.shape}")
    if audio.shape[0] > audio.shape[1]:  # e.g. soundfile's [samples, channels]: one plugin per "channel" otherwise
        raise InferenceError(
            f"audio must be shaped [channels, samples], got {audio.shape}: more channels than samples "
            "(transposed? soundfile reads [samples, channels]: pass audio.T)"
        )

    def blocks() -> Iterator[np.ndarray]:
        for i in range(0, audio.shape[1], READ_BLOCK):
            yield audio[:, i : i + READ_BLOCK]

    return _Source("<array>", int(sample_rate), audio.shape[0], audio.shape[1], blocks)


def _output_format(path: Path, input_subtype: str | None) -> tuple[str, str]:
    """:func:`~afx_lightning.data.audio_files.output_format`, its one-line error as an :class:`InferenceError`."""
    try:
        return output_format(path, input_subtype)
    except DataError as exc:
        raise InferenceError(str(exc)) from None


def _check_output(path: Path, in_path: Path | None, overwrite: bool, what: str = "output") -> None:
    if in_path is not None and path.resolve() == in_path.resolve():
        raise InferenceError(f"{what} {path} is the input file; choose another name")
    if path.exists() and not overwrite:
        raise InferenceError(f"{what} {path} already exists; pass --overwrite (overwrite=True) to replace it")
    if path.is_dir():
        raise InferenceError(f"{what} {path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InferenceError(f"cannot write {what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InferenceError(f"cannot write {what} {path}: permission denied")
