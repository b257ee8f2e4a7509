"""The error ``afx process`` prints as one line, shared by every layer of inference."""

from __future__ import annotations

import os

from ..errors import AfxError

PathLike = str | os.PathLike


class InferenceError(AfxError):
    """A user-facing problem (bad file, bad checkpoint): the CLI prints it as one line."""
