"""The ``afx`` (and ``lightning``) command.

``afx effects list|show`` inspects the registry; every other sub-command (``fit``, ``validate``, ``test``,
``predict``) is LightningCLI, so recipes, ``--print_config`` and dotted overrides work as Lightning users
expect.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from . import registry
from .effects.base import PluginUnavailable


def _effects_list(_: argparse.Namespace) -> int:
    rows = []
    for name in registry.chain_names():
        try:
            chain = registry.build_chain(name, sample_rate=22050, block_size=1024)
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


def _effects_show(args: argparse.Namespace) -> int:
    chain = registry.build_chain(args.name, sample_rate=args.sample_rate, block_size=1024)
    print(f"{args.name}: {chain.num_params} trainable parameters, latency {chain.latency} samples at {args.sample_rate} Hz")
    rows = []
    for p in chain.params:
        fixed = "" if p.fixed is None else f"fixed={p.fixed:g}"
        rows.append((p.name, f"{p.min:g}", f"{p.max:g}", f"{p.default:g}", p.scale.value, p.unit, fixed or p.description))
    _table(("parameter", "min", "max", "default", "scale", "unit", "note"), rows)
    chain.close()
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def _effects_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="afx effects", description="Inspect the registered effect chains.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="chains with backend and parameter count").set_defaults(run=_effects_list)
    show = sub.add_parser("show", help="the parameter table of one chain")
    show.add_argument("name")
    show.add_argument("--sample-rate", type=int, default=22050)
    show.set_defaults(run=_effects_show)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "effects":
        args = _effects_parser().parse_args(argv[1:])
        try:
            return args.run(args)
        except (registry.UnknownNameError, PluginUnavailable) as exc:
            print(f"afx effects: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `afx effects show X | head`: the reader left, nothing is wrong
            sys.stdout = open(os.devnull, "w")
            return 0
    from .lightning_cli import run_lightning_cli

    return run_lightning_cli(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
