"""The shipped recipes (installed as the ``afx_lightning_recipes`` package; registered by entry points)."""

from pathlib import Path

_HERE = Path(__file__).parent
QUICKSTART = _HERE / "quickstart.yaml"
BREATH = _HERE / "breath.yaml"
AMP = _HERE / "amp.yaml"
MASTERING = _HERE / "mastering.yaml"
