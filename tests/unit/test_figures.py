"""The report's figure helpers without drawing."""

from __future__ import annotations

import numpy as np

from thermocg.report.figures import gaps


def test_a_series_missing_a_temperature_breaks_its_line():
    """A model with no value at a temperature between two of its points (unstable there) is drawn
    with a gap, not a line joining its neighbours across it; ends are left as they are."""
    t, v, e = gaps([250.0, 500.0, 700.0], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [250.0, 500.0, 600.0, 700.0])
    assert t == [250.0, 500.0, 600.0, 700.0] and e == [0.1, 0.2, 0.0, 0.3]
    assert v[:2] == [1.0, 2.0] and np.isnan(v[2]) and v[3] == 3.0
    assert gaps([300.0], [1.0], [0.1], [250.0, 300.0, 700.0]) == ([300.0], [1.0], [0.1])
