"""The plain-data model description every checkpoint carries (``afx_model``), and how its parts are read back.

Written by :meth:`afx_lightning.module.DeepAFx.get_config`; read by :mod:`afx_lightning.inference` (which rebuilds
a model for processing without Lightning) and by ``DeepAFx.from_config``. Kept free of Lightning and torch so the
inference path stays fast to import.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

CONFIG_KEY = "afx_model"  # the checkpoint key of ``DeepAFx.get_config``
CONFIG_FORMAT = 2  # 2: the parts (fx, loss) apart; 1: one flat ``options`` mapping (still read)
READABLE_FORMATS = (1, 2)

#: Options that moved into a part, old flat name -> new key under ``model.`` (recipes written before the parts fail
#: with a one-line message naming the new key; checkpoint descriptions of format 1 are read through it).
MOVED_OPTIONS: dict[str, str] = {
    "chain": "fx.chain",
    "gradient": "fx.gradient",
    "epsilon": "fx.epsilon",
    "num_perturbations": "fx.num_perturbations",
    "fx_workers": "fx.workers",
    "fx_timeout_s": "fx.timeout_s",
    "fx_max_retries": "fx.max_retries",
    "fx_build_timeout_s": "fx.build_timeout_s",
    "spsa_seed": "fx.seed",
    "max_shift": "loss.max_shift",
    "time_weight": "loss.time_weight",
    "freq_weight": "loss.freq_weight",
}


def moved_option_message(name: str, where: str = "") -> str | None:
    """``model.<name> moved to model.<new>`` for an option that moved into a part, else None."""
    new = MOVED_OPTIONS.get(name)
    return None if new is None else f"model.{name} moved to model.{new}" + (f" ({where})" if where else "")


def description_parts(
    config: Mapping[str, Any], own_options: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A description's ``fx`` options (without the chain), ``loss`` options and the module's own ``options``
    (only those named in ``own_options``); format 1's flat options are sorted into the parts by :data:`MOVED_OPTIONS`."""
    fx, loss = dict(config.get("fx") or {}), dict(config.get("loss") or {})
    options: dict[str, Any] = {}
    for name, value in (config.get("options") or {}).items():
        part, _, key = MOVED_OPTIONS.get(name, "").partition(".")
        if part:
            (fx if part == "fx" else loss)[key] = value
        elif name in own_options:
            options[name] = value
    fx.pop("chain", None)
    return fx, loss, options


def chain_reference_name(chain: Any) -> str | None:
    """A chain as plain data: its registered name, or ``module:function`` for a module-level factory.

    ``functools.partial(build_chain, name)`` (``registry.chain_reference``) is its name; anything else that has
    no importable module-level name (a lambda, a bound method, a partial with arguments) gives None.
    """
    if isinstance(chain, str):
        return chain
    if isinstance(chain, functools.partial):
        from .registry import build_chain

        if chain.func is build_chain and len(chain.args) == 1 and not chain.keywords and isinstance(chain.args[0], str):
            return chain.args[0]
        return None
    module, qualname = getattr(chain, "__module__", None), getattr(chain, "__qualname__", "")
    if not module or not qualname or "<" in qualname or "." in qualname:
        return None
    return f"{module}:{qualname}"
