"""Paired audio in, per-slot consecutive frames out: the data side of DeepAFx training."""

from .datamodule import AudioFxDataModule
from .datasets import ArrayClips, Clip, DataError, DemoClips, PairedClips, PairedFolder, level_driven_trajectory, synthesize
from .streams import SlotStream, StreamStep

__all__ = [
    "ArrayClips",
    "AudioFxDataModule",
    "Clip",
    "DataError",
    "DemoClips",
    "PairedClips",
    "PairedFolder",
    "SlotStream",
    "StreamStep",
    "level_driven_trajectory",
    "synthesize",
]
