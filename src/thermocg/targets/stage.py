"""The targets stage: reference frames -> CG training data per temperature.

For each temperature: map the all-atom frames to one bead per molecule (centre
of mass), fit the baselines in order (F0 and U_J, then v; cross-fitted over
frames; pairwise splines or HIP-NN-TS networks, ``[targets] baseline``), and build the targets of THEORY.md §3: order 0 (mapped forces), order 1
and centred order 2, local (radius r_e) and global. Outputs in
``<run.directory>/targets/``::

    manifest.json        config hash, outputs, per-temperature summary
    T300K.h5md           CG frames (H5MD: bead positions, mapped forces, box) and, under
                         thermocg/, the targets t1, t2 (local), t1_global, t2_global,
                         u_loc, c, v, f0, u_baseline, with r_e and provenance
    convergence.json     the r_e convergence check per temperature

With spline baselines a temperature takes seconds; HIP-NN-TS baselines train
2 x cv_folds networks per temperature. The stage runs in-process (the networks use
the GPU when there is one). The diagnostics (signal-to-noise, r_e convergence) use
pairwise regressions whichever baseline made the targets.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from thermocg import __version__, units
from thermocg.config import Config
from thermocg.errors import DataFormatError
from thermocg.frames import read_reference
from thermocg.io.h5md import H5MDWriter
from thermocg.mapping import CGFrames, map_reference
from thermocg.reference.sampler import temperature_label
from thermocg.reference.stage import reference_dir
from thermocg.stagedir import StageDir, atomic_path, atomic_write_text
from thermocg.targets.baselines import PairBasis, cross_fit_splits, fit_force_and_energy, fit_variance
from thermocg.targets.build import Targets, local_energy_and_baseline, thermal_targets

log = logging.getLogger(__name__)

STAGE = "targets"


def targets_dir(config: Config) -> Path:
    return config.run_dir / STAGE


def check_frames(cg: CGFrames, config: Config, source: Path) -> None:
    """Refuse reference frames that do not match the config (bead count, box, temperature)."""
    ref = config.reference
    n = cg.positions.shape[1]
    if n != ref.n_molecules:
        raise DataFormatError(f"{source}: {n} molecules, but the config has n_molecules = {ref.n_molecules}")
    if not np.allclose(cg.box, ref.box_length_A, rtol=1e-6):
        raise DataFormatError(f"{source}: box edges {cg.box[0]} Å, but the config's density gives "
                              f"{ref.box_length_A:.4f} Å")
    if not any(abs(cg.temperature_K - t) < 1e-9 for t in ref.temperatures_K):
        raise DataFormatError(f"{source}: temperature {cg.temperature_K} K is not in temperatures_K")


def _cross_fitted_mean(values: np.ndarray, folds: int) -> np.ndarray:
    """Per frame, the mean of ``values`` (F, N) over the other folds' frames (a constant model)."""
    out = np.empty_like(values)
    for train, held in cross_fit_splits(len(values), folds):
        out[held] = values[train].mean()
    return out


def _baselines(cg: CGFrames, config: Config, show_progress: bool):
    """(F0, U_J, a function fitting v to squared residuals, the spline fit or None)."""
    t = config.targets
    if t.baseline == "pair-spline":
        basis = PairBasis(cutoff_A=t.baseline_cutoff_A, n_basis=t.baseline_n_basis)
        f0, u_base, fit = fit_force_and_energy(cg.positions, cg.box, cg.forces, cg.bead_energy, basis,
                                               folds=t.cv_folds, ridge=t.ridge)
        return f0, u_base, lambda sq: fit_variance(cg.positions, cg.box, sq, basis, folds=t.cv_folds,
                                                   ridge=t.ridge), fit
    from thermocg.models import baselines as nets
    from thermocg.models.thermal import NetworkSettings
    from thermocg.models.training import TrainSettings, pick_device
    settings = nets.HipnnBaseline(
        network=NetworkSettings(cutoff_A=t.baseline_cutoff_A, dist_soft_max_A=t.baseline_cutoff_A - 0.5,
                                n_features=t.baseline_n_features),
        train=TrainSettings(max_epochs=t.baseline_max_epochs), device=pick_device(config.run.device).type)
    common = dict(temperature_K=cg.temperature_K, settings=settings, folds=t.cv_folds, seed=config.run.seed,
                  show_progress=show_progress)
    f0, u_base = nets.fit_force_and_energy(cg.positions, cg.box, cg.forces, cg.bead_energy, **common)
    return f0, u_base, lambda sq: nets.fit_variance(cg.positions, cg.box, sq, **common), None


