"""Apply a trained model to whole files: ``afx process --ckpt model.ckpt in.wav out.wav``.

Two streaming passes over the input (three for a loudness-normalised model), so memory does not grow with the
file (only θ, frames × P floats, is kept):

0. *measure* (only for a model trained on loudness-normalised inputs): the input is read once, preprocessed as
   below and its integrated loudness measured (BS.1770, :class:`~afx_lightning.data.preprocess.LoudnessMeter`):
   the gain to the trained ``loudness_lufs`` is then applied to the whole file, as training applied it to each
   clip (``ProcessStats.input_gain_db`` reports it). A file too short or too quiet to measure gets no gain.
1. *predict*: the input is read in blocks, downmixed to mono (the encoder averages channels anyway: one θ per
   frame drives every channel), resampled to the model rate in overlapping chunks, preprocessed as in training (the checkpoint's
   :class:`~afx_lightning.data.preprocess.Preprocessing`: the high-pass, streamed with its state, then the
   measured gain; alignment belongs to training pairs and has no counterpart here), cut into the encoder's
   contexts around each frame (``(context - N) // 2`` samples before the frame start, zero-padded at the file's
   ends, as in training) and θ is predicted in batches in eval mode. The θ curves are then low-passed with a
   zero-phase Butterworth filter (the paper's inference recipe) and clipped to [0, 1].
2. *render*: the input is read again, every channel resampled and preprocessed the same way (the same gain on
   all of them), and every frame of every channel goes through the chain with that frame's θ: a *linked* chain,
   as a mastering engineer's linked stereo chain (see :meth:`Processor.render_layout`). A mono chain (all the
   shipped ones) gets one set of fresh plugin instances per input channel, driven by the same θ; a chain built
   for C channels gets the C-channel block of a C-channel input; a mono input through a multichannel chain is
   duplicated into it and its output averaged back. The instances live in worker processes (a
   :class:`~afx_lightning.blackbox.pool.FxWorkerPool`, one slot per channel instance: a plugin crash or hang
   cannot take the process down; a channel's frame that fails twice is passed through dry, delayed like the wet
   audio, and counted). The chain's latency is compensated per channel (its first ``latency`` output samples
   are dropped and ``latency`` zeros are fed at the end), and each channel is resampled back to the input rate,
   so the output has the input's length, rate and channels: a left-only source stays left only.

   Per-channel instances with linked θ are not a true linked-stereo compressor: each channel's detector hears
   only its own channel, so a dynamics plugin may reduce the two sides by different amounts (a shared detector
   would apply one gain to both and hold the image exactly). It is what a mono plugin allows, and it keeps a
   mono input bit-for-bit what it was; a chain built for stereo (``channels=2``) renders both channels in one
   instance, with whatever linking the plugin itself does.

The output is written to a temporary file next to the target and renamed at the end: a failed run leaves nothing.
"""

from __future__ import annotations

import csv
import functools
import importlib
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from .data.preprocess import LoudnessMeter, Preprocessing
from .effects.params import ParamSpec
from .errors import AfxError

PathLike = str | os.PathLike

DEFAULT_CONTEXT = 40960
READ_BLOCK = 65536  # input samples per read (per channel)


class InferenceError(AfxError):
    """A user-facing problem (bad file, bad checkpoint): the CLI prints it as one line."""


# ====================================================================================== loading


def _allowed_factory(qualname: str) -> Callable | None:
    """A chain factory named in a checkpoint may be unpickled only if it is a registered chain or a test chain."""
    module, _, name = qualname.rpartition(".")
    if not module:
        return None
    from . import registry

    registered = set()
    try:
        from importlib.metadata import entry_points

        registered = {ep.value.replace(":", ".") for ep in entry_points(group=registry.CHAIN_GROUP)}
    except Exception:  # pragma: no cover - a broken environment: allow nothing extra
        pass
    if qualname not in registered and module != "afx_lightning.testing":
        return None
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return obj if callable(obj) and not isinstance(obj, type) else None


SAFE_GLOBALS: list[Any] = [
    functools.partial,
    pathlib.PosixPath,
    pathlib.PurePosixPath,
    pathlib.WindowsPath,
    pathlib.PureWindowsPath,
]


