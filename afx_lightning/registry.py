"""Discovery of effect chains and recipes through entry points.

The shipped chains and recipes register exactly as a third-party package would, in ``pyproject.toml``::

    [project.entry-points."afx_lightning.effects"]
    my_chain = "my_package.chains:my_chain"        # a ChainFactory(sample_rate, block_size) -> Chain

    [project.entry-points."afx_lightning.recipes"]
    my_task = "my_package:MY_TASK_YAML"             # a path to a YAML recipe (or a callable returning one)

Wherever a chain is named, a declared chain works too: a path to a chain declaration (``my_chain.yaml``) or the
declaration itself as a mapping (``model.fx.chain:`` inline in a recipe); see :mod:`.effects.declared`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from .constants import FRAME_SIZE
from .effects.base import Chain, ChainFactory
from .effects.declared import DeclarationError, DeclaredChain, is_declaration_path  # noqa: F401 (registry.DeclarationError)
from .errors import AfxError, MissingFileError, RegistryError

#: What names a chain: a registered name, a declaration file (``*.yaml``) or a declaration mapping.
ChainName = str | os.PathLike | Mapping[str, Any]

CHAIN_GROUP = "afx_lightning.effects"
RECIPE_GROUP = "afx_lightning.recipes"

#: What a recipe gets when it does not say (``FxConfig(chain=...)``, ``AudioFxDataModule(dataset=...)``); kept here so
#: ``afx recipes list`` need not import torch (tests check they agree).
DEFAULT_CHAIN = "pb_mb_compressor"
DEFAULT_DATASET = "demo"


class UnknownNameError(AfxError, KeyError):
    """A chain or recipe name that no installed package registers."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def _lookup(group: str, kind: str, name: str) -> EntryPoint:
    eps = _entry_points(group)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        also = " (or a chain declaration file, my_chain.yaml)" if kind == "chain" else ""
        raise UnknownNameError(f"unknown {kind} {name!r}; registered {kind}s: {known}{also}")
    return eps[name]


def chain_names() -> list[str]:
    return sorted(_entry_points(CHAIN_GROUP))


def recipe_names() -> list[str]:
    return sorted(_entry_points(RECIPE_GROUP))


@functools.cache
def _registered_factory(name: str) -> ChainFactory:
    return _lookup(CHAIN_GROUP, "chain", name).load()


def declared_chain(chain: Any) -> DeclaredChain | None:
    """The :class:`DeclaredChain` a chain argument declares (a ``*.yaml`` path or a mapping), else None."""
    if isinstance(chain, DeclaredChain):
        return chain
    if isinstance(chain, Mapping):
        return DeclaredChain(chain)
    if is_declaration_path(chain):
        return DeclaredChain.from_file(chain)
    return None


def get_chain_factory(name: ChainName) -> ChainFactory:
    """The factory of a registered name (cached: workers build many instances of one chain) or of a declaration."""
    declared = declared_chain(name)
    if declared is not None:
        return declared
    if not isinstance(name, str):
        raise TypeError(f"a chain is a registered name, a declaration file or a mapping, got {type(name).__name__}")
    return _registered_factory(name)


def build_chain(name: ChainName, sample_rate: int, block_size: int) -> Chain:
    """Build a registered or declared chain (raises :class:`PluginUnavailable` when its plugins are not installed)."""
    chain = get_chain_factory(name)(sample_rate=sample_rate, block_size=block_size)
    if not isinstance(chain, Chain):
        raise RegistryError(f"chain factory {name!r} returned {type(chain).__name__}, not an afx_lightning Chain")
    return chain


def chain_label(chain: Any) -> str:
    """How to name a chain argument in a table: its name, a declaration's ``name`` (or file)."""
    if isinstance(chain, Mapping):
        return str(chain.get("name") or "declared chain")
    if isinstance(chain, DeclaredChain):
        return chain.name
    return str(chain)


@functools.cache
def _recipe_target(name: str) -> object:
    return _lookup(RECIPE_GROUP, "recipe", name).load()


def recipe_path(name: str) -> Path:
    """The YAML file of a registered recipe."""
    target = _recipe_target(name)
    if callable(target):
        target = target()
    if not isinstance(target, (str, os.PathLike)):
        raise RegistryError(f"recipe {name!r} resolves to {type(target).__name__}, not a path to a YAML file")
    path = Path(target)
    if not path.is_file():
        raise MissingFileError(f"recipe {name!r} points at {path}, which does not exist")
    return path


def recipe_config(name: str) -> dict:
    """A registered recipe's YAML as a dict (``{}`` for an empty file)."""
    import yaml

    path = recipe_path(name)
    config = yaml.safe_load(path.read_text())
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RegistryError(f"recipe {name!r} ({path}) is not a YAML mapping")
    return config


def chain_reference(name: ChainName) -> Callable[..., Chain]:
    """A picklable factory for a registered or declared chain, to hand to worker processes.

    Fails here (unknown name, bad declaration) rather than inside a worker. A declaration travels as its data
    (:class:`DeclaredChain`), so workers need neither the YAML file nor an importable module.
    """
    declared = declared_chain(name)
    if declared is not None:
        return declared
    _registered_factory(name)
    return functools.partial(build_chain, name)


def chain_declaration(chain: Any, sample_rate: int, block_size: int = FRAME_SIZE) -> dict | None:
    """A declared chain (argument or factory) as plain data with its ranges written out (what a checkpoint
    stores); None for registered chains and code factories."""
    declared = chain if isinstance(chain, DeclaredChain) else None
    if declared is None and (isinstance(chain, Mapping) or is_declaration_path(chain)):
        declared = declared_chain(chain)
    return declared.resolved(sample_rate, block_size) if declared is not None else None
