"""The two-pass :class:`Processor` (predict θ over a stream, render it through the chain): see the package
docstring of :mod:`afx_lightning.inference`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..constants import PREDICT_SMOOTHING_HZ
from ..data.audio_files import atomic_output
from ..data.preprocess import LoudnessMeter, Preprocessing
from ..plots import plot_automation
from .audio_io import _array_source, _check_output, _file_source, _output_format, _Source
from .automation import Automation, smooth_automation
from .checkpoints import DEFAULT_CONTEXT
from .errors import InferenceError, PathLike
from .streaming import StreamingResampler, _Ring

#: frames per pool call when rendering a file: one round trip to the workers per chunk, not per frame (20 s of
#: stereo through pb_mb_compressor: 0.76 s frame by frame, the plugins' own time is about a quarter of it)
RENDER_CHUNK_FRAMES = 64


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


class _Int8Body(torch.nn.Module):
    """An encoder body that runs in int8 (PyTorch's x86 backend: per-channel symmetric weights, batch norms folded
    into the convolutions), its activation ranges calibrated by min/max on a few contexts of its first batch.

    Convolutions in int8 (VNNI on this kind of CPU) ran the Inception encoder 4.6-6.6x faster than float32 on
    2 cores. On a trained checkpoint θ stayed within 0.017 of float (normalised units; mean 0.0007) on a steady
    file and one fading in by 30 dB, within 0.06 (mean 0.0013) on one fading out. The calibration (tracing,
    observing, converting) costs ~2 s, once per Processor."""

    #: the calibration contexts are also seen this many dB quieter and louder: calibrated on a quiet start alone,
    #: the loud rest of a file clipped the activations (θ off by up to 0.23 on a trained checkpoint, 0.017 with it)
    LEVEL_SPREAD_DB = (-24.0, -12.0, 12.0, 24.0)

    def __init__(self, body: torch.nn.Module, norm: torch.nn.BatchNorm2d, calibration_items: int = 4) -> None:
        super().__init__()
        import copy

        self.float_body = copy.deepcopy(body).eval().to(memory_format=torch.contiguous_format)
        # g dB more level is g / 10 more log10 power: after the front end's batch norm, this much per dB
        scale = 1.0 / torch.sqrt(norm.running_var + norm.eps)
        if norm.affine:
            scale = scale * norm.weight
        self.register_buffer("shift_per_db", (scale / 10.0).detach().reshape(1, -1, 1, 1).clone())
        self.calibration_items = calibration_items
        self.int8: torch.nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if self.int8 is None:
            pick = x[torch.linspace(0, len(x) - 1, min(len(x), self.calibration_items)).long()]
            spread = [pick] + [pick + db * self.shift_per_db for db in self.LEVEL_SPREAD_DB]
            self.int8 = _int8(self.float_body, torch.cat(spread))
        return self.int8(x)


def _int8(body: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    config = QConfig(  # min/max: a handful of contexts suffice (the default histogram observer is ~3x slower)
        activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    prepared = prepare_fx(
        body, get_default_qconfig_mapping("x86").set_global(config), example_inputs=(calibration[:1],)
    )
    with torch.no_grad():
        prepared(calibration)
    return convert_fx(prepared)


def _quantized(encoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``encoder`` (eval mode) whose body runs in int8 (:class:`_Int8Body`), for inference only."""
    import copy

    if getattr(encoder, "streaming", False):
        raise InferenceError(
            f"quantize: {type(encoder).__name__} is a streaming encoder (one network column per frame); int8 is "
            "for the CNN encoders, whose every frame runs the whole network"
        )
    fast = copy.deepcopy(encoder).eval()
    fast.body = _Int8Body(encoder.body, encoder.frontend.norm)
    if hasattr(fast, "channels_last"):
        fast.channels_last = False  # the int8 kernels take NCHW and reorder internally
    return fast


