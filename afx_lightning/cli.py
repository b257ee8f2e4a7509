"""The ``afx`` (and ``lightning``) command.

``afx effects|recipes list|show`` inspect the registry (``afx effects inspect`` one installed plugin, ``afx effects
list --installed`` them all), ``afx process`` and ``afx evaluate`` use a trained model;
``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI, so recipes, ``--print_config`` and dotted
overrides work as Lightning users expect. ``afx``, ``afx -h`` and ``afx --help`` list them all.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import memory, registry
from .constants import FRAME_SIZE, PREDICT_SMOOTHING_HZ, SAMPLE_RATE
from .effects.base import PluginUnavailable
from .errors import AfxError


def _effects_list(args: argparse.Namespace) -> int:
    if getattr(args, "installed", False):
        return _installed_plugins()
    rows = []
    for name in registry.chain_names():
        try:
            chain = registry.build_chain(name, sample_rate=SAMPLE_RATE, block_size=FRAME_SIZE)
        except PluginUnavailable as exc:
            rows.append((name, "-", "-", f"missing: {exc}"))
            continue
        except Exception as exc:  # a broken third-party chain must not hide the others
            rows.append((name, "-", "-", f"error: {type(exc).__name__}: {exc}"))
            continue
        backends = sorted({_backend(e) for e in chain.effects})
        rows.append((name, ",".join(backends), str(chain.num_params), "ok"))
        chain.close()
    _table(("chain", "backend", "P", "status"), rows)
    return 0


def _backend(effect) -> str:
    module = type(effect).__module__
    if "pedalboard" in module:
        return "pedalboard"
    if "python_backend" in module:
        return "python"
    return module.rsplit(".", 1)[-1]


def _installed_plugins() -> int:
    """The VST3 bundles in the standard folders and the LV2 plugins lilv finds: what a declaration can name."""
    from .effects import inspect as plugin_info

    bundles = plugin_info.installed_vst3()
    folders = ", ".join(str(p) for p in plugin_info.vst3_search_paths())
    print(f"VST3 ({len(bundles)} in {folders}; $VST3_PATH adds folders)")
    if bundles:
        _table(("plugin", "file"), [(b.stem, str(b)) for b in bundles])
    else:
        print(f"  none (Debian's VST3s: sudo apt-get install {plugin_info.VST3_PACKAGE})")
    try:
        lv2 = plugin_info.installed_lv2()
    except PluginUnavailable as exc:
        print(f"\nLV2: {exc}")
        lv2 = None
    if lv2 is not None:
        print(f"\nLV2 ({len(lv2)}, found by lilv: $LV2_PATH or /usr/lib/lv2, ~/.lv2)")
        if lv2:
            _table(("uri", "name"), lv2)
        else:
            print("  none (e.g. sudo apt-get install lsp-plugins-lv2 calf-plugins)")
    print("\nafx effects inspect FILE|URI|CLASS: parameters, channels, latency and a chain declaration to paste")
    return 0


def _effects_inspect(args: argparse.Namespace) -> int:
    from .effects import inspect as plugin_info

    info = plugin_info.describe(args.target, sample_rate=args.sample_rate, plugin_name=args.plugin_name)
    print(plugin_info.format_info(info))
    return 0


def _effects_show(args: argparse.Namespace) -> int:
    chain = registry.build_chain(args.name, sample_rate=args.sample_rate, block_size=FRAME_SIZE)
    print(
        f"{args.name}: {chain.num_params} trainable parameters, latency {chain.latency} samples at {args.sample_rate} Hz"
    )
    rows = []
    for p in chain.params:
        fixed = "" if p.fixed is None else f"fixed={p.fixed:g}"
        rows.append(
            (
                p.name,
                f"{p.min:g}",
                f"{p.max:g}",
                f"{p.default:g}",
                p.scale.value,
                p.unit,
                "; ".join(text for text in (fixed, p.description) if text),
            )
        )
    _table(("parameter", "min", "max", "default", "scale", "unit", "note"), rows)
    chain.close()
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _process_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="afx process",
        description="Apply a trained model to a whole file: predict smoothed parameter automation, render the "
        "chain with it. Parameters are predicted once per frame from the downmix; every channel is rendered with "
        "them (linked: a mono chain gets one plugin instance per channel), so the output keeps the input's "
        "channels and stereo image, at its rate and length.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of a trained DeepAFx model (loaded weights-only)")
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="INPUT OUTPUT: the audio file to process and where to write the result (refused if it exists, unless "
        "--overwrite); with --output-dir: one or more inputs",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="process every FILE into this folder under its own name (created if missing); the plugin workers "
        "start once for all of them",
    )
    parser.add_argument("--automation", help="write the per-frame parameters to this .csv or .json file")
    parser.add_argument("--plot", help="write input/output spectrograms and the automation to this .png")
    parser.add_argument(
        "--smoothing-hz",
        type=float,
        default=None,
        help=f"low-pass cutoff of the parameter curves (0: off; default: the checkpoint's model.smoothing_hz, "
        f"{PREDICT_SMOOTHING_HZ:g} Hz unless its recipe set another)",
    )
    parser.add_argument(
        "--predict-hop",
        type=int,
        default=1,
        help="predict every N-th frame and interpolate (N=4: ~4x faster with an Inception encoder)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the encoder (~3x faster Inception on CPU after a compilation of a minute "
        "or more: for long files)",
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="run the encoder in int8 (~5x faster Inception prediction on CPU, parameters within 0.02-0.06 of float32; "
        "calibrated on the first file's first contexts, ~2 s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="cpu", help="where the encoder runs (default: cpu)")
    return parser


def _process_jobs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(input, output) pairs from ``FILE...`` and ``--output-dir``; a usage error names what is wrong."""
    files = [Path(f) for f in args.files]
    if args.output_dir is None:
        if len(files) != 2:
            parser.error(f"give INPUT OUTPUT (got {len(files)} file(s)), or --output-dir DIR and the inputs")
        return [(files[0], files[1])]
    for option in ("automation", "plot"):
        if getattr(args, option) is not None:
            parser.error(f"--{option} names one file: it cannot go with --output-dir (process files one by one)")
    names = [f.name for f in files]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        parser.error(f"--output-dir: two inputs would write the same output {args.output_dir / repeated[0]}")
    return [(f, args.output_dir / f.name) for f in files]


