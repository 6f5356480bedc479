"""The evaluate stage: every simulated model at every temperature against the all-atom reference.

The same analysis code (:mod:`thermocg.analysis`) runs on the reference frames mapped
to beads and on the CG trajectories:

* structure from the Langevin/NVT frames: RDF and first-shell ADF, their integrated
  absolute error (IAE) against the reference, first-peak position and height, and the
  pair excess entropy s2; uncertainties from ``blocks`` blocks of frames;
* dynamics from the NVE segments: D from the MSD (Einstein fit in ``msd_fit_window``),
  its standard error over segments, the time-scale ratio D_CG / D_FG, and the
  Yeh-Hummer finite-size correction reported separately;
* force errors on the held-out reference frames (``[train] test_frames``): the mean
  squared error against the mapped forces, and in excess of ``fm-each`` at that
  temperature (THEORY.md §8).

Output: ``<run.directory>/evaluate/results.json`` (every number with its uncertainty,
and the curves the report plots).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from thermocg.analysis import ADF, MSD, RDF, first_peak, integrated_absolute_error, pair_excess_entropy
from thermocg.analysis.dynamics import yeh_hummer_correction
from thermocg.config import Config
from thermocg.frames import read_reference
from thermocg.io.h5md import read_h5md
from thermocg.mapping import LinearMap, map_reference
from thermocg.models.stage import held_out_frames, load_model, model_files
from thermocg.reference.sampler import temperature_label
from thermocg.reference.stage import reference_dir
from thermocg.simulate.stage import STAGE as SIMULATE_STAGE, simulate_dir, simulation_jobs
from thermocg.stagedir import StageDir, atomic_write_text

log = logging.getLogger(__name__)

STAGE = "evaluate"


def evaluate_dir(config: Config) -> Path:
    return config.run_dir / STAGE


class Structure:
    """RDF, ADF and s2 of bead frames, with per-block curves for uncertainties."""

    def __init__(self, config: Config, positions, box):
        e = config.evaluate
        self.rdf = RDF(e.rdf_r_max_A, e.rdf_bins).compute(positions, box)
        self.adf = ADF(e.adf_r_cut_A, e.adf_bins).compute(positions, box)
        blocks = np.array_split(np.arange(len(positions)), min(e.blocks, len(positions)))
        self.rdf_blocks = [RDF(e.rdf_r_max_A, e.rdf_bins).compute(positions[b], box[b]).rdf for b in blocks]
        self.adf_blocks = [ADF(e.adf_r_cut_A, e.adf_bins).compute(positions[b], box[b]).adf for b in blocks]
        self.density = float(np.mean(positions.shape[1] / np.prod(box, axis=1)))

    def summary(self, reference: "Structure | None" = None) -> dict:
        r, th = self.rdf.bin_centers, self.adf.bin_centers
        out = {"rdf": {"r_A": r.tolist(), "g": self.rdf.rdf.tolist()},
               "adf": {"theta_rad": th.tolist(), "p": self.adf.adf.tolist()},
               "s2_kB": _with_error(pair_excess_entropy(r, self.rdf.rdf, self.density),
                                    [pair_excess_entropy(r, g, self.density) for g in self.rdf_blocks])}
        for name, x, curve, blocks in (("rdf", r, self.rdf.rdf, self.rdf_blocks),
                                       ("adf", th, self.adf.adf, self.adf_blocks)):
            pos, height = first_peak(x, curve)
            peaks = [first_peak(x, b) for b in blocks]
            out[f"{name}_peak_position"] = _with_error(pos, [p for p, _ in peaks])
            out[f"{name}_peak_height"] = _with_error(height, [h for _, h in peaks])
            if reference is not None:
                ref = getattr(reference, name)
                ref_curve = ref.rdf if name == "rdf" else ref.adf
                out[f"{name}_iae"] = _with_error(integrated_absolute_error(x, curve, ref_curve),
                                                 [integrated_absolute_error(x, b, ref_curve) for b in blocks])
        return out


def _with_error(value: float, block_values) -> dict:
    """A value and the standard error of the mean over blocks."""
    b = np.asarray(block_values, dtype=np.float64)
    err = float(np.std(b, ddof=1) / math.sqrt(len(b))) if len(b) > 1 else float("nan")
    return {"value": float(value), "error": err}


def diffusion(config: Config, trajectories, dt_ps: float, temperature_K: float, box_edge_A: float) -> dict:
    """D from NVE segments (Å²/ps), its error over segments, and the Yeh-Hummer correction."""
    m = MSD(tuple(config.evaluate.msd_fit_window)).compute(trajectories, dt_ps)
    out = {"D_A2_per_ps": {"value": m.diffusion_coefficient, "error": m.diffusion_error},
           "segments": len(trajectories),
           "msd": {"lag_ps": m.lag_time_ps.tolist(), "msd_A2": m.msd.tolist()},
           "yeh_hummer_times_viscosity": yeh_hummer_correction(temperature_K, box_edge_A, 1.0)}
    eta = config.evaluate.viscosity_mPa_s.get(temperature_label(temperature_K))
    if eta is not None:
        out["yeh_hummer_correction_A2_per_ps"] = yeh_hummer_correction(temperature_K, box_edge_A, eta)
    return out


def _ratio(a: dict, b: dict) -> dict:
    """a/b with first-order propagated error."""
    va, vb = a["value"], b["value"]
    ea, eb = (x if np.isfinite(x) else 0.0 for x in (a["error"], b["error"]))
    r = va / vb
    return {"value": r, "error": abs(r) * math.sqrt((ea / va) ** 2 + (eb / vb) ** 2) if va and vb else float("nan")}


def _reference_nve(config: Config, label: str) -> tuple[list[np.ndarray], float]:
    paths = [reference_dir(config) / f"{label}-nve{k:02d}.h5md" for k in range(config.reference.nve.n_segments)]
    trajs, dt = [], None
    for path in paths:
        d = read_h5md(path)
        cg_map = LinearMap.center_of_mass(d.static["molecule_index"], d.particles["mass"])
        trajs.append(cg_map.positions(d.elements["particles/all/position"]))
        dt = float(d.time[1] - d.time[0])
    return trajs, dt


def _cg_nve(config: Config, model: str, label: str) -> tuple[list[np.ndarray], float]:
    trajs, dt = [], None
    for k in range(config.simulate.nve.n_segments):
        d = read_h5md(simulate_dir(config) / model / f"{label}-nve{k:02d}.h5md")
        trajs.append(d.elements["particles/all/position"])
        dt = float(d.time[1] - d.time[0])
    return trajs, dt


def force_errors(config: Config, models: dict, temperature_K: float, cg) -> dict:
    """Held-out force MSE of each model (name -> loaded model) at one reference temperature,
    (kcal/mol/Å)²; ``cg``: that temperature's reference frames mapped to beads."""
    frames = held_out_frames(config)
    if frames.start == frames.stop:
        return {}
    x, box, f = cg.positions[frames], cg.box[frames], cg.forces[frames]
    out = {}
    for name, model in models.items():
        pred = np.concatenate([model.forces(x[k:k + 4], box[k:k + 4], temperature_K) for k in range(0, len(x), 4)])
        per_frame = np.mean((pred - f) ** 2, axis=(1, 2))
        out[name] = _with_error(float(per_frame.mean()), per_frame)
    return out


