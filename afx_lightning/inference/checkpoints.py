"""Loading a trained model safely: weights-only ``torch.load``, only declared encoders and registered chains."""

from __future__ import annotations

import functools
import importlib
import pathlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data.preprocess import Preprocessing
from .errors import InferenceError, PathLike
from .model import InferenceModel

DEFAULT_CONTEXT = 40960


def _allowed_factory(qualname: str) -> Callable | None:
    """A chain factory named in a checkpoint may be unpickled only if it is a registered chain or a test chain."""
    module, _, name = qualname.rpartition(".")
    if not module:
        return None
    from .. import registry

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
    from ..encoders import ENCODER_GROUP, ParameterEncoder, declared_encoders

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
    # an option added after this checkpoint was written takes the value it was trained with, not today's default
    init_args = {**cls.options_since, **{k: v for k, v in init_args.items() if k != "num_params"}}
    return functools.partial(cls, **init_args)


def _chain_source(chain: Any, path: Path) -> Any:
    """A registered chain name, a chain declaration (plain data: checked, never imported), or a ``module:function``
    factory that is registered or a test chain."""
    from .. import registry

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
    from ..description import chain_reference_name

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
    from ..data import DataError

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
    from ..description import CONFIG_FORMAT, CONFIG_KEY, READABLE_FORMATS

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


def _audio_format(config: dict[str, Any], path: Path) -> tuple[int, int]:
    try:
        return int(config["sample_rate"]), int(config["frame_size"])
    except (KeyError, TypeError, ValueError):
        raise InferenceError(
            f"checkpoint {path}: the model description lacks an integer sample_rate/frame_size"
        ) from None


def _rebuilt(path: Path, build: Callable[[], Any]) -> Any:
    """``build()``, its errors as one-line :class:`InferenceError` naming the checkpoint."""
    try:
        return build()
    except ValueError as exc:
        raise InferenceError(f"checkpoint {path}: {exc}") from None
    except Exception as exc:
        raise InferenceError(f"checkpoint {path}: cannot rebuild the model ({type(exc).__name__}: {exc})") from None


def _with_data_facts(model: Any, config: dict[str, Any], path: Path) -> Any:
    data = config.get("data") or {}
    model.context_size = int(data.get("context_size") or DEFAULT_CONTEXT)
    model.preprocessing = model_preprocessing(config, path)
    return model


def build_model(config: dict[str, Any], path: Path) -> DeepAFx:  # noqa: F821
    """An untrained :class:`~afx_lightning.module.DeepAFx` (one slot, one worker) from a description: the whole
    training module, its optimisation options included (for inspecting or fine-tuning a checkpoint)."""
    from ..module import DeepAFx

    factory = _encoder_factory(config.get("encoder"), path)
    chain = _chain_source(config.get("chain"), path)
    _audio_format(config, path)
    model = _rebuilt(path, lambda: DeepAFx.from_config(config, chain=chain, encoder=factory))
    return _with_data_facts(model, config, path)


def build_inference_model(config: dict[str, Any], path: Path) -> InferenceModel:
    """An untrained :class:`InferenceModel` (one slot, one worker) from a description, without Lightning."""
    from ..blackbox import FxConfig
    from ..description import description_parts
    from ..encoders import build_encoder

    factory = _encoder_factory(config.get("encoder"), path)
    chain = _chain_source(config.get("chain"), path)
    sample_rate, frame_size = _audio_format(config, path)
    fx_options, _, options = description_parts(config, ("smoothing_hz",))
    channels = int(config.get("channels") or 1)  # of the training audio (older descriptions: mono)

    def build() -> InferenceModel:
        fx = FxConfig.from_config(fx_options, chain=chain, workers=1).build(sample_rate, frame_size, channels, 1, 1)
        encoder = build_encoder(factory, fx.num_params, sample_rate, chain)  # the layer starts no worker until used
        return InferenceModel(encoder, fx, sample_rate, frame_size, **options)

    return _with_data_facts(_rebuilt(path, build), config, path)


def load_model(ckpt_path: PathLike) -> DeepAFx:  # noqa: F821
    """Rebuild the training module :class:`~afx_lightning.module.DeepAFx` from a checkpoint, weights-only.

    For processing audio, :func:`load_inference_model` gives the same encoder and chain without Lightning; both
    read the checkpoint the same way (see there).
    """
    return _load(Path(ckpt_path), build_model)


def load_inference_model(ckpt_path: PathLike) -> InferenceModel:
    """Rebuild a trained model for processing from a checkpoint, loading it weights-only (no arbitrary code).

    Only the checkpoint's own description (``afx_model``, see :meth:`DeepAFx.get_config`) is used, never the
    trainer's hyper-parameters, so a checkpoint loads whichever tool wrote it. The chain is looked up by name in
    today's registry; a chain whose parameter count differs from the one the model was trained for is refused.
    The returned model is in eval mode and carries ``context_size`` (the encoder context used in training;
    40 960 if unknown) and ``preprocessing`` (what its inputs went through in training; the ``Processor`` repeats it).
    """
    return _load(Path(ckpt_path), build_inference_model)


def _load(path: Path, build: Callable[[dict[str, Any], Path], Any]) -> Any:
    if not path.is_file():
        raise InferenceError(f"checkpoint {path} does not exist")
    checkpoint = _safe_load(path)
    config = model_config(checkpoint, path)
    model = build(config, path)
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
