"""ParamSpec scales and the by-name parameter view."""

import numpy as np
import pytest

from afx_lightning.effects import ParamSpec, Scale
from afx_lightning.effects.base import _ParamTable
from afx_lightning.registry import build_chain


def test_scales_map_the_unit_interval_onto_the_range():
    lin = ParamSpec("gain", -12.0, 12.0, 0.0, unit="dB")
    log = ParamSpec("freq", 20.0, 20000.0, 1000.0, Scale.LOG, "Hz")
    db = ParamSpec("level", -36.0, 6.0, 0.0, Scale.DB, "dB")
    assert lin.to_plugin(0.5) == pytest.approx(0.0)
    assert log.to_plugin(0.5) == pytest.approx(np.sqrt(20 * 20000))  # geometric middle
    assert db.to_plugin(1.0) == pytest.approx(10 ** (6 / 20))  # the plugin gets a linear gain
    assert db.to_display(1.0) == pytest.approx(6.0)
    for spec in (lin, log, db):
        for u in (0.0, 0.3, 1.0):
            assert spec.normalize(spec.to_display(u)) == pytest.approx(u)
        assert spec.to_plugin(-1) == spec.to_plugin(0) and spec.to_plugin(2) == spec.to_plugin(1)  # clipped
    table = _ParamTable([lin, log, db])  # the vectorised hot path agrees with the scalar one
    u = np.array([0.1, 0.7, 0.4])
    np.testing.assert_allclose(table.to_plugin(u), [lin.to_plugin(0.1), log.to_plugin(0.7), db.to_plugin(0.4)])


def test_bad_specs_are_refused_by_name():
    with pytest.raises(ValueError, match="'freq': a log scale needs min > 0"):
        ParamSpec("freq", 0.0, 100.0, 10.0, Scale.LOG)
    with pytest.raises(ValueError, match="'gain': default 20.0 lies outside"):
        ParamSpec("gain", -12.0, 12.0, 20.0)
    with pytest.raises(ValueError, match="'x': max"):
        ParamSpec("x", 1.0, 1.0, 1.0)


def test_normalized_by_name():
    chain = build_chain("pb_mb_compressor", sample_rate=22050, block_size=1024)
    theta = chain.normalized({"threshold0": -30.0})
    assert theta.shape == (21,) and theta[0] == pytest.approx(0.5)
    assert theta[1] == pytest.approx(chain.trainable_params[1].default_normalized)
    with pytest.raises(KeyError, match="no trainable parameters \\['nope'\\]"):
        chain.normalized({"nope": 1.0})
