"""Progress bars on a terminal, plain lines in a log file (issue 33).

A tqdm bar redraws itself with carriage returns: in a log file (stderr not a terminal, as in a
batch job) every redraw is a line, tens of kB of bars for a short run that hide the lines that
matter. As pip and tqdm's own ``disable=None`` do, :func:`tqdm` draws a bar only on a terminal;
elsewhere it logs the bar's text as one plain ``thermocg:`` line when a tenth of the work is done
and at least ``every_s`` seconds have passed since the last line, and once at the end.
``THERMOCG_PROGRESS=bars`` or ``=lines`` forces one or the other.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm as _tqdm

log = logging.getLogger("thermocg")


class LineProgress(_tqdm):
    """A tqdm whose every display is a logged line, at most one per tenth of the work and per
    ``every_s`` seconds (and the last one)."""

    every_s = 60.0

    def __init__(self, *args, **kwargs):
        self._last_time, self._last_fraction = time.monotonic(), 0.0
        kwargs.setdefault("mininterval", 1.0)
        kwargs["file"] = _Nowhere()  # tqdm's own drawing goes nowhere: display() logs instead
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if self.disable:
            return True
        now = time.monotonic()
        fraction = self.n / self.total if self.total else 0.0
        done = self.total is not None and self.n >= self.total
        if done or (fraction - self._last_fraction >= 0.1 and now - self._last_time >= self.every_s):
            if done and self._last_fraction >= 1.0:
                return True  # the end is logged once
            log.info("%s", self.format_meter(**{**self.format_dict, "ncols": 0}).strip())
            self._last_time, self._last_fraction = now, (1.0 if done else fraction)
        return True

    def close(self):
        if not self.disable and self.total is not None and self.n >= self.total:
            self.display()
        super().close()


class _Nowhere:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


def _on_terminal() -> bool:
    choice = os.environ.get("THERMOCG_PROGRESS", "").strip().lower()
    if choice in ("bars", "lines"):
        return choice == "bars"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm`` on a terminal, :class:`LineProgress` elsewhere (the same arguments)."""
    return _tqdm(*args, **kwargs) if _on_terminal() else LineProgress(*args, **kwargs)
