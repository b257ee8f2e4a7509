"""Deep encoders: audio context ``[B, C, T]`` -> plugin parameters ``[B, P]`` in (0, 1).

Every encoder subclasses :class:`ParameterEncoder`: constructor ``(num_params, sample_rate=22050, ...)`` with typed
arguments (so LightningCLI can expose them), the shared :class:`LogMelFrontend`, a dense + sigmoid head and
:meth:`ParameterEncoder.init_output_bias` to start at given parameter values.
"""

from .base import ParameterEncoder, count_parameters
from .frontend import LogMelFrontend
from .inception import InceptionEncoder
from .mobilenet import MobileNetV2Encoder
from .small import SmallEncoder

__all__ = [
    "InceptionEncoder",
    "LogMelFrontend",
    "MobileNetV2Encoder",
    "ParameterEncoder",
    "SmallEncoder",
    "count_parameters",
]
