"""One base for the problems a user must fix, so the CLI can tell them from bugs.

Every user-facing error derives from :class:`AfxError`; its message is one line naming the file, parameter or
option at fault. The ``afx`` commands print an ``AfxError`` as that line and exit 2; any other exception is a bug
and keeps its traceback. The specific classes live with their concept (``DataError`` in ``data.datasets``,
``DeclarationError`` in ``effects.declared``, ``PluginUnavailable`` in ``effects.base``, ``InferenceError`` in
``inference``, ``MatchError`` in ``match``, ``UnknownNameError`` in ``registry``) and keep the built-in base
their callers catch (``ValueError``, ``RuntimeError``, ``KeyError``); this module imports nothing.
"""

from __future__ import annotations


class AfxError(Exception):
    """A problem the user must fix; the message is one line naming what is at fault."""


class UsageError(AfxError, ValueError):
    """A bad value for a name or option the user gave (the message names it and what would be accepted)."""


class MissingFileError(AfxError, FileNotFoundError):
    """A file the user named, or a registry entry points at, does not exist."""


class RegistryError(AfxError, TypeError):
    """An installed package registers something that is not what its entry-point group expects."""
