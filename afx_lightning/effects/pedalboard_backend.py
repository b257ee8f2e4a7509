"""pedalboard backend: built-in plugins, graphs of them, and VST3/AU files.

A pedalboard effect is described by a *builder* that returns the plugin (or graph) and one setter per
trainable parameter, because a single named parameter may drive several plugins of a graph (a crossover
frequency sets two filters). The builder runs again on :meth:`reset`, which is the only reset that is
guaranteed to clear every kind of state (``Plugin.reset`` is up to each plugin).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import Effect, PluginUnavailable
from .params import ParamSpec

Setter = Callable[[float], None]


def _silence_fd2() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):  # no stderr, or already closed
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


@contextlib.contextmanager
def plugin_teardown_silenced() -> Iterator[None]:
    """fd 2 (native code's prints included) goes to a scratch file for the block, which is dropped, unless the
    block raises: then it is replayed, so a plugin's own diagnostics are not lost with the teardown lines."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            scratch.seek(0)
            os.write(2, scratch.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_EXIT_SILENCED = False


def silence_plugin_teardown() -> None:
    """Send fd 2 to /dev/null once Python's exit handlers have run, in a process that hosts plugin files.

    DPF plugins (zam-plugins) print two "DPF warning: asked to delete component ..." lines when their VST3
    component is destroyed: when the effect drops it (:func:`_destroy`), at a garbage collection
    (:func:`plugin_file_effect` collects right after each load) or, for instances still alive, at process exit,
    after Python's last exit handler (here). Exit handlers registered after the first plugin load (W&B's, for one)
    still print; workers end with ``os._exit`` and never get there.
    """
    global _EXIT_SILENCED
    if not _EXIT_SILENCED:
        atexit.register(_silence_fd2)
        _EXIT_SILENCED = True


@dataclass
class PedalboardGraph:
    """A built plugin (or graph) plus a setter per parameter name (trainable and fixed)."""

    plugin: object
    setters: Mapping[str, Setter] = field(default_factory=dict)


def attribute_setter(plugin: object, attribute: str) -> Setter:
    """A setter that writes one attribute of one plugin (e.g. ``threshold_db``)."""

    def set_value(value: float) -> None:
        setattr(plugin, attribute, value)

    return set_value


def fan_out(*setters: Setter) -> Setter:
    """One parameter driving several plugins (e.g. the two filters of a band split)."""

    def set_value(value: float) -> None:
        for s in setters:
            s(value)

    return set_value


class PedalboardEffect(Effect):
    """A pedalboard plugin graph streamed block by block with ``reset=False``.

    pedalboard silently re-prepares (and so clears) a plugin when a block is longer than any earlier one, so
    every fresh graph is primed with one silent block of ``block_size`` and then reset.

    Latency. pedalboard compensates a plugin's reported latency even when streaming: after a reset it withholds
    the first ``latency`` output samples, so the first block(s) come back short (ZaMaximX2: 544 of 1024 samples).
    Blocks here always keep their length: withheld samples are emitted as leading zeros, so the stream comes out
    delayed by exactly the plugin's latency, as a host without delay compensation would deliver it. Declare that
    delay as ``latency`` (the loss widens its alignment search by it).

    ``plugin_channels``: the channel count the plugin's main bus needs, when it differs from ``channels``. Only a
    mono effect over a multi-channel plugin is supported ("dual mono"): the block is copied to every plugin
    channel and the plugin's outputs are averaged (identical for linked stereo processors fed identical inputs).
    """

    def __init__(
        self,
        name: str,
        build: Callable[[], PedalboardGraph],
        params: Sequence[ParamSpec],
        sample_rate: int,
        block_size: int,
        channels: int = 1,
        latency: int = 0,
        plugin_channels: int | None = None,
    ):
        super().__init__(name, params, sample_rate, channels, latency)
        self.block_size = int(block_size)
        self.plugin_channels = int(plugin_channels or channels)
        if self.plugin_channels != self.channels and self.channels != 1:
            raise ValueError(
                f"effect {name!r}: a {self.channels}-channel effect cannot drive a {self.plugin_channels}-channel "
                "plugin (only mono effects are spread over several plugin channels)"
            )
        self._build = build
        self._graph: PedalboardGraph | None = None
        self._pending = np.zeros((self.plugin_channels, 0), np.float32)
        self.reset()

    def reset(self) -> None:
        graph = self._build()
        missing = [p.name for p in self.params if p.name not in graph.setters]
        if missing:
            _destroy(graph)
            raise ValueError(f"effect {self.name!r}: builder gives no setter for parameters {missing}")
        self.close()
        self._graph = graph
        self._setters = [graph.setters[p.name] for p in self.trainable_params]
        for p in self.params:
            if p.fixed is not None:
                graph.setters[p.name](p.fixed_plugin_value)
            else:
                graph.setters[p.name](p.to_plugin(p.default_normalized))
        plugin = graph.plugin
        plugin.process(np.zeros((self.plugin_channels, self.block_size), np.float32), self.sample_rate, reset=False)
        plugin.reset()
        self._pending = np.zeros((self.plugin_channels, 0), np.float32)

    def close(self) -> None:
        """Release the plugin instance (workers close the instances they drop)."""
        graph, self._graph, self._setters = self._graph, None, []
        if graph is not None:
            _destroy(graph)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: os or sys may already be gone
            pass

    def _set_values(self, values: np.ndarray) -> None:
        for setter, value in zip(self._setters, values.tolist()):
            setter(value)

    def _render(self, audio: np.ndarray) -> np.ndarray:
        n = audio.shape[1]
        if n > self.block_size:
            raise ValueError(f"effect {self.name!r} was primed for blocks of {self.block_size} samples, got {n}")
        if self.plugin_channels != self.channels:
            audio = np.repeat(audio, self.plugin_channels, axis=0)
        out = self._graph.plugin.process(audio, self.sample_rate, buffer_size=self.block_size, reset=False)
        if out.shape[1] != n or self._pending.shape[1]:
            out = self._fixed_length(out, n)
        if self.plugin_channels != self.channels:
            out = out.mean(axis=0, keepdims=True, dtype=np.float32)
        return out

    def _fixed_length(self, out: np.ndarray, n: int) -> np.ndarray:
        """Exactly ``n`` samples: samples pedalboard still withholds (latency) become leading zeros."""
        buffered = np.concatenate([self._pending, out], axis=1) if self._pending.shape[1] else out
        if buffered.shape[1] < n:
            pad = np.zeros((buffered.shape[0], n - buffered.shape[1]), np.float32)
            self._pending = np.zeros((buffered.shape[0], 0), np.float32)
            return np.concatenate([pad, buffered], axis=1)
        self._pending = buffered[:, n:]
        return buffered[:, :n]


def _destroy(graph: PedalboardGraph) -> None:
    """Destroy a graph's plugin now, with fd 2 silenced (see :func:`silence_plugin_teardown`).

    A hosted plugin keeps its parameter objects in a Python-side cache and they keep the plugin alive (a reference
    cycle): it would otherwise die at some later garbage collection, unsilenced. Clearing the cache lets the last
    reference free the native instance here.
    """
    plugin, graph.plugin, graph.setters = graph.plugin, None, {}
    state = getattr(plugin, "__dict__", None)
    with plugin_teardown_silenced():
        if isinstance(state, dict):
            state.clear()
        del plugin


#: Probed value <-> raw_value mappings by (plugin file, plugin name, parameter key): a plugin's mapping is fixed,
#: and probing (``probes`` plugin calls per parameter) is slow, which would otherwise be paid again by every reset and every instance.
_PROBES: dict[tuple, tuple[np.ndarray, np.ndarray] | None] = {}


def _probe(plugin: object, key: str, probes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(values increasing, raws) of one parameter, or None when it is not numeric and monotonic."""
    param = plugin.parameters[key]
    raws = np.linspace(0.0, 1.0, probes)
    try:
        values = []
        for r in raws:
            param.raw_value = float(r)
            values.append(float(getattr(plugin, key)))
        values = np.asarray(values)
    except (TypeError, ValueError):
        return None
    steps = np.diff(values)
    if np.all(steps <= 0):
        return values[::-1], raws[::-1]
    if not np.all(steps >= 0):
        return None
    return values, raws


def raw_value_setter(plugin: object, key: str, probes: int = 129, cache_key: tuple | None = None) -> Setter:
    """A fast setter for a VST3/AU parameter in plugin units, through its normalised ``raw_value``.

    Setting a hosted parameter by attribute is more than ten times slower than through ``raw_value``
    (pedalboard converts through the plugin's text values; ``benchmarks/fx_layer.py`` measures a chain's
    per-block cost, setters included). The plugin's own value <-> raw mapping, which need not be linear, is
    probed once at build time and inverted by interpolation (once per process when ``cache_key`` names the
    plugin, e.g. its file). Non-numeric or non-monotonic parameters fall back to the attribute setter.
    """
    param = plugin.parameters[key]
    full_key = None if cache_key is None else (*cache_key, key, probes)
    if full_key is not None and full_key in _PROBES:
        mapping = _PROBES[full_key]
    else:
        mapping = _probe(plugin, key, probes)
        if full_key is not None:
            _PROBES[full_key] = mapping
    if mapping is None:
        return attribute_setter(plugin, key)
    values, raws = mapping

    def set_value(value: float) -> None:
        param.raw_value = float(np.interp(value, values, raws))

    return set_value


def plugin_file_effect(
    path: str | Path,
    name: str,
    params: Sequence[ParamSpec],
    sample_rate: int,
    block_size: int,
    parameter_keys: Mapping[str, str] | None = None,
    plugin_name: str | None = None,
    channels: int = 1,
    latency: int | None = 0,
    plugin_channels: int | None = None,
) -> PedalboardEffect:
    """A VST3/AU plugin file as an effect.

    ``parameter_keys`` maps our parameter names to the plugin's own parameter keys (as
    ``pedalboard.load_plugin(...).parameters`` lists them); a name that is absent maps to itself. Ranges and
    values are in the plugin's units; they reach the plugin through its normalised ``raw_value``
    (:func:`raw_value_setter`).

    ``latency``: the streaming delay in samples; ``None`` takes the latency the plugin reports once prepared at
    ``sample_rate`` (which is the delay :class:`PedalboardEffect` streams with; verify it with an impulse).
    ``plugin_channels``: for a stereo-only plugin in a mono chain (dual mono, see :class:`PedalboardEffect`).
    """
    import pedalboard

    path = Path(path)
    if not path.exists():
        raise PluginUnavailable(f"plugin file {path} does not exist")
    keys = dict(parameter_keys or {})

    def build() -> PedalboardGraph:
        silence_plugin_teardown()
        with plugin_teardown_silenced():
            plugin = pedalboard.load_plugin(str(path), plugin_name=plugin_name)
            # pedalboard's VST3Plugin factory leaves a second Python wrapper of the new plugin in a reference cycle
            # (it calls a Python method on ``py::cast(plugin)``, which builds a parameter cache); that wrapper owns
            # a share of the native instance, which would otherwise die, printing, at some later collection.
            gc.collect()
        available = set(plugin.parameters)
        unknown = [(p.name, keys.get(p.name, p.name)) for p in params if keys.get(p.name, p.name) not in available]
        if unknown:
            graph = PedalboardGraph(plugin)
            del plugin  # the traceback keeps this frame: the plugin is destroyed here, silenced, not with it
            _destroy(graph)
            name, key = unknown[0]
            raise ValueError(f"plugin {path}: no parameter {key!r} (for {name!r}); it has {sorted(available)}")
        cache_key = (str(path.resolve()), plugin_name)
        setters = {p.name: raw_value_setter(plugin, keys.get(p.name, p.name), cache_key=cache_key) for p in params}
        return PedalboardGraph(plugin, setters)

    effect = PedalboardEffect(name, build, params, sample_rate, block_size, channels, latency or 0, plugin_channels)
    if latency is None:
        effect.latency = int(getattr(effect._graph.plugin, "reported_latency_samples", 0) or 0)
    return effect