def _process(argv: Sequence[str]) -> int:
    parser = _process_parser()
    args = parser.parse_args(argv)
    jobs = _process_jobs(parser, args)
    if args.compile and args.quantize:
        parser.error("--compile and --quantize are two ways to speed up the encoder: choose one")
    from .inference import Processor, load_inference_model

    try:
        processor = Processor(
            load_inference_model(args.ckpt),
            smoothing_hz=args.smoothing_hz,
            device=args.device,
            predict_hop=args.predict_hop,
            compile=args.compile,
            quantize=args.quantize,
        )
    except AfxError as exc:
        print(f"afx process: {exc}", file=sys.stderr)
        return 2
    if args.output_dir is not None:
        try:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(
                f"afx process: --output-dir {args.output_dir}: cannot create the folder ({exc.strerror})",
                file=sys.stderr,
            )
            return 2
    failed = 0
    with processor:
        for source, target in jobs:  # a bad file is reported and skipped: the others are still processed
            try:
                stats = processor.process_file(
                    source,
                    target,
                    automation=args.automation,
                    plot=args.plot,
                    overwrite=args.overwrite,
                    progress=not args.no_progress,
                )
            except AfxError as exc:
                print(f"afx process: {exc}", file=sys.stderr)
                failed += 1
                continue
            _report_processed(target, stats)
    if failed and len(jobs) > 1:
        print(f"afx process: {failed} of {len(jobs)} file(s) failed (above)", file=sys.stderr)
    return 2 if failed else 0


def _report_processed(target: Path, stats) -> None:
    note = (
        f"; {stats.dropped_frames} frame(s) failed in the plugin and were passed through dry"
        if stats.dropped_frames
        else ""
    )
    clip = f"; {stats.clipped_samples} sample(s) clipped to [-1, 1]" if stats.clipped_samples else ""
    prep = f"; {stats.preprocessing}" if stats.preprocessing else ""
    print(
        f"afx process: wrote {target} ({stats.seconds:.1f} s, {stats.frames} frames, "
        f"{stats.wall_s:.1f} s wall, real-time factor {stats.real_time_factor:.3f}){note}{clip}{prep}",
        file=sys.stderr,
    )


#: (command, one line) in the order ``afx --help`` lists them.
COMMANDS = (
    ("fit", "train a model from a recipe: afx fit --recipe quickstart (or --config recipes/X.yaml)"),
    ("validate", "score a checkpoint on the validation split: afx validate --config X.yaml --ckpt_path C.ckpt"),
    ("test", "score a checkpoint on the test split: afx test --config X.yaml --ckpt_path C.ckpt"),
    ("predict", "process data.predict_files with a checkpoint through Lightning (same as afx process)"),
    ("effects list [--installed]", "registered effect chains: backend, P, status (--installed: VST3/LV2 plugins here)"),
    (
        "effects show NAME|FILE",
        "a chain's parameter table (registered, or declared in FILE.yaml): ranges, scales, units",
    ),
    (
        "effects inspect TARGET",
        "a VST3/AU file, LV2 URI or pedalboard class: parameters, latency, a YAML chain to paste",
    ),
    ("recipes list", "registered recipes: chain, P, and the data each expects"),
    ("recipes show NAME", "a recipe's YAML file: its path and contents"),
    ("process", "apply a trained model to a whole file: afx process --ckpt C.ckpt in.wav out.wav"),
    ("evaluate", "d_MFCC, STFT and loudness distances of a checkpoint on a data split, next to identity"),
    (
        "match",
        "best static settings of a chain for one input/target pair (CMA-ES): afx match --chain C in.wav target.wav",
    ),
)
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def help_text() -> str:
    width = max(len(name) for name, _ in COMMANDS)
    lines = [
        "usage: afx COMMAND [options]        afx COMMAND --help: the options of one command",
        "",
        "Real audio plugins as trainable layers: a deep encoder predicts a plugin chain's parameters (DeepAFx).",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {text}" for name, text in COMMANDS),
        "",
        "fit/validate/test/predict are LightningCLI: --config FILE (repeatable), --recipe NAME, dotted",
        "overrides (--data.root PATH, --trainer.max_epochs 10), --print_config shows everything you can set.",
    ]
    return "\n".join(lines)


