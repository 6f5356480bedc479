"""Strict JSON: what thermocg writes (manifests, results, attributes) has no NaN or Infinity,
which JSON does not allow and other parsers refuse. A number that could not be computed is
written as null, and the file or table that holds it says why (e.g. ``Results.notes``)."""

from __future__ import annotations

import json
import math

import numpy as np


def strict_json(value):
    """``value`` with every non-finite float replaced by None (numpy scalars become Python ones)."""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of :func:`strict_json` (value), refusing anything non-finite left over."""
    return json.dumps(strict_json(value), allow_nan=False, **kwargs)


def number(x, spec: str = ".3g") -> str:
    """A number for a log line or table; ``n/a`` for one that was not computed (None or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)
