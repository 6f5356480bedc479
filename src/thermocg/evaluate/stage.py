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

Each temperature is a task of :mod:`thermocg.tasks` (here, or on Dask with ``[run] scheduler``).
Output: ``<run.directory>/evaluate/results.json`` (every number with its uncertainty,
and the curves the report plots).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thermocg.analysis import ADF, MSD, RDF, first_peak, integrated_absolute_error, pair_excess_entropy
from thermocg.analysis.dynamics import yeh_hummer_correction
from thermocg.config import Config
from thermocg.errors import DataFormatError
from thermocg.io.h5md import read_h5md
from thermocg.io.records import ReferenceRun, TrainedModels, Trajectories
from thermocg.io.results import Measures, Results, TemperatureResults
from thermocg.labels import temperature_label
from thermocg.mapping import LinearMap
from thermocg.models.saved import load_model
from thermocg.stagedir import StageContext, StageResult

log = logging.getLogger(__name__)


class Structure:
    """RDF, ADF and s2 of bead frames, with per-block curves for uncertainties; for a mixture
    (``types`` (N,) and their ``names``, several) the partial RDFs g_AB of every type pair too.

    The noise floor of a structural error (issue 29): ``halves`` holds the IAE between the RDF
    (ADF) of the first and of the second half of the frames, two independent estimates from
    N/2 frames each when each half is longer than the structure's correlation time. Noise per
    bin of an N-frame curve has variance s^2/N, so the halves differ by noise of variance
    4 s^2/N and an IAE, linear in the noise's scale where noise dominates, of about
    ``2 * n`` for the noise ``n`` of the whole run's curve. Two runs compared (a model against
    the reference) differ by noise of variance n_a^2 + n_b^2: their IAE cannot be expected
    below ``sqrt(h_a^2 + h_b^2) / 2`` (:func:`iae_floor`), whatever the model.
    """

    def __init__(self, config: Config, positions, box, types=None, names: tuple[str, ...] = ()):
        e = config.evaluate
        self.rdf = RDF(e.rdf_r_max_A, e.rdf_bins).compute(positions, box)
        self.adf = ADF(e.adf_r_cut_A, e.adf_bins).compute(positions, box)
        blocks = np.array_split(np.arange(len(positions)), min(e.blocks, len(positions)))
        self.rdf_blocks = [RDF(e.rdf_r_max_A, e.rdf_bins).compute(positions[b], box[b]).rdf for b in blocks]
        self.adf_blocks = [ADF(e.adf_r_cut_A, e.adf_bins).compute(positions[b], box[b]).adf for b in blocks]
        self.density = float(np.mean(positions.shape[1] / np.prod(box, axis=1)))
        self.halves = {}
        if len(positions) >= 2:
            halves = np.array_split(np.arange(len(positions)), 2)
            g = [RDF(e.rdf_r_max_A, e.rdf_bins).compute(positions[h], box[h]).rdf for h in halves]
            p = [ADF(e.adf_r_cut_A, e.adf_bins).compute(positions[h], box[h]).adf for h in halves]
            self.halves = {"rdf": integrated_absolute_error(self.rdf.bin_centers, *g),
                           "adf": integrated_absolute_error(self.adf.bin_centers, *p)}
        self.partial, self.partial_blocks = {}, {}
        if len(names) > 1:
            counts = np.bincount(np.asarray(types), minlength=len(names))
            for a in range(len(names)):
                for c in range(a, len(names)):
                    if counts[a] < 1 + (a == c) or counts[c] < 1:  # one solute molecule has no g_aa
                        continue
                    key = f"{names[a]}-{names[c]}"
                    self.partial[key] = RDF(e.rdf_r_max_A, e.rdf_bins).compute(positions, box, types, (a, c)).rdf
                    self.partial_blocks[key] = [RDF(e.rdf_r_max_A, e.rdf_bins).compute(positions[b], box[b], types,
                                                                                        (a, c)).rdf for b in blocks]

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
            if name in self.halves:
                out[f"{name}_halves_iae"] = self.halves[name]
            if reference is not None:
                ref = getattr(reference, name)
                ref_curve = ref.rdf if name == "rdf" else ref.adf
                out[f"{name}_iae"] = _with_error(integrated_absolute_error(x, curve, ref_curve),
                                                 [integrated_absolute_error(x, b, ref_curve) for b in blocks])
                if name in self.halves and name in reference.halves:
                    out[f"{name}_iae_floor"] = iae_floor(self.halves[name], reference.halves[name])
        if self.partial:
            out["rdf_partial"] = {k: {"r_A": r.tolist(), "g": g.tolist()} for k, g in self.partial.items()}
            if reference is not None and reference.partial.keys() == self.partial.keys():
                out["rdf_partial_iae"] = {
                    k: _with_error(integrated_absolute_error(r, g, reference.partial[k]),
                                   [integrated_absolute_error(r, b, reference.partial[k])
                                    for b in self.partial_blocks[k]]) for k, g in self.partial.items()}
        return out


