"""The black-box layer: SPSA gradients through real plugins running in a pool of worker processes.

Importing this package stays torch-free (worker processes import ``.worker`` through it); the torch parts
load on first access.
"""

from .config import FxConfig
from .messages import FaultKind
from .pool import BuildStats, FaultEvent, FaultStats, FxWorkerPool, RenderResult, SlotGroup, default_num_workers

__all__ = [
    "BlackBoxLayer",
    "BuildStats",
    "ChainInfo",
    "FaultEvent",
    "FaultKind",
    "FaultStats",
    "FxConfig",
    "FxWorkerPool",
    "GradientEstimator",
    "PerturbationStream",
    "RenderResult",
    "SlotGroup",
    "default_num_workers",
    "describe_chain",
]


def __getattr__(name):
    if name in ("BlackBoxLayer", "ChainInfo", "PerturbationStream", "describe_chain"):
        from . import layer

        return getattr(layer, name)
    if name == "GradientEstimator":
        from .gradients import GradientEstimator

        return GradientEstimator
    raise AttributeError(name)
