"""Held-out force MSE of model files at one temperature (issue 29: which W0 is better).

Against the mapped forces f of the study's held-out frames, E[(W0 - f)^2] = E[(W0 - F)^2] +
E[(f - F)^2]: the error against the exact mean force F plus the forces' noise, which is the same
for every model scored on the same frames. So differences between models are differences in
their error against F (bench/restrained_response.py measures that error itself, on fewer
configurations). Models are grouped by run directory and name without ``-seed<s>``: mean ± s.e.
over seeds.

    python bench/heldout_mse.py examples/study-cpu.toml --temperature 300 \\
        --models 'runs/w0-mapped/train/fm-seed*.pt' 'runs/w0-restrained/train/fm-seed*.pt'
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the study's config (finished reference stage): its held-out frames")
    ap.add_argument("--temperature", type=float, default=None, help="K (default T0)")
    ap.add_argument("--models", nargs="+", required=True, help="model files (globs)")
    ap.add_argument("--out", default=None, help="also write the table here (JSON)")
    args = ap.parse_args()

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.models.saved import load_model
    from thermocg.models.stage import held_out_frames

    config = load_config(args.config)
    t = config.train.T0_K if args.temperature is None else args.temperature
    cg = pipeline.read(config, "reference").cg_frames(t)
    held = held_out_frames(config)
    x, box, f = cg.positions[held], cg.box[held], cg.forces[held]
    groups: dict[str, list[float]] = {}
    for path in sorted({p for pattern in args.models for p in glob.glob(pattern)}):
        model = load_model(path)
        pred = np.concatenate([model.forces(x[k:k + 8], box[k:k + 8], t) for k in range(0, len(x), 8)])
        run = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
        group = f"{run}/{re.sub(r'-seed[0-9]+$', '', os.path.basename(path)[:-3])}"
        groups.setdefault(group, []).append(float(np.mean((pred - f) ** 2)))
    print(f"held-out force MSE at {t:g} K, {len(x)} frames, (kcal/mol/Å)²: mean ± s.e. over seeds")
    table = {}
    for group, values in groups.items():
        v = np.asarray(values)
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
        table[group] = {"mean": float(v.mean()), "sem": se, "seeds": values}
        print(f"  {group:<32} {v.mean():8.4f}" + ("" if se is None else f" ± {se:.4f}") + f"  ({len(v)} seeds)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"config": args.config, "temperature_K": t, "frames": len(x), "groups": table}, fh, indent=1)


if __name__ == "__main__":
    main()