def iae_floor(halves_a: float, halves_b: float) -> float:
    """The IAE two runs' curves show from their sampling noise alone, from each run's
    halves IAE (:class:`Structure`): ``sqrt(h_a^2 + h_b^2) / 2``."""
    return float(math.sqrt(halves_a ** 2 + halves_b ** 2) / 2.0)


def _with_error(value: float, block_values) -> dict:
    """A value and the standard error of the mean over blocks."""
    b = np.asarray(block_values, dtype=np.float64)
    err = float(np.std(b, ddof=1) / math.sqrt(len(b))) if len(b) > 1 else float("nan")
    return {"value": float(value), "error": err}


def diffusion(config: Config, trajectories, dt_ps: float, temperature_K: float, box_edge_A: float,
              types=None, names: tuple[str, ...] = ()) -> dict:
    """D from NVE segments (Å²/ps), its error over segments, and the Yeh-Hummer correction; for a
    mixture (``types``, several ``names``) D of each bead type too."""
    window = tuple(config.evaluate.msd_fit_window)
    m = MSD(window).compute(trajectories, dt_ps)
    out = {"D_A2_per_ps": {"value": m.diffusion_coefficient, "error": m.diffusion_error},
           "segments": len(trajectories),
           "msd": {"lag_ps": m.lag_time_ps.tolist(), "msd_A2": m.msd.tolist()},
           "yeh_hummer_times_viscosity": yeh_hummer_correction(temperature_K, box_edge_A, 1.0)}
    if len(names) > 1:
        out["D_by_type_A2_per_ps"] = {}
        for k, name in enumerate(names):
            mk = MSD(window).compute([x[:, np.asarray(types) == k] for x in trajectories], dt_ps)
            out["D_by_type_A2_per_ps"][name] = {"value": mk.diffusion_coefficient, "error": mk.diffusion_error}
    eta = config.evaluate.viscosity_mPa_s.get(temperature_label(temperature_K))  # keyed by label in the TOML
    if eta is not None:
        out["yeh_hummer_correction_A2_per_ps"] = yeh_hummer_correction(temperature_K, box_edge_A, eta)
    return out


def _ratio(a: dict, b: dict) -> dict:
    """a/b with first-order propagated error: unknown (NaN) when either error is (a D from one NVE
    segment has none; taking it as 0 gave the ratio the other D's error alone, far too small)."""
    va, vb = a["value"], b["value"]
    ea, eb = a["error"], b["error"]
    r = va / vb
    known = va and vb and np.isfinite(ea) and np.isfinite(eb)
    return {"value": r, "error": abs(r) * math.sqrt((ea / va) ** 2 + (eb / vb) ** 2) if known else float("nan")}


def reference_nve_beads(reference: ReferenceRun, temperature_K: float) -> tuple[list[np.ndarray], float]:
    """The reference's NVE segments at one temperature mapped to centre-of-mass beads
    (unwrapped, Å), and their frame interval (ps)."""
    trajs, dt = [], None
    for path in reference.nve_paths(temperature_K):
        d = read_h5md(path)
        cg_map = LinearMap.center_of_mass(d.static["molecule_index"], d.particles["mass"])
        trajs.append(cg_map.positions(d.elements["particles/all/position"]))
        dt = float(d.time[1] - d.time[0])
    return trajs, dt