def compute_targets(cg: CGFrames, config: Config, show_progress: bool = False) -> dict:
    """Baselines and targets for one temperature (no I/O). Returns a dict of arrays and a summary."""
    t = config.targets
    basis = PairBasis(cutoff_A=t.baseline_cutoff_A, n_basis=t.baseline_n_basis)  # for the diagnostics
    f0, u_base, fit_v, fit = _baselines(cg, config, show_progress)
    u_loc, c = local_energy_and_baseline(cg, u_base, t.r_e_A)
    v = fit_v((u_loc - c) ** 2)
    local = thermal_targets(cg, f0, u_base, t.r_e_A, variance=v)
    u_glob, c_glob = local_energy_and_baseline(cg, u_base, None)
    v_glob = _cross_fitted_mean((u_glob - c_glob) ** 2, t.cv_folds)
    glob = thermal_targets(cg, f0, u_base, None, variance=v_glob)
    summary = {
        "frames": int(cg.positions.shape[0]), "beads": int(cg.positions.shape[1]), "r_e_A": t.r_e_A,
        "force_baseline_r2": _r2(cg.forces, f0), "energy_baseline_r2": _r2(cg.bead_energy, u_base),
        "local_energy_residual_std": float(np.std(u_loc - c)),
        "global_energy_residual_std": float(np.std(u_glob - c_glob)),
        "t1_std_local_over_global": float(local.t1.std() / glob.t1.std()),
        "t2_std_local_over_global": float(local.t2.std() / glob.t2.std()),
        "order1": signal_to_noise(cg, local.t1, basis, t.ridge, t.cv_folds),
        "order2": signal_to_noise(cg, local.t2, basis, t.ridge, t.cv_folds),
        "order1_global": signal_to_noise(cg, glob.t1, basis, t.ridge, t.cv_folds),
    }
    return {"local": local, "global": glob, "f0": f0, "u_baseline": u_base, "v": v,
            "fit": fit, "summary": summary}


def _r2(y, pred) -> float:
    return float(1.0 - np.var(y - pred) / np.var(y))


def signal_to_noise(cg: CGFrames, target: np.ndarray, basis: PairBasis, ridge: float, folds: int = 5) -> dict:
    """How well one frame of a target determines its conditional mean.

    The target ``t = T(R) + noise`` is regressed with the pairwise force model,
    cross-fitted over frames, so a prediction ``p`` never saw its own noise and
    ``mean(p t)`` estimates ``mean(p T) ~ mean(T^2)`` without the overfitting
    bias of an in-sample fit (``signal`` is its square root, 0 when negative).
    ``noise^2 = mean(t^2) - signal^2``. Each bead component of a frame is one
    sample with this signal-to-noise; fitting the mean to a relative accuracy
    ``a`` needs about ``(noise / signal)^2 / a^2`` samples, reported as
    ``frames_for_10_percent`` (a = 0.1; an optimistic estimate, since the samples
    of one frame are correlated).
    """
    pred, _, _ = fit_force_and_energy(cg.positions, cg.box, target, cg.bead_energy, basis, folds=folds,
                                      ridge=ridge)
    signal = float(np.sqrt(max(np.mean(pred * target), 0.0)))
    noise = float(np.sqrt(max(np.mean(target**2) - signal**2, 0.0)))
    per_frame = 3 * cg.positions.shape[1]
    need = (noise / signal) ** 2 / 0.1**2 / per_frame if signal > 0 else float("inf")
    return {"signal_rms": signal, "noise_rms": noise, "snr_per_sample": signal / noise if noise else float("inf"),
            "frames_for_10_percent": float(need)}


def r_e_convergence(cg: CGFrames, f0, u_base, radii, basis: PairBasis, ridge: float, folds: int = 5) -> list[dict]:
    """How the order-1 target's conditional mean changes as r_e grows.

    The truncation bias of radius r_e relative to the largest radius R is the
    conditional mean of ``D = t1(R) - t1(r_e) = -(f - F0)(u_shell - c_shell)``, the
    covariance of the force with the energies in the shell between r_e and R.
    Its size is estimated without the noise floor by :func:`signal_to_noise`
    (cross-fitted pairwise regression of D): ``bias_rms`` (0 when nothing beyond
    the noise is found), next to ``F1_rms``, the same estimate for t1(r_e) itself.
    r_e has converged when ``bias_rms / F1_rms`` is small; the noise of t1 grows
    with r_e (``t1_std``), which is the price of a larger radius.
    """
    t_max = thermal_targets(cg, f0, u_base, max(radii)).t1
    rows = []
    for r_e in radii:
        t1 = thermal_targets(cg, f0, u_base, r_e).t1
        own = signal_to_noise(cg, t1, basis, ridge, folds)
        bias = signal_to_noise(cg, t_max - t1, basis, ridge, folds)
        rows.append({"r_e_A": r_e, "t1_std": float(t1.std()), "F1_rms": own["signal_rms"],
                     "bias_rms_vs_largest": bias["signal_rms"],
                     "relative_bias": bias["signal_rms"] / own["signal_rms"] if own["signal_rms"] else float("inf"),
                     "frames_for_10_percent": own["frames_for_10_percent"]})
    return rows


