"""Paired audio in, per-slot consecutive frames out: the data side of DeepAFx training.

The Lightning parts (``AudioFxDataModule``, the prediction writer) load on first use: ``afx process`` and
``afx evaluate`` read audio through this package and should not pay Lightning's import (about 8 s on 2 cores).
"""

from __future__ import annotations

import importlib
from typing import Any

from .datasets import (
    ArrayClips,
    Clip,
    DataError,
    DemoClips,
    PairedClips,
    PairedFolder,
    level_driven_trajectory,
    synthesize,
)
from .sources import SOURCES, DataSource, make_source
from .streams import SlotStream, StreamStep, TrainStream

_LIGHTNING_PARTS = {
    "AudioFxDataModule": ".datamodule",
    "FilePrediction": ".writer",
    "PredictionFileWriter": ".writer",
}


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_PARTS:
        return getattr(importlib.import_module(_LIGHTNING_PARTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArrayClips",
    "AudioFxDataModule",
    "Clip",
    "DataError",
    "DataSource",
    "DemoClips",
    "FilePrediction",
    "PairedClips",
    "PairedFolder",
    "PredictionFileWriter",
    "SOURCES",
    "SlotStream",
    "StreamStep",
    "TrainStream",
    "level_driven_trajectory",
    "make_source",
    "synthesize",
]