def _cg_nve(trajectories: Trajectories, model: str, temperature_K: float) -> tuple[list[np.ndarray], float]:
    trajs, dt = [], None
    for path in trajectories.nve_paths(model, temperature_K):
        d = read_h5md(path)
        trajs.append(d.elements["particles/all/position"])
        dt = float(d.time[1] - d.time[0])
    return trajs, dt


def force_errors(models: dict, held_out: slice, temperature_K: float, cg) -> dict:
    """Held-out force MSE of each model (name -> loaded model) at one reference temperature,
    (kcal/mol/Å)²; ``cg``: that temperature's reference frames mapped to beads; ``held_out``:
    the frames no model trained on (the train stage's record)."""
    if held_out.start == held_out.stop:
        return {}
    x, f = cg.positions[held_out], cg.forces[held_out]
    cells = np.stack([np.diag(b) for b in cg.box[held_out]])  # (B, 3, 3): unambiguous for any chunk size
    types = cg.bead_type if cg.n_types > 1 else None
    out = {}
    for name, model in models.items():
        if types is not None and tuple(model.bead_types) != cg.bead_types:
            raise DataFormatError(f"{cg.source}: bead types {list(cg.bead_types)}, but model {name} was trained on "
                                  f"{list(model.bead_types)}")
        pred = np.concatenate([model.forces(x[k:k + 4], cells[k:k + 4], temperature_K, types)
                               for k in range(0, len(x), 4)])
        per_frame = np.mean((pred - f) ** 2, axis=(1, 2))
        out[name] = _with_error(float(per_frame.mean()), per_frame)
    return out


def response_scale(model, positions, box, forces, temperature_K: float, T0_K: float) -> tuple[float, float]:
    """How well a model's own temperature response ``dF = F(R, T) - F(R, T0)`` fits the
    residual of its T0 forces, ``f - F(R, T0)``, on frames at ``temperature_K``.

    Returns ``(a*, <dF^2>)``: ``a*`` is the least-squares scale of dF onto the residual (the
    factor by which scaling the learned response would lower the force error at T the most; 0
    when it is uncorrelated with the residual); ``<dF^2>`` the response's mean square,
    (kcal/mol/Å)². The residual is the exact response F_mean(R, T) - F_mean(R, T0), *plus W0's
    own error* F_mean(R, T0) - F(R, T0), plus the mapped force's noise (independent of the
    model). Only when W0's error is uncorrelated with dF is a* the learned response's size
    (1: right). It is not on water: there W0's error runs along the temperature response, and
    the restrained trf2 with a* ~2 here has 1.05 at 400 K against the exact response
    (bench/restrained_response.py, bench/RESULTS.md). The excess force error is the clean
    number. ``model.forces(x, cells, T)`` as :func:`thermocg.load_model` gives; ``box``: per
    frame, the edges (B, 3) or the cells (B, 3, 3).
    """
    def predict(temp):
        return np.concatenate([model.forces(positions[k:k + 4], box[k:k + 4], temp)
                               for k in range(0, len(positions), 4)])

    base = predict(T0_K)
    d_f = predict(temperature_K) - base
    msq = float(np.mean(d_f ** 2))
    a = float(np.sum(d_f * (forces - base)) / np.sum(d_f ** 2)) if msq > 0 else float("nan")
    return a, msq