def _write(path: Path, cg: CGFrames, res: dict, config: Config, source: Path, source_hash: str,
           config_hash: str) -> None:
    local: Targets = res["local"]
    glob: Targets = res["global"]
    per_bead3 = {"t1": local.t1, "t2": local.t2, "t1_global": glob.t1, "t2_global": glob.t2, "f0": res["f0"]}
    per_bead = {"u_loc": local.u_loc, "c": local.c, "v": res["v"], "u_baseline": res["u_baseline"],
                "bead_energy": cg.bead_energy, "u_global": glob.u_loc[:, 0], "c_global": glob.c[:, 0]}
    n = cg.positions.shape[1]
    f1_unit = "kcal2 mol-2 Angstrom-1"  # F1 = dF/dbeta: force x energy
    f2_unit = "kcal3 mol-3 Angstrom-1"
    extras = {"t1": ((n, 3), f1_unit), "t2": ((n, 3), f2_unit), "t1_global": ((n, 3), f1_unit),
              "t2_global": ((n, 3), f2_unit), "f0": ((n, 3), units.FORCE),
              "u_loc": ((n,), units.ENERGY), "c": ((n,), units.ENERGY), "v": ((n,), "kcal2 mol-2"),
              "u_baseline": ((n,), units.ENERGY), "bead_energy": ((n,), units.ENERGY),
              "u_global": ((), units.ENERGY), "c_global": ((), units.ENERGY)}
    attrs = {"temperature_K": cg.temperature_K, "beta_mol_per_kcal": 1.0 / (units.KB * cg.temperature_K),
             "r_e_A": config.targets.r_e_A, "config_hash": config_hash, "config": config.model_dump_json(
                 exclude={"source"}), "thermocg_version": __version__, "source_file": source.name,
             "source_config_hash": source_hash, "map": "centre of mass, one bead per molecule",
             "baseline": config.targets.baseline, "summary": res["summary"]}
    if res["fit"] is not None:
        attrs.update({"force_baseline_pair_function": res["fit"].force_coef.tolist(),
                      "baseline_knots_A": res["fit"].basis.knots.tolist()})
    with atomic_path(path, ".part") as tmp, H5MDWriter(
            tmp, species=np.zeros(n, dtype=np.int32), mass=cg.bead_masses, particle_fields=("position", "force"),
            observables={"potential_energy": ((), units.ENERGY)}, extras=extras, attrs=attrs,
            creator_version=__version__) as w:
        for k in range(cg.positions.shape[0]):
            frame = {"particles/all/position": cg.positions[k], "particles/all/force": cg.forces[k],
                     "particles/all/box/edges": cg.box[k], "observables/potential_energy": cg.potential_energy[k]}
            frame.update({f"thermocg/{name}": a[k] for name, a in {**per_bead3, **per_bead}.items()})
            w.append(int(cg.step[k]), float(k), frame)
        w.flush()


def run_targets(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Run (or skip) the targets stage for every reference temperature."""
    from tqdm.auto import tqdm

    ref_dir = reference_dir(config)
    ref_stage = StageDir(ref_dir, "reference", config.section_hash("reference"), "[reference]")
    ref_manifest = ref_stage.read_manifest()
    if ref_manifest is None or not ref_manifest.get("complete"):
        raise DataFormatError(f"{ref_dir}: no complete reference stage; run `thermocg reference` with this "
                              "config first")
    if ref_manifest.get("config_hash") != ref_stage.config_hash:
        raise DataFormatError(f"{ref_dir}: made by a different [reference] config; re-run `thermocg reference`")
    config_hash = config.section_hash("reference", "targets")
    stage = StageDir(targets_dir(config), STAGE, config_hash, "[reference]/[targets]")
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest
    basis = PairBasis(cutoff_A=config.targets.baseline_cutoff_A, n_basis=config.targets.baseline_n_basis)
    outputs, summary, convergence = {}, {}, {}
    for temp in tqdm(config.reference.temperatures_K, desc="targets", unit="T", disable=not show_progress):
        label = temperature_label(temp)
        source = ref_dir / f"{label}.h5md"
        cg = map_reference(read_reference(source))
        check_frames(cg, config, source)
        res = compute_targets(cg, config, show_progress)
        out = stage.path / f"{label}.h5md"
        _write(out, cg, res, config, source, ref_stage.config_hash, config_hash)
        convergence[label] = r_e_convergence(cg, res["f0"], res["u_baseline"], config.targets.r_e_check_A,
                                             basis, config.targets.ridge, config.targets.cv_folds)
        outputs[label] = [out.name]
        summary[label] = res["summary"]
        log.info("targets %s: force baseline R2 %.3f, energy baseline R2 %.3f, t1 local/global spread %.2f",
                 label, res["summary"]["force_baseline_r2"], res["summary"]["energy_baseline_r2"],
                 res["summary"]["t1_std_local_over_global"])
    atomic_write_text(stage.path / "convergence.json", json.dumps(convergence, indent=1))
    outputs["convergence"] = ["convergence.json"]
    return stage.write_manifest(True, config_json, outputs, summary)
