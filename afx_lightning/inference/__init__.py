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

Layers, each importing only those below it (torch ← numpy ← file, as asteroid's ``separate.py``):

* :mod:`.errors`: :class:`InferenceError`, the one-line error of ``afx process``;
* :mod:`.model`: :class:`InferenceModel`, a trained encoder and its plugin layer without the training module;
* :mod:`.checkpoints`: :func:`load_inference_model` (what the commands use) and :func:`load_model` (the whole
  training module), weights-only and from declared classes only;
* :mod:`.streaming`: :class:`StreamingResampler` and the ring buffer the contexts are cut from;
* :mod:`.automation`: θ smoothing and the CSV / JSON export (:class:`Automation`);
* :mod:`.audio_io`: file and array sources, the output format and path checks (the atomic write and the format
  rule are :mod:`afx_lightning.data.audio_files`'s, shared with ``afx predict``);
* :mod:`.processor`: :class:`Processor` (the passes above, incl. the per-file log-mel) and :class:`ProcessStats`;
* the ``--plot`` figure is :func:`afx_lightning.plots.plot_automation`, drawn like the media callback's.
"""

from ..plots import plot_automation
from .audio_io import READ_BLOCK, _array_source, _check_output, _file_source, _output_format, _Source
from .automation import Automation, max_step, smooth_automation
from .checkpoints import (
    DEFAULT_CONTEXT,
    SAFE_GLOBALS,
    _chain_source,
    _safe_load,
    build_inference_model,
    build_model,
    load_inference_model,
    load_model,
    model_config,
    model_preprocessing,
)
from .errors import InferenceError, PathLike
from .model import InferenceModel
from .processor import Processor, ProcessStats
from .streaming import StreamingResampler

__all__ = [
    "DEFAULT_CONTEXT",
    "READ_BLOCK",
    "SAFE_GLOBALS",
    "Automation",
    "InferenceError",
    "InferenceModel",
    "PathLike",
    "ProcessStats",
    "Processor",
    "StreamingResampler",
    "build_inference_model",
    "build_model",
    "load_inference_model",
    "load_model",
    "max_step",
    "model_config",
    "model_preprocessing",
    "plot_automation",
    "smooth_automation",
    # internal, imported by tests from here as before the split
    "_Source",
    "_array_source",
    "_chain_source",
    "_check_output",
    "_file_source",
    "_output_format",
    "_safe_load",
]
