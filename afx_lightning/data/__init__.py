"""Paired audio in, per-slot consecutive frames out: the data side of DeepAFx training."""

from .datamodule import AudioFxDataModule
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
from .writer import FilePrediction, PredictionFileWriter

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
