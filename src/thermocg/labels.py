"""Temperatures in file names: the one place a temperature becomes a label.

Inside thermocg temperatures are floats (kelvin). Only file names carry labels:
``T300K.h5md``, ``fm-each-T300K.pt``. This module imports nothing heavy, so every
stage (and a user's script) can use it without pulling in OpenMM or torch.
"""

from __future__ import annotations


def temperature_label(temperature_K: float) -> str:
    """File label of a temperature: 300 -> 'T300K', 272.5 -> 'T272.5K'."""
    return f"T{float(temperature_K):g}K"
