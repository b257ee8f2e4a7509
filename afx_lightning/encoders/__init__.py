"""Deep encoders: audio context ``[B, C, T]`` -> plugin parameters ``[B, P]`` in (0, 1).

Every encoder subclasses :class:`ParameterEncoder`: constructor ``(num_params, sample_rate=22050, ...)`` with typed
arguments (so LightningCLI can expose them), the shared :class:`LogMelFrontend`, a dense + sigmoid head and
:meth:`ParameterEncoder.init_output_bias` to start at given parameter values.
"""

from .base import ParameterEncoder, build_encoder, count_parameters
from .frontend import LogMelFrontend, LogMelStream
from .inception import InceptionEncoder
from .mobilenet import MobileNetV2Encoder
from .small import SmallEncoder
from .tcn import TemporalConvEncoder

__all__ = [
    "ENCODER_GROUP",
    "InceptionEncoder",
    "LogMelFrontend",
    "LogMelStream",
    "MobileNetV2Encoder",
    "ParameterEncoder",
    "SmallEncoder",
    "TemporalConvEncoder",
    "build_encoder",
    "count_parameters",
    "declared_encoders",
]

# Third-party encoders become loadable from checkpoints by declaring themselves, as chains do::
#
#     [project.entry-points."afx_lightning.encoders"]
#     my_encoder = "my_package.encoders:MyEncoder"
ENCODER_GROUP = "afx_lightning.encoders"

_BUILTIN = (InceptionEncoder, MobileNetV2Encoder, SmallEncoder, TemporalConvEncoder)


def declared_encoders() -> dict:
    """``class_path`` -> ``"module:attr"`` of every encoder a checkpoint may name; nothing is imported.

    The shipped encoders answer to their public path (``afx_lightning.encoders.SmallEncoder``) and to the one a
    checkpoint records (``afx_lightning.encoders.small.SmallEncoder``); an installed package's entry point
    ``"pkg.mod:Cls"`` answers to ``pkg.mod.Cls``. A checkpoint naming anything else is refused before import.
    """
    from importlib.metadata import entry_points

    found = {}
    for cls in _BUILTIN:
        target = f"{cls.__module__}:{cls.__qualname__}"
        found[f"{__name__}.{cls.__qualname__}"] = target
        found[f"{cls.__module__}.{cls.__qualname__}"] = target
    for ep in entry_points(group=ENCODER_GROUP):
        if ep.module and ep.attr:
            found.setdefault(f"{ep.module}.{ep.attr}", f"{ep.module}:{ep.attr}")
    return found