def _safe_load(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` plus the few globals a DeepAFx checkpoint may legitimately hold."""
    allowed = list(SAFE_GLOBALS)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint (legacy format): the load below reports it
        unsafe = []
    for qualname in unsafe:
        factory = _allowed_factory(qualname)
        if factory is not None:
            allowed.append(factory)
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InferenceError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "unpickl" in text.lower():
            known = {getattr(g, "__module__", "") + "." + getattr(g, "__qualname__", "") for g in allowed}
            names = [q for q in unsafe if q not in known]
            what = ", ".join(names) if names else text.strip().splitlines()[0]
            raise InferenceError(
                f"this checkpoint needs unsafe unpickling: {path} holds objects that are not plain data ({what}); "
                "refusing to load it (only weights, plain hyper-parameters and registered chain factories are allowed)"
            ) from None
        raise InferenceError(
            f"cannot read checkpoint {path}: {text.strip().splitlines()[0] if text else type(exc).__name__}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InferenceError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _encoder_factory(spec: Any, path: Path) -> Callable[[int], Any]:
    """The encoder a checkpoint describes, built only from a declared class: nothing else is imported."""
    from .encoders import ENCODER_GROUP, ParameterEncoder, declared_encoders

    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise InferenceError(f"checkpoint {path} does not describe its encoder (no encoder class_path)")
    class_path, init_args = spec["class_path"], spec.get("init_args") or {}
    if not isinstance(init_args, dict) or not all(isinstance(k, str) for k in init_args):
        raise InferenceError(f"checkpoint {path}: the init_args of encoder {class_path!r} are not a mapping of names")
    target = declared_encoders().get(class_path)
    if target is None:
        raise InferenceError(
            f"checkpoint {path}: encoder class {class_path!r} is not a declared encoder (afx_lightning.encoders, or an "
            f"installed package's {ENCODER_GROUP!r} entry point); refusing to import it"
        )
    module, _, attr = target.partition(":")
    try:
        cls: Any = importlib.import_module(module)
        for part in attr.split("."):
            cls = getattr(cls, part)
    except Exception as exc:  # a declared but broken plugin package
        raise InferenceError(
            f"checkpoint {path}: cannot import encoder {class_path!r} ({type(exc).__name__}: {exc})"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, ParameterEncoder)):
        raise InferenceError(
            f"checkpoint {path}: encoder class {class_path!r} is not a subclass of "
            "afx_lightning.encoders.ParameterEncoder; refusing to build it"
        )
    init_args = {k: v for k, v in init_args.items() if k != "num_params"}
    return functools.partial(cls, **init_args)


def _chain_source(chain: Any, path: Path) -> Any:
    """A registered chain name, a chain declaration (plain data: checked, never imported), or a ``module:function``
    factory that is registered or a test chain."""
    from . import registry

    if isinstance(chain, dict):
        try:
            declared = registry.declared_chain(chain)  # its structure; plugins are resolved when the model is built
        except registry.DeclarationError as exc:
            raise InferenceError(f"checkpoint {path}: {exc}") from None
        outside = declared.files_outside_plugin_folders()
        if outside:
            raise InferenceError(
                f"checkpoint {path}: its chain loads {', '.join(outside)}, outside the VST3 folders; refusing to load "
                "a plugin file a checkpoint names unless it is installed there (or in a folder on $VST3_PATH)"
            )
        return chain
    if isinstance(chain, str) and ":" not in chain:
        if chain not in registry.chain_names():
            known = ", ".join(registry.chain_names()) or "none"
            raise InferenceError(f"checkpoint {path}: chain {chain!r} is not registered here (registered: {known})")
        return chain
    factory = _allowed_factory(chain.replace(":", ".")) if isinstance(chain, str) else None
    if factory is None:
        raise InferenceError(
            f"checkpoint {path}: chain {chain!r} is neither a registered chain nor an afx_lightning.testing factory; "
            "refusing to import it"
        )
    return factory


def _legacy_config(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``afx_model`` description of a checkpoint written before it existed (``afx_encoder`` key only).

    Takes just the chain and the audio format from the saved hyper-parameters, and only as plain values;
    everything else those hold (e.g. LightningCLI's ``_instantiator``) is ignored.
    """
    from .module import chain_reference_name

    spec = checkpoint.get("afx_encoder")
    if not isinstance(spec, dict):
        raise InferenceError(
            f"checkpoint {path} does not describe its model ('afx_model'); it was not saved by afx-lightning's DeepAFx"
        )
    hparams = checkpoint.get("hyper_parameters") or {}
    dm = checkpoint.get("datamodule_hyper_parameters") or {}
    chain = chain_reference_name(hparams.get("chain", "pb_mb_compressor"))
    return {
        "format": 1,
        "chain": chain,
        "num_params": (spec.get("init_args") or {}).get("num_params"),
        "encoder": spec,
        "sample_rate": hparams.get("sample_rate", 22050),
        "frame_size": hparams.get("frame_size", 1024),
        "data": {
            "context_size": dm.get("context_size"),
            **{k: dm[k] for k in ("highpass_hz", "loudness_lufs") if isinstance(dm.get(k), (int, float))},
        },
        "options": {},
    }


def model_preprocessing(config: dict[str, Any], path: Path) -> Preprocessing:
    """What the model's inputs went through in training: the description's ``preprocessing``; for descriptions
    written before it, the data facts they recorded (``data.highpass_hz`` / ``data.loudness_lufs``); none if
    neither is there (such a checkpoint processes as it always did)."""
    from .data import DataError

    recorded = config.get("preprocessing")
    if recorded is None:
        data = config.get("data") or {}
        recorded = {k: data[k] for k in ("highpass_hz", "loudness_lufs") if data.get(k) is not None} or None
    try:
        preprocessing = Preprocessing.from_config(recorded)
        preprocessing.check(int(config.get("sample_rate") or 22050))
    except DataError as exc:
        raise InferenceError(f"checkpoint {path}: {exc}") from None
    return preprocessing


def model_config(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's plain-data model description (:meth:`DeepAFx.get_config`), checked for shape."""
    from .module import CONFIG_FORMAT, CONFIG_KEY, READABLE_FORMATS

    config = checkpoint.get(CONFIG_KEY)
    if config is None:
        return _legacy_config(checkpoint, path)
    if not isinstance(config, dict):
        raise InferenceError(f"checkpoint {path}: '{CONFIG_KEY}' is not a mapping")
    if config.get("format") not in READABLE_FORMATS:
        raise InferenceError(
            f"checkpoint {path}: model description format {config.get('format')!r} is not {CONFIG_FORMAT} "
            "(saved by a different afx-lightning version)"
        )
    return config


def build_model(config: dict[str, Any], path: Path) -> DeepAFx:  # noqa: F821
    """An untrained :class:`~afx_lightning.module.DeepAFx` for inference (one slot, one worker) from a description."""
    from .module import DeepAFx

    factory = _encoder_factory(config.get("encoder"), path)
    chain = _chain_source(config.get("chain"), path)
    try:
        int(config["sample_rate"]), int(config["frame_size"])
    except (KeyError, TypeError, ValueError):
        raise InferenceError(
            f"checkpoint {path}: the model description lacks an integer sample_rate/frame_size"
        ) from None
    try:
        model = DeepAFx.from_config(config, chain=chain, encoder=factory)
    except ValueError as exc:
        raise InferenceError(f"checkpoint {path}: {exc}") from None
    except Exception as exc:
        raise InferenceError(f"checkpoint {path}: cannot rebuild the model ({type(exc).__name__}: {exc})") from None
    data = config.get("data") or {}
    model.context_size = int(data.get("context_size") or DEFAULT_CONTEXT)
    model.preprocessing = model_preprocessing(config, path)
    return model


def load_model(ckpt_path: PathLike) -> DeepAFx:  # noqa: F821
    """Rebuild a :class:`~afx_lightning.module.DeepAFx` from a checkpoint, loading it weights-only (no arbitrary code).

    Only the checkpoint's own description (``afx_model``, see :meth:`DeepAFx.get_config`) is used, never the
    trainer's hyper-parameters, so a checkpoint loads whichever tool wrote it. The chain is looked up by name in
    today's registry; a chain whose parameter count differs from the one the model was trained for is refused.
    The returned model is in eval mode and carries ``context_size`` (the encoder context used in training;
    40 960 if unknown) and ``preprocessing`` (what its inputs went through in training; the ``Processor`` repeats it).
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise InferenceError(f"checkpoint {path} does not exist")
    checkpoint = _safe_load(path)
    config = model_config(checkpoint, path)
    model = build_model(config, path)
    trained_p = config.get("num_params")
    head = checkpoint["state_dict"].get("encoder.head.weight")
    if head is not None:
        trained_p = int(head.shape[0])
    if isinstance(trained_p, int) and model.fx.num_params != trained_p:
        raise InferenceError(
            f"checkpoint {path} was trained for chain {config.get('chain')!r} with P={trained_p} parameters, but the "
            f"registered chain {model.fx.info.name!r} now has P={model.fx.num_params} ({', '.join(model.param_names)})"
        )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise InferenceError(
            f"checkpoint {path}: weights do not fit the rebuilt model: {str(exc).splitlines()[0]}"
        ) from None
    model.eval()
    return model


# ====================================================================================== streaming resampling


class StreamingResampler:
    """``torchaudio.functional.resample`` over a stream, chunk by chunk, with bounded memory.

    Each chunk is resampled together with ``pad`` input samples of real context on both sides (more than the
    sinc kernel's reach) and only the outputs of its own span are kept; chunk starts are multiples of the reduced
    input rate so every chunk's output grid coincides with the whole signal's. The result equals resampling the
    whole signal at once up to float rounding (no clicks at chunk joints), with the same length ``ceil(L·new/orig)``.
    """

    def __init__(self, orig_freq: int, new_freq: int, step: int = 1 << 16):
        import torchaudio

        g = math.gcd(int(orig_freq), int(new_freq))
        self.o, self.n = int(orig_freq) // g, int(new_freq) // g
        self.identity = self.o == self.n
        self._resample = torchaudio.transforms.Resample(self.o, self.n) if not self.identity else None
        width = math.ceil(6 * self.o / (min(self.o, self.n) * 0.99))  # torchaudio's default kernel half-width
        self.pad = self.o * math.ceil((width + self.o + 16) / self.o)
        self.step = self.o * max(1, math.ceil(step / self.o))
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # global index of _buf[0]
        self._next = 0  # global input index whose outputs come next (a multiple of o)

    def output_length(self, input_length: int) -> int:
        return -(-input_length * self.n // self.o)

    def _run(self, a: int, b: int, keep_from: int, keep_to: int | None) -> np.ndarray:
        seg = torch.from_numpy(np.ascontiguousarray(self._buf[a - self._buf_start : b - self._buf_start]))
        with torch.no_grad():
            y = self._resample(seg).numpy()
        lo = (keep_from - a) * self.n // self.o
        hi = None if keep_to is None else (keep_to - a) * self.n // self.o
        return y[lo:hi]

    def push(self, x: np.ndarray) -> np.ndarray:
        """Mono input samples -> the output samples that are final now."""
        x = np.asarray(x, dtype=np.float32)
        if self.identity:
            return x
        self._buf = np.concatenate([self._buf, x])
        end = self._buf_start + len(self._buf)
        outs = []
        while self._next + self.step + self.pad <= end:
            r0 = self._next
            a = max(0, r0 - self.pad)
            outs.append(self._run(a, r0 + self.step + self.pad, r0, r0 + self.step))
            self._next = r0 + self.step
        drop = max(0, self._next - self.pad) - self._buf_start
        if drop > 0:
            self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """The remaining outputs (the stream has ended: zeros beyond it, as torchaudio pads)."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        end = self._buf_start + len(self._buf)
        if self._next >= end:
            return np.zeros(0, dtype=np.float32)
        a = max(0, self._next - self.pad)
        out = self._run(a, end, self._next, None)
        self._next = end
        return out


class _Ring:
    """A window of a stream by global sample index; reads outside [0, total) are zeros."""

    def __init__(self) -> None:
        self.buf = np.zeros(0, dtype=np.float32)
        self.start = 0
        self.total: int | None = None  # known once the stream ends

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def append(self, x: np.ndarray) -> None:
        if len(x):
            self.buf = np.concatenate([self.buf, x])

    def get(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, self.start), min(b, self.end)
        if hi > lo:
            out[lo - a : hi - a] = self.buf[lo - self.start : hi - self.start]
        return out

    def discard_before(self, index: int) -> None:
        drop = min(index, self.end) - self.start
        if drop > 0:
            self.buf, self.start = self.buf[drop:], self.start + drop


# ====================================================================================== automation


def smooth_automation(theta: np.ndarray, frame_rate: float, cutoff_hz: float | None, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth low-pass of each θ curve (``filtfilt`` over frames), then clip to [0, 1].

    ``cutoff_hz`` <= 0 / None, or at or above the frame rate's Nyquist, disables smoothing. Short files get a
    shorter ``padlen`` (filtfilt needs more frames than it); a single frame is returned as is.
    """
    from scipy.signal import butter, filtfilt

    theta = np.asarray(theta, dtype=np.float64)
    frames = theta.shape[0]
    if not cutoff_hz or cutoff_hz <= 0 or frames < 2 or cutoff_hz >= frame_rate / 2:
        return np.clip(theta, 0.0, 1.0).astype(np.float32)
    b, a = butter(order, cutoff_hz / (frame_rate / 2))
    padlen = min(3 * max(len(a), len(b)), frames - 1)
    return np.clip(filtfilt(b, a, theta, axis=0, padlen=padlen), 0.0, 1.0).astype(np.float32)


def max_step(theta: np.ndarray) -> float:
    """Largest frame-to-frame change of any parameter curve (normalised units)."""
    theta = np.asarray(theta)
    return float(np.abs(np.diff(theta, axis=0)).max()) if theta.shape[0] > 1 else 0.0


@dataclass
class Automation:
    """Per-frame parameters: ``normalized`` [frames, P] in [0, 1] (smoothed), ``raw`` as predicted."""

    params: tuple[ParamSpec, ...]
    normalized: np.ndarray
    frame_rate: float
    raw: np.ndarray | None = None
    input_gain_db: float | None = None  # loudness gain the input got before prediction (render applies it too)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def times(self) -> np.ndarray:
        """Start time of each frame, in seconds of the input."""
        return np.arange(len(self.normalized)) / self.frame_rate

    @property
    def values(self) -> np.ndarray:
        """In plugin units as the ranges are written (``ParamSpec.to_display``: dB stays dB)."""
        return np.array(
            [[p.to_display(u) for p, u in zip(self.params, row)] for row in self.normalized], dtype=np.float64
        ).reshape(len(self.normalized), len(self.params))

    def save(self, path: PathLike) -> None:
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            values = self.values
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["time_s", *self.names, *[f"{p.name}[{p.unit}]" for p in self.params]])
                for t, u, v in zip(self.times, self.normalized, values):
                    w.writerow([f"{t:.6f}", *[f"{x:.6g}" for x in u], *[f"{x:.6g}" for x in v]])
        elif suffix == ".json":
            data = {
                "frame_rate": self.frame_rate,
                "params": [
                    {"name": p.name, "unit": p.unit, "min": p.min, "max": p.max, "scale": p.scale.value}
                    for p in self.params
                ],
                "normalized": np.round(self.normalized.astype(np.float64), 6).tolist(),
                "values": np.round(self.values, 6).tolist(),
            }
            path.write_text(json.dumps(data))
        else:
            raise InferenceError(f"automation file {path} must end in .csv or .json")


# ====================================================================================== sources and sinks


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

    def blocks() -> Iterator[np.ndarray]:
        for i in range(0, audio.shape[1], READ_BLOCK):
            yield audio[:, i : i + READ_BLOCK]

    return _Source("<array>", int(sample_rate), audio.shape[0], audio.shape[1], blocks)


_FORMATS = {"AIF": "AIFF", "OGA": "OGG", "OPUS": "OGG"}


def _output_format(path: Path, input_subtype: str | None) -> tuple[str, str | None]:
    ext = path.suffix.lstrip(".").upper()
    fmt = _FORMATS.get(ext, ext)
    if fmt not in sf.available_formats():
        raise InferenceError(f"cannot write {path}: unknown audio format {path.suffix!r} (use e.g. .wav or .flac)")
    want = None
    if input_subtype in ("FLOAT", "DOUBLE"):
        want = "FLOAT"
    elif input_subtype and input_subtype.startswith("PCM_"):
        want = input_subtype
    if want is None or not sf.check_format(fmt, want):
        want = sf.default_subtype(fmt)
    return fmt, want


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


# ====================================================================================== the processor


@dataclass
class ProcessStats:
    frames: int = 0
    dropped_frames: int = 0
    clipped_samples: int = 0
    seconds: float = 0.0
    wall_s: float = 0.0
    predict_s: float = 0.0
    render_s: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    input_gain_db: float | None = None  # the loudness-normalisation gain applied to the input, if any
    preprocessing: str = ""  # what the input went through before the model saw it ("" when nothing)

    @property
    def real_time_factor(self) -> float:
        """Wall time / audio duration (< 1 is faster than real time)."""
        return self.wall_s / self.seconds if self.seconds else 0.0


class _DryFallback:
    """Where the dry input of a dropped frame belongs in the output: the input delayed by the chain's latency.

    A frame the plugin failed on comes back dry and undelayed; latency compensation would then put it
    ``latency`` samples early. The failed output frame is replaced by the delayed input instead, and so are the
    first ``latency`` samples of the following frames wherever they carry a dropped frame's input (the fresh
    instances that replace a failed one fill them with their own start-up output, not that audio).
    """

    def __init__(self, latency: int):
        self._audio = np.zeros(latency, dtype=np.float32)  # the last ``latency`` input samples
        self._dropped = np.zeros(latency, dtype=bool)  # whether each came from a dropped frame

    def place(self, frame: np.ndarray, wet: np.ndarray, failed: bool) -> np.ndarray:
        """One output frame (before latency compensation): ``wet`` where the plugin rendered it, else dry."""
        n = len(frame)
        audio = np.concatenate([self._audio, frame])
        dropped = np.concatenate([self._dropped, np.full(n, failed)])
        delayed, from_dropped = audio[:n], dropped[:n]
        self._audio, self._dropped = audio[n:], dropped[n:]
        if failed:
            return delayed
        return np.where(from_dropped, delayed, wet).astype(np.float32, copy=False)


def _compiled(encoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``encoder`` (eval mode) whose body is ``torch.compile``d with frozen weights, for inference only."""
    import copy

    fast = copy.deepcopy(encoder).eval()
    fast.body = torch.compile(fast.body, options={"freezing": True})
    return fast


class Processor:
    """Applies a :class:`~afx_lightning.module.DeepAFx` to whole files or arrays (see the module docstring).

    Args:
        model: a trained model (e.g. from :func:`load_model`).
        smoothing_hz: cutoff of the zero-phase low-pass on the θ curves (frame rate ≈ 21.5 Hz); 0 disables it.
        device: where the encoder runs.
        context_size: encoder context in samples; default: the model's ``context_size`` (set by :func:`load_model`
            from training) or 40 960.
        batch_size: contexts per encoder call.
        predict_hop: run the encoder on every ``predict_hop``-th frame only and interpolate the curves linearly
            in between (the last frame is always predicted). 1 = every frame, as in training. The encoder is
            almost all of the cost on a CPU; with 2 Hz smoothing a hop of 4 (5.4 predictions/s) changes the
            smoothed automation little and is 4x faster.
        preprocessing: what the input goes through before the encoder and the chain see it; default: the model's
            ``preprocessing`` (set by :func:`load_model` from training), else none.
        share_log_mel: compute the log-mel front end once per file and cut each context's frames out of it
            (:attr:`shares_log_mel` says when the front end allows it) instead of once per overlapping context;
            False encodes every context's audio on its own, as training does. Same θ within float rounding.
        compile: run the encoder's body through ``torch.compile`` (inductor, frozen weights: batch norms folded
            into the convolutions) on fixed-size batches. About 3x faster for the Inception encoder on CPU, θ
            within 1e-6; the compilation costs a minute or more on a busy 2-core machine (less with inductor's
            on-disk cache warm), so it pays off for long files or many of them.
    """

    def __init__(
        self,
        model,
        smoothing_hz: float = 2.0,
        device: str | torch.device = "cpu",
        context_size: int | None = None,
        batch_size: int = 64,
        predict_hop: int = 1,
        preprocessing: Preprocessing | None = None,
        share_log_mel: bool = True,
        compile: bool = False,
    ):
        if predict_hop < 1:
            raise ValueError(f"predict_hop must be at least 1, got {predict_hop}")
        self.preprocessing = preprocessing or getattr(model, "preprocessing", None) or Preprocessing()
        self.predict_hop = int(predict_hop)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.smoothing_hz = float(smoothing_hz or 0.0)
        self.sample_rate = int(model.hparams.sample_rate)
        self.frame_size = int(model.hparams.frame_size)
        self.context_size = int(context_size or getattr(model, "context_size", None) or DEFAULT_CONTEXT)
        if self.context_size < self.frame_size:
            raise ValueError(f"context_size ({self.context_size}) must be at least the frame size ({self.frame_size})")
        self.context_before = (self.context_size - self.frame_size) // 2
        self.batch_size = int(batch_size)
        self.share_log_mel = bool(share_log_mel)
        self.fixed_batch = bool(compile)  # a compiled network sees one input shape: short batches are padded
        self._encoder = _compiled(model.encoder) if compile else model.encoder
        self.fx = model.fx
        self.latency = int(self.fx.latency)
        self.last_stats: ProcessStats | None = None
        from .data import DataError

        try:
            self.preprocessing.check(self.sample_rate)
        except DataError as exc:
            raise ValueError(str(exc)) from None

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.frame_size

    # ------------------------------------------------------------------ streams
    def _model_rate(self, source: _Source, check_finite: bool, gain_db: float | None = None) -> Iterator[np.ndarray]:
        """Mono model-rate chunks of the source as the model sees them: downmix by channel mean, resample, then
        the training preprocessing (the high-pass, its state carried from chunk to chunk, and ``gain_db``)."""
        rs = StreamingResampler(source.sample_rate, self.sample_rate)
        hp = self.preprocessing.highpass_filter(self.sample_rate)
        gain = np.float32(10.0 ** (gain_db / 20.0)) if gain_db else None

        def prepared(x: np.ndarray) -> np.ndarray:
            x = hp(x) if hp is not None else x
            return x * gain if gain is not None else x

        pos = 0
        for block in source.blocks():
            if check_finite and not np.isfinite(block).all():
                bad = pos + int(np.argmax(~np.isfinite(block).all(axis=0)))
                raise InferenceError(
                    f"input {source.name} contains NaN/Inf samples (first at {bad / source.sample_rate:.3f} s)"
                )
            pos += block.shape[1]
            out = rs.push(block.mean(axis=0) if block.shape[0] > 1 else block[0])
            if len(out):
                yield prepared(out)
        out = rs.flush()
        if len(out):
            yield prepared(out)

    def _model_rate_channels(self, source: _Source, gain_db: float | None = None) -> Iterator[np.ndarray]:
        """[C, n] model-rate chunks of every channel, preprocessed as :meth:`_model_rate` does the downmix (the
        high-pass and ``gain_db`` are linear, so their mean over channels is the downmix's stream)."""
        rs = [StreamingResampler(source.sample_rate, self.sample_rate) for _ in range(source.channels)]
        hp = self.preprocessing.highpass_filter(self.sample_rate)
        gain = np.float32(10.0 ** (gain_db / 20.0)) if gain_db else None

        def prepared(x: np.ndarray) -> np.ndarray:
            x = hp(x) if hp is not None else x
            return x * gain if gain is not None else x

        for block in source.blocks():
            out = np.stack([r.push(ch) for r, ch in zip(rs, block)])
            if out.shape[1]:
                yield prepared(out)
        out = np.stack([r.flush() for r in rs])
        if out.shape[1]:
            yield prepared(out)

    def render_layout(self, channels: int) -> tuple[int, int]:
        """How a ``channels``-channel input meets the chain: (instances per frame, channels per instance).

        The rule training uses too (:class:`~afx_lightning.blackbox.channels.ChannelLayout`): a mono chain, one
        instance per input channel (linked θ); a chain of the input's channel count, one instance; a mono input
        into a multichannel chain, one instance, the signal duplicated in and averaged out. Anything else (e.g.
        a stereo chain on a 5.1 file) has no obvious mapping and is refused."""
        layout = self._layout(channels)
        return layout.instances, layout.width

    def _layout(self, channels: int):
        from .blackbox.channels import ChannelLayout

        try:
            return ChannelLayout.of(self.fx.info.channels, channels, self.fx.info.name)
        except ValueError as exc:
            raise InferenceError(str(exc)) from None

    def input_gain_db(self, source: _Source) -> float | None:
        """Pass 0: the gain (dB) that brings the whole input, high-passed as the model sees it, to the trained
        ``loudness_lufs`` (the same meter as training's). None without loudness normalisation, and for a file
        too short (< 0.4 s) or too quiet (every block gated) to measure: it gets no gain."""
        target = self.preprocessing.loudness_lufs
        if target is None:
            return None
        meter = LoudnessMeter(self.sample_rate)
        for chunk in self._model_rate(source, check_finite=True):
            meter.push(chunk)
        if meter.samples < meter.min_samples:
            return None
        loudness = meter.integrated()
        return float(target - loudness) if np.isfinite(loudness) else None

    def _preprocessing_note(self, gain_db: float | None) -> str:
        p, parts = self.preprocessing, []
        if p.highpass_hz is not None:
            parts.append(f"high-passed at {p.highpass_hz:g} Hz")
        if p.loudness_lufs is not None:
            parts.append(
                f"normalised to {p.loudness_lufs:g} LUFS ({gain_db:+.1f} dB gain)"
                if gain_db is not None
                else f"not normalised to {p.loudness_lufs:g} LUFS (too short or quiet to measure)"
            )
        return "input " + " and ".join(parts) if parts else ""

    def _model_length(self, source: _Source) -> int:
        return StreamingResampler(source.sample_rate, self.sample_rate).output_length(source.frames)

    def _bar(self, total: int, desc: str, progress: bool):
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit="frame",
            file=sys.stderr,
            leave=False,
            disable=not progress or total < 400,
            mininterval=0.5,
        )

    # ------------------------------------------------------------------ pass 1
    @torch.no_grad()
    def predict(self, source: _Source, progress: bool = False) -> Automation:
        n = self.frame_size
        length = self._model_length(source)
        frames = max(1, -(-length // n))
        gain_db = self.input_gain_db(source)
        stream = self._model_rate(source, check_finite=True, gain_db=gain_db)
        theta = np.zeros((frames, self.fx.num_params), dtype=np.float32)
        predicted = [i for i in range(frames) if i % self.predict_hop == 0 or i == frames - 1]
        encoder = self._encoder.eval()
        with self._bar(frames, "predict", progress) as bar:
            if self.shares_log_mel:
                self._predict_from_log_mel(encoder, stream, theta, predicted, bar)
            else:
                self._predict_contexts(encoder, stream, theta, predicted, bar)
        if len(predicted) < frames:
            for k in range(theta.shape[1]):
                theta[:, k] = np.interp(np.arange(frames), predicted, theta[predicted, k])
        for _ in stream:  # drain: the NaN check covers the whole file
            pass
        smoothed = smooth_automation(theta, self.frame_rate, self.smoothing_hz)
        # discrete parameters at their most likely values (a no-op for continuous ones; see effects.discrete)
        plugin_theta = self.fx.codec.decode(smoothed)
        return Automation(
            self.fx.info.trainable_params, plugin_theta, self.frame_rate, raw=theta, input_gain_db=gain_db
        )

    @property
    def shares_log_mel(self) -> bool:
        """Whether :meth:`predict` computes the log-mel once per file (:class:`~afx_lightning.encoders.LogMelStream`)
        rather than once per context: an uncentred front end, a frame size that is a whole number of mel hops and
        a context of at least one FFT window. Otherwise every context is cut out and encoded on its own."""
        from .encoders import LogMelStream, ParameterEncoder

        encoder = self.model.encoder
        if (
            not self.share_log_mel
            or not isinstance(encoder, ParameterEncoder)
            or not LogMelStream.supports(encoder.frontend)
        ):
            return False
        return self.frame_size % encoder.frontend.mel.hop_length == 0 and self.context_size >= encoder.frontend.n_fft

    def _predict_contexts(
        self, encoder, stream: Iterator[np.ndarray], theta: np.ndarray, predicted: list[int], bar
    ) -> None:
        """θ of every wanted frame from its own context, cut out of the stream and zero-padded at the file's ends."""
        n, width, before = self.frame_size, self.context_size, self.context_before
        ring = _Ring()
        batch = np.zeros((self.batch_size, 1, width), dtype=np.float32)
        filled = 0
        pending: list[int] = []  # frame indices of the contexts in ``batch``
        wanted = set(predicted)

        def run(count: int) -> None:
            x = torch.from_numpy(batch[: self.batch_size if self.fixed_batch else count]).to(self.device)
            if self.fx.channels > 1:
                x = x.expand(-1, self.fx.channels, -1)
            theta[pending[:count]] = encoder(x)[:count].float().cpu().numpy()
            pending.clear()

        for i in range(len(theta)):
            a = i * n - before
            b = a + width
            while ring.total is None and ring.end < b:
                chunk = next(stream, None)
                if chunk is None:
                    ring.total = ring.end
                else:
                    ring.append(chunk)
            if i in wanted:
                batch[filled, 0] = ring.get(a, b)
                pending.append(i)
                filled += 1
            ring.discard_before(a + n)
            if filled == self.batch_size:
                run(filled)
                filled = 0
            bar.update(1)
        if filled:
            run(filled)

    def _predict_from_log_mel(
        self, encoder, stream: Iterator[np.ndarray], theta: np.ndarray, predicted: list[int], bar
    ) -> None:
        """θ of the wanted frames from the file's log-mel, computed once: the stream is preceded by the
        ``context_before`` zeros the first context pads with and followed by zeros to the last context's end,
        so context ``i`` is log-mel frames ``i·N/hop ...`` of it, the frames it would give on its own."""
        from .encoders import LogMelStream

        n, width, before = self.frame_size, self.context_size, self.context_before
        mel = LogMelStream(encoder.frontend)
        step, window = n // mel.hop, mel.frames_in(width)
        frames = len(theta)
        end = (frames - 1) * n + width  # padded-stream samples the last context reaches
        per_call = self.batch_size * (8 if getattr(encoder, "streaming", False) else 1)
        mel.push(torch.zeros(before))
        pushed, done, shown = before, False, 0
        wanted = np.asarray(predicted)
        for g in range(0, len(wanted), per_call):
            rows = wanted[g : g + per_call]
            first, last = int(rows[0]), int(rows[-1])
            need = step * last + window  # global index one past the last frame this group reads
            while mel.available < need:
                chunk = None if done else next(stream, None)
                if chunk is None:  # the end: zeros up to the last context's end, as a context is padded
                    done = True
                    mel.push(torch.zeros(max(0, end - pushed)))
                    pushed = max(pushed, end)
                    mel.finish()
                    break
                chunk = chunk[: max(0, end - pushed)]
                mel.push(torch.from_numpy(np.ascontiguousarray(chunk)))
                pushed += len(chunk)
            block = mel.window(step * first, need).to(self.device)
            starts = (rows - first) * step
            if self.fixed_batch and len(rows) < per_call:  # one input shape for a compiled network
                starts = np.concatenate([starts, np.full(per_call - len(rows), starts[-1])])
            logits = encoder.logits_at(block, torch.from_numpy(starts), window)[: len(rows)]
            theta[rows] = torch.sigmoid(logits).float().cpu().numpy()
            bar.update(last + 1 - shown)
            shown = last + 1
        bar.update(len(theta) - shown)

    # ------------------------------------------------------------------ pass 2
    def render(
        self,
        source: _Source,
        automation: Automation,
        write: Callable[[np.ndarray], None],
        progress: bool = False,
        keep: list | None = None,
    ) -> ProcessStats:
        """Render every channel of the source through fresh plugins with ``automation`` (linked: the same θ on
        every channel, see :meth:`render_layout`); ``write`` gets [C, k] input-rate chunks. ``keep`` collects the
        model-rate input and output downmixes (for the plot)."""
        from .blackbox.pool import FxWorkerPool, SlotGroup

        n, lat, c = self.frame_size, self.latency, source.channels
        layout = self._layout(c)
        instances, width = layout.instances, layout.width
        length = self._model_length(source)
        theta = automation.normalized
        total_frames = -(-(length + lat) // n)
        stats = ProcessStats(
            frames=len(theta),
            seconds=source.frames / source.sample_rate,
            input_gain_db=automation.input_gain_db,
            preprocessing=self._preprocessing_note(automation.input_gain_db),
        )
        pool = FxWorkerPool(  # one worker per channel instance (up to the CPUs): a crash in one leaves the others
            self.fx.chain_factory,
            {"process": SlotGroup(instances, 1)},
            channels=width,
            block_size=n,
            num_params=self.fx.info.num_params,
            sample_rate=self.sample_rate,
            num_workers=max(1, min(instances, os.cpu_count() or 1)),
            timeout_s=self.fx.timeout_s,
            max_retries=self.fx.max_retries,
            build_timeout_s=self.fx.build_timeout_s,
        )
        slots = list(range(instances))
        dry = [_DryFallback(lat) for _ in range(c)]
        back = [StreamingResampler(self.sample_rate, source.sample_rate) for _ in range(c)]
        out_total = source.frames
        written = 0
        to_skip = lat  # latency compensation: the chain's first `lat` samples are its delay
        produced = 0  # model-rate output samples kept
        pending = np.zeros((c, 0), dtype=np.float32)
        stream = self._model_rate_channels(source, gain_db=automation.input_gain_db)
        done_input = False

        def emit(y: np.ndarray) -> None:
            nonlocal written
            y = y[:, : out_total - written]
            if y.shape[1]:
                write(y)
                written += y.shape[1]

        try:
            with self._bar(total_frames, "render", progress) as bar:
                for j in range(total_frames):
                    while not done_input and pending.shape[1] < n:
                        chunk = next(stream, None)
                        if chunk is None:
                            done_input = True
                        else:
                            pending = np.concatenate([pending, chunk], axis=1)
                    frame = np.zeros((c, n), dtype=np.float32)
                    k = min(n, pending.shape[1])
                    frame[:, :k], pending = pending[:, :k], pending[:, k:]
                    params = layout.repeat(theta[min(j, len(theta) - 1)][None, None])  # linked
                    result = pool.render("process", slots, [j == 0] * instances, layout.split(frame[None]), params)
                    wet = layout.merge(result.out)[0, 0]  # [C, N]
                    failed = layout.channel_failed(result.failed)[0]
                    stats.dropped_frames += bool(failed.any())
                    y = np.stack([d.place(frame[i], wet[i], bool(failed[i])) for i, d in enumerate(dry)])
                    if keep is not None:
                        keep[0].append(frame.mean(axis=0))
                    if to_skip:
                        cut = min(to_skip, n)
                        y, to_skip = y[:, cut:], to_skip - cut
                    y = y[:, : max(0, length - produced)]
                    produced += y.shape[1]
                    if keep is not None and y.shape[1]:
                        keep[1].append(y.mean(axis=0))
                    emit(np.stack([b.push(ch) for b, ch in zip(back, y)]))
                    bar.update(1)
            emit(np.stack([b.flush() for b in back]))
            if written < out_total:  # rounding of the two rate conversions: at most a sample or two
                emit(np.zeros((c, out_total - written), dtype=np.float32))
            stats.faults = {k: v for k, v in pool.stats.as_dict().items() if v}
        finally:
            pool.close()
        return stats

    # ------------------------------------------------------------------ public API
    def process_array(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, Automation]:
        """``audio`` [C, T] float32 at any rate -> (output [C, T] at that rate, automation)."""
        source = _array_source(audio, sample_rate)
        t0 = time.perf_counter()
        automation = self.predict(source)
        t1 = time.perf_counter()
        chunks: list[np.ndarray] = []
        stats = self.render(source, automation, chunks.append)
        out = np.concatenate(chunks, axis=1) if chunks else np.zeros((source.channels, 0), dtype=np.float32)
        stats.predict_s, stats.render_s, stats.wall_s = t1 - t0, time.perf_counter() - t1, time.perf_counter() - t0
        self.last_stats = stats
        return out, automation

    def process_file(
        self,
        in_path: PathLike,
        out_path: PathLike,
        automation: PathLike | None = None,
        plot: PathLike | None = None,
        overwrite: bool = False,
        progress: bool = True,
    ) -> ProcessStats:
        """Process ``in_path`` into ``out_path`` (input's rate, channels, length and subtype family).

        Optionally writes the automation (``.csv`` / ``.json``) and a PNG with the input and output spectrograms
        above the automation. The plot is the one part that holds the (mono, model-rate) audio in memory.
        """
        in_path, out_path = Path(in_path), Path(out_path)
        source, info = _file_source(in_path)
        _check_output(out_path, in_path, overwrite)
        fmt, subtype = _output_format(out_path, info.subtype)
        extras = [(Path(p), w) for p, w in ((automation, "automation file"), (plot, "plot")) if p is not None]
        for p, what in extras:
            _check_output(p, in_path, overwrite, what)
        if automation is not None and Path(automation).suffix.lower() not in (".csv", ".json"):
            raise InferenceError(f"automation file {automation} must end in .csv or .json")

        t0 = time.perf_counter()
        auto = self.predict(source, progress=progress)
        t1 = time.perf_counter()
        keep = ([], []) if plot is not None else None
        clip = not subtype.startswith(("FLOAT", "DOUBLE"))
        clipped = 0
        fd, tmp = tempfile.mkstemp(
            prefix=f".{out_path.name}.",
            suffix=".part" + out_path.suffix,
            dir=str(out_path.parent if str(out_path.parent) else "."),
        )
        os.close(fd)
        try:
            with sf.SoundFile(
                tmp, "w", samplerate=source.sample_rate, channels=source.channels, format=fmt, subtype=subtype
            ) as f:

                def write(y: np.ndarray) -> None:
                    nonlocal clipped
                    if clip:
                        over = np.abs(y) > 1.0
                        if over.any():
                            clipped += int(over.sum())
                            y = np.clip(y, -1.0, 1.0)
                    f.write(y.T)

                stats = self.render(source, auto, write, progress=progress, keep=keep)
            os.chmod(tmp, _new_file_mode(out_path))  # mkstemp makes it private; give it the usual permissions
            os.replace(tmp, out_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        stats.clipped_samples = clipped
        stats.predict_s, stats.render_s = t1 - t0, time.perf_counter() - t1
        stats.wall_s = time.perf_counter() - t0
        if automation is not None:
            auto.save(automation)
        if plot is not None:
            x = np.concatenate(keep[0])[: self._model_length(source)]
            y = np.concatenate(keep[1]) if keep[1] else np.zeros(0, dtype=np.float32)
            plot_automation(x, y, auto, self.sample_rate, plot, title=f"{in_path.name} -> {out_path.name}")
        self.last_stats = stats
        return stats


def _new_file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def plot_automation(
    inp: np.ndarray,
    out: np.ndarray,
    automation: Automation,
    sample_rate: int,
    path: PathLike,
    title: str = "",
    max_columns: int = 3000,
) -> None:
    """Input and output spectrograms (``callbacks.spectrogram_db``) above a heat map of the automation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .callbacks import spectrogram_db

    seconds = len(inp) / sample_rate
    names = automation.names
    fig, axes = plt.subplots(3, 1, figsize=(12, 9), gridspec_kw={"height_ratios": [1, 1, 1.4]})
    for ax, audio, label in zip(axes[:2], (inp, out), ("input", "output")):
        audio = np.pad(audio, (0, max(0, 1024 - len(audio))))
        spec = spectrogram_db(audio)
        if spec.shape[1] > max_columns:  # display only: max-pool time so the PNG stays small
            k = -(-spec.shape[1] // max_columns)
            cols = spec.shape[1] // k * k
            spec = spec[:, :cols].reshape(spec.shape[0], -1, k).max(axis=2)
        ax.imshow(spec, origin="lower", aspect="auto", extent=(0, seconds, 0, sample_rate / 2000), cmap="magma")
        ax.set_ylabel(f"{label}\nkHz")
    axes[2].imshow(
        automation.normalized.T,
        aspect="auto",
        vmin=0,
        vmax=1,
        cmap="viridis",
        interpolation="nearest",
        extent=(0, len(automation.normalized) / automation.frame_rate, len(names), 0),
    )
    axes[2].set_yticks(np.arange(len(names)) + 0.5)
    axes[2].set_yticklabels(names, fontsize=max(4, 9 - len(names) // 10))
    axes[2].set_xlabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)