class Processor:
    """Applies a trained model to whole files or arrays (see the module docstring).

    Args:
        model: an :class:`~afx_lightning.inference.InferenceModel` (from :func:`load_inference_model`) or the
            training module :class:`~afx_lightning.module.DeepAFx` itself: anything with ``encoder``, ``fx``,
            ``sample_rate``, ``frame_size``, ``smoothing_hz`` (and optionally ``context_size``, ``preprocessing``).
        smoothing_hz: cutoff of the zero-phase low-pass on the θ curves (frame rate ≈ 21.5 Hz); 0 disables it;
            None: the model's ``smoothing_hz`` (2 Hz unless its recipe set another).
        device: where the encoder runs.
        context_size: encoder context in samples; default: the model's ``context_size`` (set by :func:`load_inference_model`
            from training) or 40 960.
        batch_size: contexts per encoder call.
        predict_hop: run the encoder on every ``predict_hop``-th frame only and interpolate the curves linearly
            in between (the last frame is always predicted). 1 = every frame, as in training. The encoder is
            almost all of the cost on a CPU; with 2 Hz smoothing a hop of 4 (5.4 predictions/s) changes the
            smoothed automation little and is 4x faster.
        preprocessing: what the input goes through before the encoder and the chain see it; default: the model's
            ``preprocessing`` (set by the checkpoint loader from training), else none.
        share_log_mel: compute the log-mel front end once per file and cut each context's frames out of it
            (:attr:`shares_log_mel` says when the front end allows it) instead of once per overlapping context;
            False encodes every context's audio on its own, as training does. Same θ within float rounding.
        compile: run the encoder's body through ``torch.compile`` (inductor, frozen weights: batch norms folded
            into the convolutions) on fixed-size batches. About 3x faster for the Inception encoder on CPU, θ
            within 1e-6; the compilation costs a minute or more on a busy 2-core machine (less with inductor's
            on-disk cache warm), so it pays off for long files or many of them.
        quantize: run the encoder's body in int8 (:class:`_Int8Body`): 4.6-6.6x faster Inception prediction on
            2 CPU cores, θ within 0.02-0.06 of float32 (mean ~0.001); calibrated once, on the first file's first
            contexts seen at several levels. Not with ``compile`` nor the streaming encoder.
        render_chunk_frames: consecutive frames sent to the plugin workers per call (each channel's instance
            renders them in order; the output is the same as frame by frame). One round trip per frame made the
            render several times slower than the plugins themselves.

    The plugin worker processes outlive a file: the next file with the same channel layout renders in the same
    pool, on fresh plugin instances (no state crosses files), so only the first file pays the workers' start-up
    (~0.75 s on 2 cores: an interpreter each, importing numpy and the chain's backend), and :meth:`process_file`
    starts them before it predicts, so that they get ready while the encoder runs. :meth:`close` (or ``with``) stops
    them; otherwise they stop when the Processor is collected or the interpreter exits.
    """

    def __init__(
        self,
        model,
        smoothing_hz: float | None = None,
        device: str | torch.device = "cpu",
        context_size: int | None = None,
        batch_size: int = 64,
        predict_hop: int = 1,
        preprocessing: Preprocessing | None = None,
        share_log_mel: bool = True,
        compile: bool = False,
        quantize: bool = False,
        render_chunk_frames: int = RENDER_CHUNK_FRAMES,
    ):
        if compile and quantize:
            raise ValueError("compile and quantize are two ways to speed up the encoder: choose one")
        if predict_hop < 1:
            raise ValueError(f"predict_hop must be at least 1, got {predict_hop}")
        self.preprocessing = preprocessing or getattr(model, "preprocessing", None) or Preprocessing()
        self.predict_hop = int(predict_hop)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        if smoothing_hz is None:  # the model's own (the recipe's model.smoothing_hz, stored in its checkpoint)
            smoothing_hz = getattr(model, "smoothing_hz", PREDICT_SMOOTHING_HZ)
        self.smoothing_hz = float(smoothing_hz or 0.0)
        self.sample_rate = int(model.sample_rate)
        self.frame_size = int(model.frame_size)
        self.context_size = int(context_size or getattr(model, "context_size", None) or DEFAULT_CONTEXT)
        if self.context_size < self.frame_size:
            raise ValueError(f"context_size ({self.context_size}) must be at least the frame size ({self.frame_size})")
        self.context_before = (self.context_size - self.frame_size) // 2
        self.batch_size = int(batch_size)
        if render_chunk_frames < 1:
            raise ValueError(f"render_chunk_frames must be at least 1, got {render_chunk_frames}")
        self.render_chunk_frames = int(render_chunk_frames)
        self.share_log_mel = bool(share_log_mel)
        self.fixed_batch = bool(compile)  # a compiled network sees one input shape: short batches are padded
        self._encoder = model.encoder
        if compile:
            self._encoder = _compiled(model.encoder)
        elif quantize:
            self._encoder = _quantized(model.encoder)
        self.fx = model.fx
        self.latency = int(self.fx.latency)
        self.last_stats: ProcessStats | None = None
        self._pool = None  # the render pass's FxWorkerPool, kept for the next file of the same layout
        from ..data import DataError

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
        from ..blackbox.channels import ChannelLayout

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
        from ..encoders import LogMelStream, ParameterEncoder

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
        from ..encoders import LogMelStream

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
        chunk_frames = self.render_chunk_frames
        pool = self._render_pool(instances, width)
        faults_before = pool.stats.as_dict()
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

        def next_frame() -> np.ndarray:
            nonlocal pending, done_input
            while not done_input and pending.shape[1] < n:
                chunk = next(stream, None)
                if chunk is None:
                    done_input = True
                else:
                    pending = np.concatenate([pending, chunk], axis=1)
            frame = np.zeros((c, n), dtype=np.float32)
            k = min(n, pending.shape[1])
            frame[:, :k], pending = pending[:, :k], pending[:, k:]
            return frame

        try:
            with self._bar(total_frames, "render", progress) as bar:
                for first in range(0, total_frames, chunk_frames):
                    # a chunk of consecutive frames per pool call: each slot renders its frames in order
                    count = min(chunk_frames, total_frames - first)
                    frames = np.stack([next_frame() for _ in range(count)])  # [F, C, N]
                    rows = np.minimum(np.arange(first, first + count), len(theta) - 1)
                    params = layout.repeat(theta[rows][:, None])  # linked
                    slots = list(range(instances)) * count
                    fresh = [first == 0 and f == 0 for f in range(count) for _ in range(instances)]
                    result = pool.render("process", slots, fresh, layout.split(frames), params)
                    wet = layout.merge(result.out)[:, 0]  # [F, C, N]
                    failed = layout.channel_failed(result.failed)  # [F, C]
                    for f in range(count):
                        frame = frames[f]
                        stats.dropped_frames += bool(failed[f].any())
                        y = np.stack([d.place(frame[i], wet[f, i], bool(failed[f, i])) for i, d in enumerate(dry)])
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
                    bar.update(count)
            emit(np.stack([b.flush() for b in back]))
            if written < out_total:  # rounding of the two rate conversions: at most a sample or two
                emit(np.zeros((c, out_total - written), dtype=np.float32))
            faults = {k: v - faults_before[k] for k, v in pool.stats.as_dict().items()}  # this file's, not the pool's
            stats.faults = {k: v for k, v in faults.items() if v}
        except BaseException:
            self.close()  # a render cut short (an error, Ctrl-C) may leave rows in flight: start clean next time
            raise
        return stats

    def _render_pool(self, instances: int, width: int, wait_ready: bool = True):
        """The worker pool for a layout of ``instances`` x ``width`` channels: the previous file's if it matches.
        ``wait_ready=False``: a new pool's workers start while the caller goes on (predicting the file)."""
        from ..blackbox.pool import FxWorkerPool, SlotGroup

        pool = self._pool
        if pool is not None and (
            pool.closed or (pool.groups["process"].num_slots, pool.channels) != (instances, width)
        ):
            self.close()
        if self._pool is None:
            self._pool = FxWorkerPool(  # one worker per channel instance (up to the CPUs): a crash leaves the others
                self.fx.chain_factory,
                {"process": SlotGroup(instances, 1, frames=self.render_chunk_frames)},
                channels=width,
                block_size=self.frame_size,
                num_params=self.fx.info.num_params,
                sample_rate=self.sample_rate,
                num_workers=max(1, min(instances, os.cpu_count() or 1)),
                timeout_s=self.fx.timeout_s,
                max_retries=self.fx.max_retries,
                build_timeout_s=self.fx.build_timeout_s,
                wait_ready=wait_ready,
            )
        return self._pool

    def _start_workers(self, source: _Source) -> None:
        """Launch (or keep) the render workers for this source's layout without waiting: they start up while
        the encoder predicts. A layout the chain cannot take is refused here, before the encoder runs."""
        layout = self._layout(source.channels)
        self._render_pool(layout.instances, layout.width, wait_ready=False)

    def close(self) -> None:
        """Stop the render pass's plugin workers (idempotent; the next file starts new ones)."""
        if self._pool is not None:
            self._pool.close()
        self._pool = None

    def __enter__(self) -> Processor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ public API
    def process_array(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, Automation]:
        """``audio`` [C, T] float32 at any rate -> (output [C, T] at that rate, automation)."""
        source = _array_source(audio, sample_rate)
        t0 = time.perf_counter()
        self._start_workers(source)
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
        self._start_workers(source)
        auto = self.predict(source, progress=progress)
        t1 = time.perf_counter()
        keep = ([], []) if plot is not None else None
        clip = not subtype.startswith(("FLOAT", "DOUBLE"))
        clipped = 0
        with (
            atomic_output(out_path) as tmp,
            sf.SoundFile(
                tmp, "w", samplerate=source.sample_rate, channels=source.channels, format=fmt, subtype=subtype
            ) as f,
        ):

            def write(y: np.ndarray) -> None:
                nonlocal clipped
                if clip:
                    over = np.abs(y) > 1.0
                    if over.any():
                        clipped += int(over.sum())
                        y = np.clip(y, -1.0, 1.0)
                f.write(y.T)

            stats = self.render(source, auto, write, progress=progress, keep=keep)
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
