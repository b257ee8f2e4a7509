"""The LightningModule: encoder -> black-box plugin layer -> delay-invariant loss. Wiring only.

DSP lives in the chains, gradient estimation and plugin processes in ``blackbox``, the loss in ``loss.py``,
metrics in ``metrics.py``. This file decides what is logged and how the parts are connected.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from .blackbox import FxConfig
from .constants import PREDICT_SMOOTHING_HZ
from .data import AudioFxDataModule
from .data.preprocess import Preprocessing
from .data.writer import FilePrediction, PredictOptions
from .description import CONFIG_FORMAT, CONFIG_KEY, chain_reference_name, description_parts
from .encoders import InceptionEncoder, ParameterEncoder, build_encoder
from .loss import LossConfig
from .metrics import mfcc_distance

EncoderFactory = Callable[[int], ParameterEncoder]
DEFAULT_FX, DEFAULT_LOSS = FxConfig(), LossConfig()  # frozen: one default instance is safe to share

_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


class DeepAFx(pl.LightningModule):
    """DeepAFx: a deep encoder drives real plugins; SPSA gradients flow through them.

    Composed from parts, each with a plain-data ``get_config()`` that checkpoints store (:meth:`get_config`):

    Args:
        encoder: encoder class and its options; ``num_params`` is filled in from the chain
            (YAML: ``class_path: afx_lightning.encoders.InceptionEncoder`` plus ``init_args``).
        fx: the black-box layer: chain, gradient (SPSA/FD, ε, K), worker pool, SPSA seed
            (:class:`~afx_lightning.blackbox.FxConfig`; YAML ``fx: {chain: pb_mastering, epsilon: 0.01}``).
        loss: the delay-invariant loss: alignment search and weights (:class:`~afx_lightning.loss.LossConfig`;
            the chain's reported latency is added to ``max_shift``).
        sample_rate, frame_size: audio the plugins run at (linked from ``data.*`` by the CLI).
        channels: channels of the training audio (linked from ``data.channels``): θ is predicted once per frame and
            drives every channel (linked); a mono chain renders each channel through its own plugin instance,
            a C-channel chain the C-channel block (``blackbox.channels.ChannelLayout``). The loss compares all channels.
        num_slots, num_eval_slots: plugin slots for training / evaluation rows (linked from the batch sizes).
        lr: Adam learning rate (paper: 1e-4).
        pretrain_steps, pretrain_lr: optional first steps that regress the encoder onto the chain's default
            parameters (MSE), as the official code does, before plugins are used.
        plateau_factor, plateau_patience, min_lr: ReduceLROnPlateau on ``val/loss`` (paper: 0.2, 20, 1.6e-6);
            ``plateau_patience=0`` disables it.
        start_at_defaults: initialise the encoder's output bias at the anchor: the chain's default parameters, or
            the setting a ``schedule.MatchedStart`` found for the training pairs (:meth:`start_at`).
        start_spread: how far the untrained encoder's outputs spread around the anchor (the head's initial weights
            are scaled by it, :meth:`~afx_lightning.encoders.base.ParameterEncoder.init_output_bias`); 0 starts
            every frame exactly at the anchor.
        prior_weight: weight of an L2 pull of the predicted parameters toward the anchor (normalised
            units, summed over parameters, so each one feels the same pull), added to the training loss only.
            SPSA gives every parameter a gradient estimate of the same size whether the loss depends on it or
            not, so without a pull the parameters the loss cannot see random-walk to the edges of their ranges
            (a 32-band EQ ends at +-30 dB per band); with it, only those the loss keeps asking for move.
        smoothing_hz: the low-pass cutoff ``afx process`` / ``evaluate`` / ``predict`` apply to the predicted
            automation unless told otherwise (stored in the checkpoint: the recipe knows its task). 2 Hz suits
            slow moves (mastering); 0 keeps every frame's decision, which removing short events needs.
    """

    #: the module's own options (the optimisation), stored in checkpoints under ``options``
    OPTIONS = (
        "lr",
        "pretrain_steps",
        "pretrain_lr",
        "plateau_factor",
        "plateau_patience",
        "min_lr",
        "start_at_defaults",
        "start_spread",
        "prior_weight",
        "smoothing_hz",
    )

    def __init__(
        self,
        encoder: EncoderFactory | None = None,
        fx: FxConfig = DEFAULT_FX,
        loss: LossConfig = DEFAULT_LOSS,
        sample_rate: int = 22050,
        frame_size: int = 1024,
        channels: int = 1,
        num_slots: int = 100,
        num_eval_slots: int = 8,
        lr: float = 1e-4,
        pretrain_steps: int = 0,
        pretrain_lr: float = 1e-3,
        plateau_factor: float = 0.2,
        plateau_patience: int = 20,
        min_lr: float = 1.6e-6,
        start_at_defaults: bool = True,
        start_spread: float = 0.1,
        prior_weight: float = 0.0,
        smoothing_hz: float = PREDICT_SMOOTHING_HZ,
    ):
        super().__init__()
        # a mapping: hyper-parameters given back by load_from_checkpoint (they are stored as plain data)
        fx = FxConfig.from_config(fx) if isinstance(fx, Mapping) else fx
        loss = LossConfig.from_config(loss) if isinstance(loss, Mapping) else loss
        self.fx_config, self.loss_config = fx, loss
        self.save_hyperparameters(ignore=["encoder", "fx", "loss"])
        self.hparams.update(fx=fx.get_config(), loss=loss.get_config())
        self.fx = fx.build(sample_rate, frame_size, channels, num_slots, num_eval_slots)
        make_encoder = encoder if encoder is not None else InceptionEncoder
        self.encoder = build_encoder(make_encoder, self.fx.num_params, sample_rate, fx.chain)
        self.context_size: int | None = None  # the encoder context of the data it was trained on (get_config)
        # what its inputs went through in training (the data module's, or the checkpoint's); None: not known
        self.preprocessing: Preprocessing | None = None
        self.register_buffer(
            "defaults", torch.from_numpy(self.fx.codec.defaults), persistent=False
        )  # one per encoder output
        # where training starts and what the prior pulls toward (and held columns are held at): the defaults
        # unless start_at() moves it; saved in checkpoints so that a resumed run keeps its anchor
        self.register_buffer("anchor", self.defaults.clone(), persistent=False)
        self.anchor_origin = "defaults"
        if smoothing_hz < 0:
            raise ValueError(f"model.smoothing_hz must be >= 0 (0: no smoothing), got {smoothing_hz}")
        if not 0.0 <= start_spread <= 1.0:
            raise ValueError(f"model.start_spread must lie in [0, 1], got {start_spread}")
        if start_at_defaults:
            self.encoder.init_output_bias(self.anchor, weight_scale=start_spread)
        self.loss = loss.build(self.fx.latency, sample_rate)
        self._force_fresh = False
        self._held: Tensor | None = None  # encoder outputs held at the anchor (hold_at_anchor)
        self._processor = None  # afx predict: one inference.Processor per run
        self._val_outputs: dict[int, dict[int, tuple]] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], chain: Any, encoder: EncoderFactory) -> DeepAFx:
        """An untrained model for inference (one slot, one worker) from a checkpoint's description
        (:meth:`get_config`; format 1's flat options are read by :func:`~afx_lightning.description.description_parts`). ``chain`` and
        ``encoder`` are the description's, already checked by the caller (``inference.build_model``)."""
        fx, loss, options = description_parts(config, cls.OPTIONS)
        return cls(
            encoder=encoder,
            fx=FxConfig.from_config(fx, chain=chain, workers=1),
            loss=LossConfig.from_config(loss),
            sample_rate=int(config["sample_rate"]),
            frame_size=int(config["frame_size"]),
            channels=int(config.get("channels") or 1),  # of the training audio (older descriptions: mono)
            num_slots=1,
            num_eval_slots=1,
            **options,
        )

    # ------------------------------------------------------------------ parts
    @property
    def param_names(self) -> list[str]:
        return self.fx.info.param_names

    # the audio format and smoothing as attributes, as ``inference.InferenceModel`` has them (the Processor's view)
    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    @property
    def frame_size(self) -> int:
        return int(self.hparams.frame_size)

    @property
    def smoothing_hz(self) -> float:
        return float(self.hparams.smoothing_hz)

    def forward(self, context: Tensor) -> Tensor:
        """Context audio [M, C, T] -> normalised parameters [M, P]."""
        return self.encoder(context)

    @torch.no_grad()
    def start_at(self, columns: Tensor, origin: str) -> None:
        """Move the anchor to normalised encoder outputs ``columns`` [W] (``fx.codec.encode`` of a θ) before
        training: the output bias starts there (with ``start_at_defaults``), the prior and the pretraining pull
        toward it. ``origin`` says where it came from (logged, saved)."""
        columns = torch.as_tensor(columns, dtype=self.anchor.dtype).flatten().to(self.anchor.device)
        if columns.shape != self.anchor.shape:
            raise ValueError(f"an anchor must be shaped {tuple(self.anchor.shape)}, got {tuple(columns.shape)}")
        if not bool(((columns >= 0) & (columns <= 1)).all()):
            raise ValueError("an anchor must lie in [0, 1] (normalised parameters)")
        self.anchor.copy_(columns)
        self.anchor_origin = origin
        if self.hparams.start_at_defaults:
            self.encoder.init_output_bias(self.anchor, weight_scale=self.hparams.start_spread)

    def hold_at_anchor(self, columns: Tensor | None) -> None:
        """Hold some encoder outputs (bool ``[W]``) at the anchor (the chain's defaults unless :meth:`start_at`
        moved it) in :meth:`render` (training and evaluation): their θ is exactly that and gets no gradient. None
        releases them. Used by ``schedule.GreedyStages`` to train a chain plugin by plugin."""
        if columns is not None and tuple(columns.shape) != tuple(self.defaults.shape):
            raise ValueError(f"held columns must be shaped {tuple(self.defaults.shape)}, got {tuple(columns.shape)}")
        self._held = None if columns is None or not bool(columns.any()) else columns.to(self.defaults.device)

    def render(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Predict parameters and render the batch's frames through the plugins: (output, theta)."""
        theta = self(batch["context"])
        if self._held is not None:
            theta = torch.where(self._held.to(theta.device), self.anchor.to(theta.dtype), theta)
        fresh = batch["fresh"]
        if self._force_fresh and self.training:
            fresh, self._force_fresh = torch.ones_like(fresh), False
        return self.fx(batch["frame"], theta, batch["slot"], fresh), theta

    def _loss(self, out: Tensor, target: Tensor, stage: str | None = None) -> Tensor:
        parts = self.loss.per_item(out, target)
        per_item = parts.loss
        if stage is not None and self.loss.mfcc_weight > 0:
            self.log(f"{stage}/loss_mfcc", parts.mfcc.mean(), batch_size=len(per_item), sync_dist=stage != "train")
        # discrete parameters' gradient from the true loss of the perturbed renders (zero-valued; 0 without any)
        per_item = per_item + self.fx.discrete_term(lambda y: self.loss.per_item(y, target).loss)
        failed = self.fx.last_result.failed if self.fx.last_result is not None else None
        if failed is not None and failed.any() and len(failed) == len(per_item):
            keep = torch.from_numpy(~failed).to(per_item.device)
            return per_item[keep].mean() if keep.any() else per_item.sum() * 0.0
        return per_item.mean()

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        m = batch["frame"].shape[0]
        if self.global_step < self.hparams.pretrain_steps:
            theta = self(batch["context"])
            loss = torch.nn.functional.mse_loss(theta, self.anchor.expand_as(theta))
            self.log("train/pretrain_mse", loss, prog_bar=True, batch_size=m)
            self._force_fresh = True  # the plugins have not seen these frames: restart them when they join
            return loss
        out, theta = self.render(batch)
        loss = self._loss(out, batch["target"], "train")
        self.log("train/loss", loss, prog_bar=True, batch_size=m)
        if self.hparams.prior_weight > 0:
            prior = (theta - self.anchor).pow(2).sum(dim=-1).mean()
            self.log("train/prior", prior, batch_size=m)
            loss = loss + self.hparams.prior_weight * prior
        result = self.fx.last_result
        if result is not None:
            self.log("fx/step_s", result.wall_s, batch_size=m)
            self.log("fx/plugin_cpu_s", result.plugin_cpu_s, batch_size=m)
        for key, value in {**self.fx.fault_stats.as_dict(), **self.fx.build_stats.as_dict()}.items():
            self.log(f"fx/{key}", float(value), batch_size=m)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        out, theta = self.render(batch)
        m = out.shape[0]
        self.log(f"{stage}/loss", self._loss(out, batch["target"], stage), prog_bar=True, batch_size=m, sync_dist=True)
        self.log(f"{stage}/loss_identity", self.loss(batch["frame"], batch["target"]), batch_size=m, sync_dist=True)
        clips = self._val_outputs
        for row in range(m):
            clip, pos = int(batch["clip"][row]), int(batch["position"][row])
            clips.setdefault(clip, {})[pos] = (
                batch["frame"][row].cpu(),
                batch["target"][row].cpu(),
                out[row].cpu(),
                theta[row].detach().cpu(),
            )

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = {}

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._log_clip_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_clip_metrics("test")

    def evaluated_clips(self) -> dict[int, dict[str, Tensor]]:
        """The last evaluation's clips reassembled: input, target, output [C, T - L] and theta [frames, P].

        The output is latency-compensated as ``afx process`` does it: its first ``L = fx.latency`` samples are
        the chain's delay and are dropped, and input and target lose their last L samples (the output they
        would meet was never rendered), so the model's and the identity's scores (and the logged media) compare
        the same span with the target. A clip no longer than L is left out.
        """
        lat = int(self.fx.latency)
        clips = {}
        for clip, frames in sorted(self._val_outputs.items()):
            ordered = [frames[p] for p in sorted(frames)]
            output = torch.cat([f[2] for f in ordered], dim=-1)
            n = output.shape[-1] - lat
            if n <= 0:
                continue
            clips[clip] = {
                "input": torch.cat([f[0] for f in ordered], dim=-1)[..., :n],
                "target": torch.cat([f[1] for f in ordered], dim=-1)[..., :n],
                "output": output[..., lat:],
                "theta": torch.stack([f[3] for f in ordered]),
            }
        return clips

    def _log_clip_metrics(self, stage: str) -> None:
        clips = self.evaluated_clips()
        if not clips:
            return
        sr = self.hparams.sample_rate
        # per-coefficient cosine distance over time: the official code's (and Table 1's) d_MFCC
        # clips are [C, T]: one distance per channel, averaged (a downmix would not see a channel gone wrong)
        model = torch.stack(
            [mfcc_distance(c["output"], c["target"], sr, over="coefficients").mean() for c in clips.values()]
        )
        identity = torch.stack(
            [mfcc_distance(c["input"], c["target"], sr, over="coefficients").mean() for c in clips.values()]
        )
        self.log(f"{stage}/d_mfcc", model.mean(), sync_dist=True)  # ranks validate disjoint clips
        self.log(f"{stage}/d_mfcc_identity", identity.mean(), sync_dist=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.plateau_patience <= 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            factor=self.hparams.plateau_factor,
            patience=self.hparams.plateau_patience,
            min_lr=self.hparams.min_lr,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Pre-training uses its own learning rate; the real one takes over afterwards."""
        if self.hparams.pretrain_steps <= 0 or self.global_step > self.hparams.pretrain_steps:
            return
        lr = self.hparams.pretrain_lr if self.global_step < self.hparams.pretrain_steps else self.hparams.lr
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = lr

    def get_config(self) -> dict[str, Any]:
        """The model as plain data, from its parts' ``get_config()``: everything ``afx process`` / ``afx evaluate``
        need to rebuild it (:meth:`from_config`).

        Written into every checkpoint (``afx_model``) so that loading needs neither the tool that trained it
        (LightningCLI adds its own keys to ``hyper_parameters``) nor unpickling anything but weights. ``chain`` is
        the chain as plain data (a registered name, ``module:function``, or a declaration with its ranges written
        out), ``fx`` the layer's other options, ``encoder`` a ``class_path``/``init_args`` pair, ``loss`` the loss,
        ``options`` the optimisation; the data-side facts (context, preprocessing) come from the attached data
        module when there is one.
        """
        from .registry import chain_declaration

        sample_rate, frame_size = int(self.hparams["sample_rate"]), int(self.hparams["frame_size"])
        chain = chain_declaration(self.fx.chain_factory, sample_rate, frame_size)  # a declared chain: plain data
        if chain is None:
            chain = chain_reference_name(self.fx_config.chain)
        if chain is None:
            chain = self.fx.info.name  # not reloadable unless registered under this name: load_model says so
        data: dict[str, Any] = {"context_size": self.context_size}
        value = getattr(self._datamodule(), "context_size", None)
        if value is not None and _plain(value):
            data["context_size"] = value
        preprocessing = self._trained_preprocessing(prefer_data=True)
        return {
            "format": CONFIG_FORMAT,
            "chain": chain,
            "num_params": int(self.fx.num_params),
            "param_names": list(self.param_names),
            "encoder": self.encoder.get_config(),
            "fx": {k: v for k, v in self.fx_config.get_config().items() if k != "chain"},
            "loss": self.loss_config.get_config(),
            "sample_rate": sample_rate,
            "frame_size": frame_size,
            "channels": int(self.fx.channels),  # of the training audio: afx process / evaluate rebuild the layout
            "data": data,
            **({"preprocessing": preprocessing.to_config()} if preprocessing is not None else {}),
            "options": {n: self.hparams[n] for n in self.OPTIONS},
        }

    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _trained_preprocessing(self, prefer_data: bool) -> Preprocessing | None:
        """The preprocessing of this model's inputs: while training, the data module's (``prefer_data``); for
        inference, the one it was trained with (restored from its checkpoint), else the data module's."""
        data = getattr(self._datamodule(), "preprocessing", None)
        data = data if isinstance(data, Preprocessing) else None
        if prefer_data:
            return data if data is not None else self.preprocessing
        return self.preprocessing if self.preprocessing is not None else data

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the perturbation stream continues where it stopped on resume (plugin state cannot be saved: the
        # slots' instances restart fresh mid-clip, a short transient)
        self.fx.directions.save_to(checkpoint)  # one draw count resumes every rank's own stream
        # plain data (weights-only loadable): what ``afx_lightning.inference.load_model`` rebuilds the model from
        checkpoint[CONFIG_KEY] = self.get_config()
        checkpoint["afx_encoder"] = self.encoder.get_config()  # read by afx-lightning before the afx_model description
        checkpoint["afx_anchor"] = {"columns": self.anchor.tolist(), "origin": self.anchor_origin}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.fx.directions.load_from(checkpoint)
        anchor = checkpoint.get("afx_anchor")  # absent before anchors: the defaults
        if anchor is not None and len(anchor["columns"]) == len(self.anchor):
            self.anchor.copy_(torch.tensor(anchor["columns"], dtype=self.anchor.dtype))
            self.anchor_origin = str(anchor["origin"])
        config = checkpoint.get(CONFIG_KEY)
        compare = getattr(self.encoder, "differences_from", None)  # a ParameterEncoder's
        differences = compare(config.get("encoder")) if compare and isinstance(config, dict) else []
        if differences:  # e.g. an option whose default changed since: the weights load, the model is another one
            warnings.warn(
                f"the checkpoint's encoder was trained with other options than model.encoder has now "
                f"({'; '.join(differences)}): set them as trained to continue that model",
                stacklevel=2,
            )
        if isinstance(config, dict) and "preprocessing" in config:
            self.preprocessing = Preprocessing.from_config(config["preprocessing"])
            data = getattr(self._datamodule(), "preprocessing", None)
            if isinstance(data, Preprocessing) and data != self.preprocessing:
                warnings.warn(
                    f"the checkpoint was trained on inputs preprocessed with {self.preprocessing.describe()}, the data "
                    f"module preprocesses with {data.describe()} (data.highpass_hz / data.loudness_lufs)",
                    stacklevel=2,
                )

    # ------------------------------------------------------------------ predict (``afx predict``)
    def on_predict_start(self) -> None:
        self._processor = None

    def predict_step(self, batch: Any, batch_idx: int) -> FilePrediction:
        """Process one whole file (the data module's ``predict_files``) exactly as ``afx process`` does:
        one :class:`~afx_lightning.inference.Processor` per predict run, its input preprocessed as in training
        (the checkpoint's preprocessing, else the data module's). Returns the processed audio; the
        :class:`~afx_lightning.data.writer.PredictionFileWriter` that ``afx predict`` adds writes it."""
        import soundfile as sf

        from .data.datasets import read_audio
        from .inference import Processor

        path = batch if isinstance(batch, str) else batch[0]
        dm = self._datamodule()
        dm = dm if isinstance(dm, AudioFxDataModule) else None
        if self._processor is None:
            options = dm.predict_options if dm is not None else PredictOptions()
            self._processor = Processor(
                self,
                device=self.device,
                context_size=dm.context_size if dm is not None else None,
                preprocessing=self._trained_preprocessing(prefer_data=False),
                **options.processor_args(),
            )
        audio, rate = read_audio(path)
        out, _ = self._processor.process_array(audio, rate)
        stats = self._processor.last_stats
        return FilePrediction(
            str(path),
            out,
            rate,
            sf.info(str(path)).subtype,
            seconds=stats.seconds,
            dropped_frames=stats.dropped_frames,
            wall_s=stats.wall_s,
            input_gain_db=stats.input_gain_db,
            preprocessing=stats.preprocessing,
            faults=stats.faults,
        )

    def on_predict_end(self) -> None:
        if self._processor is not None:
            self._processor.close()  # its render workers served every file of the run
        self._processor = None

    def teardown(self, stage: str) -> None:
        if self._processor is not None:  # a predict run that stopped on an error
            self._processor.close()
            self._processor = None
        self.fx.close()