def run_evaluate(ctx: StageContext) -> StageResult:
    """Evaluate every simulated model at every temperature (each temperature a task of
    :mod:`thermocg.tasks`: here, or on Dask with ``[run] scheduler``); write results.json."""
    from thermocg.progress import tqdm

    from thermocg import tasks as executors
    from thermocg.errors import SimulationError

    config = ctx.config
    reference, trained, trajectories = ctx.record("reference"), ctx.record("train"), ctx.record("simulate")
    names = trajectories.models
    temps = sorted({t for m in names for t in trajectories.temperatures(m)})
    run = executors.Serial() if config.run.scheduler is None else executors.Dask(config.run.scheduler)
    by_temperature = {}
    bar = tqdm(total=len(temps), desc="evaluate" if isinstance(run, executors.Serial) else "evaluate (dask)", unit="T",
               disable=not ctx.show_progress)

    def finished(task: EvaluateTask, result: TemperatureResults) -> None:
        by_temperature[task.temperature_K] = result
        bar.update(1)

    try:
        run.map(evaluate_task, [EvaluateTask(config, t, reference, trained, trajectories) for t in temps],
                label=lambda task: f"evaluate {temperature_label(task.temperature_K)}", finished=finished,
                died=SimulationError)
    finally:
        bar.close()
        _MODELS.clear()
    every = trained.names
    results = Results(temperatures_K=tuple(temps), models=tuple(sorted(every)), T0_K=config.train.T0_K,
                      training_temperatures_K={m: trained[m].training_temperatures_K for m in every},
                      by_temperature={t: by_temperature[t] for t in temps},
                      variants={m: trained[m].variant for m in every},
                      notes=_notes(reference, trained, trajectories, temps),
                      groups={m: trained[m].group for m in every}, seeds={m: trained[m].seed for m in every})
    results.write(ctx.path / Results.FILE)
    return StageResult({"results": [Results.FILE]}, _headline(results), {"results": Results.FILE})


def evaluate_temperature(config: Config, t: float, reference: ReferenceRun, trained: TrainedModels,
                         trajectories: Trajectories, models: dict) -> TemperatureResults:
    """Every model at one temperature: force errors of every trained model (``models``: name ->
    loaded model) on the held-out reference frames, structure and dynamics of each simulated one
    against the reference."""
    names = trajectories.models
    ref_measures, model_json = None, {}
    ref_struct = None
    if reference.has(t):
        cg = reference.cg_frames(t)
        typing = (cg.bead_type, cg.bead_types) if cg.n_types > 1 else (None, ())
        ref_struct = Structure(config, cg.positions, cg.box, *typing)
        ref_json = ref_struct.summary()
        if reference.nve_segments:
            trajs, dt = reference_nve_beads(reference, t)
            ref_json.update(diffusion(config, trajs, dt, t, float(cg.box[0].min()), *typing))
        ref_measures = Measures.from_json(ref_json)
        errors = force_errors(models, trained.held_out, t, cg)  # every model, simulated here or not
        floors = [errors[n]["value"] for n in trained.floor(t) if n in errors]
        floor = float(np.mean(floors)) if floors else None  # fm-each at t, averaged over its seeds
        for m, err in errors.items():
            model_json.setdefault(m, {})["force_mse"] = err
            if floor is not None:
                model_json[m]["force_mse_excess"] = err["value"] - floor
    for m in names:
        if not trajectories.has(m, t):  # the first replica is the one evaluated (it may have been unstable)
            continue
        d = read_h5md(trajectories.nvt_path(m, t))
        x, box = d.elements["particles/all/position"], d.elements["particles/all/box/edges"]
        kinds = tuple(d.attrs.get("bead_types") or ())
        typing = (d.particles["species"], kinds) if len(kinds) > 1 else (None, ())
        s = Structure(config, x, box, *typing).summary(ref_struct)
        s["mean_kinetic_temperature_K"] = float(d.elements["observables/temperature"].mean())
        if trajectories.nve_paths(m, t):
            trajs, dt = _cg_nve(trajectories, m, t)
            s.update(diffusion(config, trajs, dt, t, float(box[0].min()), *typing))
            if ref_measures is not None and ref_measures.D_A2_per_ps is not None:
                s["D_ratio_CG_over_FG"] = _ratio(s["D_A2_per_ps"], ref_json["D_A2_per_ps"])
                if "D_by_type_A2_per_ps" in s and "D_by_type_A2_per_ps" in ref_json:
                    s["D_ratio_by_type"] = {k: _ratio(v, ref_json["D_by_type_A2_per_ps"][k])
                                            for k, v in s["D_by_type_A2_per_ps"].items()}
        model_json.setdefault(m, {}).update(s)
    return TemperatureResults(t, ref_measures, {m: Measures.from_json(v) for m, v in model_json.items()})


