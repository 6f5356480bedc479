"""Makes ``water64-T300K.h5md``: the reference stage's frames of the tests' tiny config (64 SPC/E
waters, 6 Å cutoff, 40 frames at 300 K, seed 7; tests/helpers.py), which the unit tests read
instead of running OpenMM (the integration tests run the stage itself).

    python tests/data/make_water64.py

On the machine that made the committed file (2-core x86_64, OpenMM 8.6.1) a re-run gives the
same frames bit for bit: the stage is reproducible with one OpenMM thread per temperature, which
it picks for the tiny config's two temperatures on two cores. Elsewhere the frames differ in the
last bits and the tests' bounds still hold.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent

if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))
    from tests.helpers import run_stage, stage_path, tiny_config

    with tempfile.TemporaryDirectory() as tmp:
        config = tiny_config(Path(tmp))
        run_stage("reference", config, show_progress=True)
        shutil.copyfile(stage_path(config, "reference") / "T300K.h5md", HERE / "water64-T300K.h5md")
    print(f"wrote {HERE / 'water64-T300K.h5md'}")
