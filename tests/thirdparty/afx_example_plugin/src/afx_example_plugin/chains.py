"""A pedalboard chain of the package's own: a tilt EQ into a soft drive."""

import pedalboard

from afx_lightning.effects import Chain, ParamSpec, PedalboardEffect, PedalboardGraph, Scale, attribute_setter

PARAMS = (
    ParamSpec("tilt_freq", 200.0, 4000.0, 1000.0, Scale.LOG, "Hz"),
    ParamSpec("tilt_gain", -12.0, 12.0, 0.0, unit="dB"),
    ParamSpec("drive", 0.0, 24.0, 6.0, unit="dB"),
)


def tilt_drive(sample_rate: int, block_size: int) -> Chain:
    def build() -> PedalboardGraph:
        shelf = pedalboard.HighShelfFilter()
        drive = pedalboard.Distortion()
        setters = {
            "tilt_freq": attribute_setter(shelf, "cutoff_frequency_hz"),
            "tilt_gain": attribute_setter(shelf, "gain_db"),
            "drive": attribute_setter(drive, "drive_db"),
        }
        return PedalboardGraph(pedalboard.Pedalboard([shelf, drive]), setters)

    return Chain([PedalboardEffect("tilt_drive", build, PARAMS, sample_rate, block_size)], name="example_tilt_drive")