def _data_description(data: dict) -> str:
    """What data a recipe expects, e.g. ``demo (generated)``, ``daps at data/daps``, ``folder: set --data.root``."""
    dataset = data.get("dataset", registry.DEFAULT_DATASET)
    if dataset == "demo":
        return "demo (generated)"
    root = data.get("root")
    if not root:
        return f"{dataset}: set --data.root"
    found = "" if Path(str(root)).expanduser().is_dir() else " (not found)"
    return f"{dataset} at {root}{found}"


def _recipes_list(_: argparse.Namespace) -> int:
    rows = []
    for name in registry.recipe_names():
        try:
            config = registry.recipe_config(name)
        except Exception as exc:  # a broken third-party recipe must not hide the others
            rows.append((name, "-", "-", f"error: {type(exc).__name__}: {exc}"))
            continue
        model, data = config.get("model") or {}, config.get("data") or {}
        chain = (model.get("fx") or {}).get("chain", registry.DEFAULT_CHAIN)
        rows.append(
            (
                name,
                registry.chain_label(chain),
                _num_params(chain, data.get("sample_rate", SAMPLE_RATE)),
                _data_description(data),
            )
        )
    _table(("recipe", "chain", "P", "data"), rows)
    return 0


def _num_params(chain: Any, sample_rate: Any) -> str:
    """P of a chain, '-' when its plugins are missing (``afx effects list`` says why)."""
    try:
        built = registry.build_chain(chain, sample_rate=int(sample_rate), block_size=FRAME_SIZE)
    except Exception:
        return "-"
    try:
        return str(built.num_params)
    finally:
        built.close()


def _recipes_show(args: argparse.Namespace) -> int:
    path = registry.recipe_path(args.name)
    print(f"# {path}")
    print(path.read_text(), end="")
    return 0


def _registry_parser(kind: str) -> argparse.ArgumentParser:
    what = {"effects": "effect chains", "recipes": "training recipes"}[kind]
    parser = argparse.ArgumentParser(prog=f"afx {kind}", description=f"Inspect the registered {what}.")
    sub = parser.add_subparsers(dest="command", required=True)
    if kind == "effects":
        listing = sub.add_parser("list", help="chains with backend and parameter count")
        listing.add_argument(
            "--installed", action="store_true", help="list the VST3 bundles and LV2 plugins installed here instead"
        )
        listing.set_defaults(run=_effects_list)
        inspect = sub.add_parser("inspect", help="what a plugin offers, and a chain declaration for it")
        inspect.add_argument("target", help="a VST3/AU file (or bundle name), an LV2 URI or a pedalboard class name")
        inspect.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="rate latency is reported at")
        inspect.add_argument("--plugin-name", help="which plugin of a VST3/AU file that holds several")
        inspect.set_defaults(run=_effects_inspect)
        show = sub.add_parser("show", help="the parameter table of one chain (a registered name or a FILE.yaml)")
        show.add_argument("--sample-rate", type=int, default=SAMPLE_RATE)
        show.set_defaults(run=_effects_show)
    else:
        sub.add_parser("list", help="recipes with chain, parameter count and data").set_defaults(run=_recipes_list)
        show = sub.add_parser("show", help="the YAML of one recipe")
        show.set_defaults(run=_recipes_show)
    show.add_argument("name")
    return parser


def _registry_command(kind: str, argv: Sequence[str]) -> int:
    args = _registry_parser(kind).parse_args(argv)
    try:
        return args.run(args)
    except AfxError as exc:
        print(f"afx {kind}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `afx effects show X | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0 if argv else 2
    known = {name.split()[0] for name, _ in COMMANDS}
    if not argv[0].startswith("-") and argv[0] not in known:
        print(f"afx: unknown command {argv[0]!r}; commands: {', '.join(sorted(known))} (afx --help)", file=sys.stderr)
        return 2
    if os.environ.get(memory.ENV_VAR, "1").strip() != "0":
        memory.keep_freed_memory()  # every step and batch reuses the encoder's pages (afx_lightning/memory.py)
    if argv[0] == "process":
        return _process(argv[1:])
    if argv[0] in ("effects", "recipes"):
        return _registry_command(argv[0], argv[1:])
    if argv[0] == "evaluate":
        from .evaluation import main as evaluate_main

        return evaluate_main(argv[1:])
    if argv[0] == "match":
        from .match import main as match_main

        return match_main(argv[1:])
    from .lightning_cli import run_lightning_cli

    return run_lightning_cli(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
