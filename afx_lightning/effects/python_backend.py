"""Plain Python/NumPy effects: a user's own DSP as a function, with state the framework can reset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .base import Effect
from .params import ParamSpec

ProcessFn = Callable[[np.ndarray, dict[str, float], dict[str, Any]], np.ndarray]


class FunctionEffect(Effect):
    """Wraps ``fn(audio, values, state) -> audio``.

    ``values`` maps parameter names to plugin values (fixed ones included); ``state`` is a dict the function
    may keep anything in between blocks and that :meth:`reset` empties. ``fn`` must be importable in a worker
    process (a module-level function), because effects are built where they run.
    """

    def __init__(
        self,
        name: str,
        fn: ProcessFn,
        params: Sequence[ParamSpec],
        sample_rate: int,
        channels: int = 1,
        latency: int = 0,
    ):
        super().__init__(name, params, sample_rate, channels, latency)
        self._fn = fn
        self._trainable_names = [p.name for p in self.trainable_params]
        self._fixed = {p.name: p.fixed_plugin_value for p in self.params if p.fixed is not None}
        self._values: dict[str, float] = {}
        self.state: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        self.state = {}
        self._values = dict(self._fixed)
        self._values.update({p.name: p.to_plugin(p.default_normalized) for p in self.trainable_params})

    def _set_values(self, values: np.ndarray) -> None:
        self._values.update(zip(self._trainable_names, values.tolist()))

    def _render(self, audio: np.ndarray) -> np.ndarray:
        out = self._fn(audio, dict(self._values), self.state)
        if not isinstance(out, np.ndarray) or out.shape != audio.shape:
            raise ValueError(
                f"effect {self.name!r}: function returned {type(out).__name__} "
                f"{getattr(out, 'shape', '')}, expected an array shaped {audio.shape}"
            )
        return out