@dataclass(frozen=True)
class EvaluateTask:
    """One temperature of the evaluate stage (picklable: it carries the records it reads)."""

    config: Config
    temperature_K: float
    reference: ReferenceRun
    trained: TrainedModels
    trajectories: Trajectories


#: the models loaded in this process, by (path, modification time, size): each is loaded once per
#: stage run, not once per temperature (emptied when the stage ends; a Dask worker keeps its own
#: for its lifetime, a few MB per model, and a model file rewritten since is loaded again)
_MODELS: dict[tuple, object] = {}


def _model(path: Path):
    st = Path(path).stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _MODELS:
        _MODELS[key] = load_model(path)
    return _MODELS[key]


def evaluate_task(task: EvaluateTask) -> TemperatureResults:
    """:func:`evaluate_temperature` of one task: every trained model's force errors (a seed that
    was not simulated still has them), structure and dynamics of each simulated one."""
    models = {name: _model(task.trained.path(name)) for name in task.trained.names}
    return evaluate_temperature(task.config, task.temperature_K, task.reference, task.trained, task.trajectories,
                                models)


def _notes(reference: ReferenceRun, trained: TrainedModels, trajectories: Trajectories, temps) -> tuple[str, ...]:
    """What the evaluation could not compute with this config, and why."""
    notes = []
    held = trained.held_out.stop - trained.held_out.start
    if held == 0:
        notes.append("force errors not computed: [train] test_frames = 0 holds out no reference frames")
    elif held == 1:
        notes.append("force errors have no standard error (null): [train] test_frames = 1 holds out a single frame")
    if not any(trained[m].single_temperature for m in trained.names):
        notes.append("force_mse_excess not computed: no fm-each model was trained ([train] variants)")
    if reference.nve_segments == 0:
        notes.append("all-atom D and D_CG/D_FG not computed: [reference.nve] n_segments = 0")
    if trajectories.nve_segments == 0 and not any(u["phase"] == "nve" for u in trajectories.unstable):
        notes.append("CG D and D_CG/D_FG not computed: [simulate.nve] n_segments = 0")
    if 1 in (trajectories.nve_segments, reference.nve_segments):
        notes.append("D has no standard error (null) where it comes from a single NVE segment")
    for u in trajectories.unstable:  # a model that cannot be simulated there is a result: say it
        lost = "structure and dynamics" if u["phase"] == "nvt" else "dynamics (D, D_CG/D_FG)"
        notes.append(f"{u['model']} at {u['temperature_K']:g} K" + (f" (replica {u['replica']})" if u["replica"] else "")
                     + f": unstable in CG MD ({u['phase'].upper()}, {u['reason']}); its {lost} not computed there")
    missing = [t for t in temps if not reference.has(t)]
    if missing:
        notes.append(f"no all-atom reference at {', '.join(f'{t:g}' for t in missing)} K: force errors, RDF/ADF "
                     "errors and D_CG/D_FG not computed there")
    return tuple(notes)


def _headline(results: Results) -> dict:
    """The manifest's summary: per model, the mean RDF IAE and D ratio over temperatures."""
    out = {}
    for m in results.models:
        rows = [e.models.get(m, Measures()) for e in results.by_temperature.values()]
        iae = [r.rdf_iae.value for r in rows if r.rdf_iae is not None]
        ratio = [r.D_ratio_CG_over_FG.value for r in rows if r.D_ratio_CG_over_FG is not None]
        out[m] = {"mean_rdf_iae": float(np.mean(iae)) if iae else None,
                  "mean_D_ratio": float(np.mean(ratio)) if ratio else None}
    return out


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's lines for a finished evaluate stage."""
    lines = []
    for model, s in manifest.get("summary", {}).items():
        iae, ratio = s.get("mean_rdf_iae"), s.get("mean_D_ratio")
        lines.append(f"{model}: mean RDF IAE {'n/a' if iae is None else f'{iae:.3f}'}, mean D_CG/D_FG "
                     f"{'n/a' if ratio is None else f'{ratio:.2f}'}")
    return lines + [f"results: {Path(directory) / manifest['record']['results']}"]