def run_evaluate(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Evaluate every simulated model at every temperature; write results.json."""
    from tqdm.auto import tqdm

    StageDir(simulate_dir(config), SIMULATE_STAGE, config.section_hash("reference", "targets", "train", "simulate"),
             "[reference]/[targets]/[train]/[simulate]").require_finished()
    config_hash = config.section_hash("reference", "targets", "train", "simulate", "evaluate")
    stage = StageDir(evaluate_dir(config), STAGE, config_hash, "[reference]/.../[evaluate]")
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest

    jobs = simulation_jobs(config)
    temps = sorted({t for ts in jobs.values() for t in ts})
    results = {"temperatures_K": temps, "models": sorted(jobs), "T0_K": config.train.T0_K,
               "training_temperatures_K": {}, "by_temperature": {}}
    models = {name: load_model(model_files(config)[name]) for name in jobs}  # loaded once, used at every T
    for name, model in models.items():
        results["training_temperatures_K"][name] = model.metadata.get("training_temperatures_K")
    for t in tqdm(temps, desc="evaluate", unit="T", disable=not show_progress):
        label = temperature_label(t)
        entry = {"reference": None, "models": {}}
        ref_struct = None
        if t in config.reference.temperatures_K:
            cg = map_reference(read_reference(reference_dir(config) / f"{label}.h5md"))
            ref_struct = Structure(config, cg.positions, cg.box)
            entry["reference"] = ref_struct.summary()
            if config.reference.nve.n_segments:
                trajs, dt = _reference_nve(config, label)
                entry["reference"].update(diffusion(config, trajs, dt, t, float(cg.box[0].min())))
            errors = force_errors(config, models, t, cg)  # every model, simulated here or not
            each = errors.get(f"fm-each-{label}")
            for m, err in errors.items():
                entry["models"].setdefault(m, {})["force_mse"] = err
                if each is not None:
                    entry["models"][m]["force_mse_excess"] = err["value"] - each["value"]
        for m, ts in jobs.items():
            if t not in ts:
                continue
            d = read_h5md(simulate_dir(config) / m / f"{label}.h5md")
            x, box = d.elements["particles/all/position"], d.elements["particles/all/box/edges"]
            s = Structure(config, x, box).summary(ref_struct)
            s["mean_kinetic_temperature_K"] = float(d.elements["observables/temperature"].mean())
            if config.simulate.nve.n_segments:
                trajs, dt = _cg_nve(config, m, label)
                s.update(diffusion(config, trajs, dt, t, float(box[0].min())))
                if entry["reference"] is not None and "D_A2_per_ps" in entry["reference"]:
                    s["D_ratio_CG_over_FG"] = _ratio(s["D_A2_per_ps"], entry["reference"]["D_A2_per_ps"])
            entry["models"].setdefault(m, {}).update(s)
        results["by_temperature"][label] = entry
    out = stage.path / "results.json"
    atomic_write_text(out, json.dumps(results, indent=1))
    return stage.write_manifest(True, config_json, {"results": [out.name]}, _headline(results))


def _headline(results: dict) -> dict:
    """The manifest's summary: per model, the mean RDF IAE and D ratio over temperatures."""
    out = {}
    for m in results["models"]:
        iae = [e["models"][m]["rdf_iae"]["value"] for e in results["by_temperature"].values()
               if "rdf_iae" in e["models"].get(m, {})]
        ratio = [e["models"][m]["D_ratio_CG_over_FG"]["value"] for e in results["by_temperature"].values()
                 if "D_ratio_CG_over_FG" in e["models"].get(m, {})]
        out[m] = {"mean_rdf_iae": float(np.mean(iae)) if iae else None,
                  "mean_D_ratio": float(np.mean(ratio)) if ratio else None}
    return out
