"""The shipped recipes (installed as the ``afx_lightning_recipes`` package; registered by entry points)."""

from pathlib import Path

_HERE = Path(__file__).parent
QUICKSTART = _HERE / "quickstart.yaml"
BREATH = _HERE / "breath.yaml"
AMP = _HERE / "amp.yaml"
MASTERING = _HERE / "mastering.yaml"
AMP_LV2 = _HERE / "amp_lv2.yaml"
BREATH_LV2 = _HERE / "breath_lv2.yaml"
MASTERING_LV2 = _HERE / "mastering_lv2.yaml"
MASTERING_VST3 = _HERE / "mastering_vst3.yaml"
