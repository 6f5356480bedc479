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

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from thermocg import __version__
from thermocg.config import Config
from thermocg.errors import ConfigError, DataFormatError
from thermocg.io.records import TargetSet
from thermocg.io.targets_file import TargetFrames
from thermocg.io.strict import dumps, number
from thermocg.labels import temperature_label
from thermocg.mapping import CGFrames
from thermocg.stagedir import StageContext, StageResult, atomic_write_text
from thermocg.targets.baselines import (Baseline, PairBasis, PairSplineBaseline, cross_fit_splits,
                                        fit_force_and_energy)
from thermocg.targets.build import local_energy_and_baseline, thermal_targets

log = logging.getLogger(__name__)


def baselines_for(config: Config) -> Callable[..., Baseline]:
    """The baselines of ``[targets] baseline``: ``baselines(temperature_K, show_progress)`` gives
    the :class:`~thermocg.targets.baselines.Baseline` of that temperature's frames (the pair
    splines, or HIP-NN-TS networks: :class:`thermocg.targets.hipnn.HipnnBaseline`)."""
    t = config.targets
    if t.baseline == "pair-spline":
        spline = PairSplineBaseline(PairBasis(cutoff_A=t.baseline_cutoff_A, n_basis=t.baseline_n_basis), t.ridge)
        return lambda temperature_K, show_progress=False: spline
    from thermocg.targets.hipnn import HipnnBaseline  # torch and hippynn only when they are used

    return lambda temperature_K, show_progress=False: HipnnBaseline.from_config(config, temperature_K, show_progress)


def check_frames(cg: CGFrames, config: Config, source: Path) -> None:
    """Refuse reference frames that do not match the config (frames, bead count, box, temperature)."""
    ref = config.reference
    f, n = cg.positions.shape[:2]
    if f != ref.n_frames:
        raise DataFormatError(f"{source}: {f} frames, but the config has n_frames = {ref.n_frames}; run "
                              "`thermocg reference` to regenerate it")
    if not ref.builtin_water:  # the user's frames or system: the reference stage checked their boxes
        return
    if n != ref.n_molecules:
        raise DataFormatError(f"{source}: {n} molecules, but the config has n_molecules = {ref.n_molecules}")
    bad = ~np.isclose(cg.box, ref.box_length_A, rtol=1e-6).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataFormatError(f"{source}: box edges {cg.box[k].tolist()} Å in frame {k}, but the config's "
                              f"density gives {ref.box_length_A:.4f} Å")
    if not any(abs(cg.temperature_K - t) < 1e-9 for t in ref.temperatures_K):
        raise DataFormatError(f"{source}: temperature {cg.temperature_K} K is not in temperatures_K")


def _cross_fitted_mean(values: np.ndarray, folds: int) -> np.ndarray:
    """Per frame, the mean of ``values`` (F, N) over the other folds' frames (a constant model)."""
    out = np.empty_like(values)
    for train, held in cross_fit_splits(len(values), folds):
        out[held] = values[train].mean()
    return out


def compute_targets(cg: CGFrames, config: Config, baseline: Baseline | None = None) -> dict:
    """Baselines and targets for one temperature (no I/O). Returns a dict of arrays and a summary.

    ``baseline``: any :class:`~thermocg.targets.baselines.Baseline` (default: the pair splines
    of ``[targets]``); the diagnostics (signal-to-noise) use the pair splines whichever it is.
    """
    t = config.targets
    basis = PairBasis(cutoff_A=t.baseline_cutoff_A, n_basis=t.baseline_n_basis)  # for the diagnostics
    baseline = baseline if baseline is not None else PairSplineBaseline(basis, t.ridge)
    f0, u_base, fit_info = baseline.force_and_energy(cg.positions, cg.box, cg.forces, cg.bead_energy, t.cv_folds,
                                                     types=cg.bead_type)
    u_loc, c = local_energy_and_baseline(cg, u_base, t.r_e_A)
    v = baseline.variance(cg.positions, cg.box, (u_loc - c) ** 2, t.cv_folds, types=cg.bead_type)
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
            "fit_info": fit_info, "summary": summary}


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
                                      ridge=ridge, types=cg.bead_type)
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


def target_frames(cg: CGFrames, res: dict, config: Config, source: Path, source_hash: str,
                  config_hash: str) -> TargetFrames:
    """The record of one temperature's targets (what :func:`compute_targets` found, and provenance)."""
    local, glob = res["local"], res["global"]
    targets = {"t1": local.t1, "t2": local.t2, "t1_global": glob.t1, "t2_global": glob.t2, "f0": res["f0"],
               "u_loc": local.u_loc, "c": local.c, "v": res["v"], "u_baseline": res["u_baseline"],
               "bead_energy": cg.bead_energy, "u_global": glob.u_loc[:, 0], "c_global": glob.c[:, 0]}
    attrs = {"r_e_A": config.targets.r_e_A, "config_hash": config_hash,
             "config": config.model_dump_json(exclude={"source"}), "thermocg_version": __version__,
             "source_file": source.name, "source_config_hash": source_hash,
             "map": "centre of mass, one bead per molecule", "baseline": config.targets.baseline,
             "summary": res["summary"]}
    attrs.update(res["fit_info"])
    return TargetFrames(temperature_K=cg.temperature_K, positions=cg.positions, forces=cg.forces, box=cg.box,
                        potential_energy=cg.potential_energy, bead_masses=cg.bead_masses, step=cg.step,
                        targets=targets, attrs=attrs, bead_type=cg.bead_type, bead_types=cg.bead_types)


def run_targets(ctx: StageContext) -> StageResult:
    """The targets stage's runner (:meth:`thermocg.pipeline.Stage.run` is its envelope): the
    targets of every reference temperature, by ``[targets] method``."""
    from thermocg.progress import tqdm

    config = ctx.config
    reference, ref_hash = ctx.record("reference"), ctx.upstream_hash("reference")
    record = TargetSet(ctx.path, tuple(config.reference.temperatures_K)).to_json()
    if config.targets.method == "restrained":
        outputs, summary = _restrained(ctx, reference, ref_hash)
        return StageResult(outputs, summary, record, scratch=(".restrained",))  # the per-configuration resume state
    if config.reference.source == "files":
        log.info("targets: regression thermal targets (an imported reference has no OpenMM system to sample "
                 "restrained configurations)")
    baselines = baselines_for(config)
    stage, show_progress = ctx.stage, ctx.show_progress
    basis = PairBasis(cutoff_A=config.targets.baseline_cutoff_A, n_basis=config.targets.baseline_n_basis)
    outputs, summary, convergence = {}, {}, {}
    for temp in tqdm(config.reference.temperatures_K, desc="targets", unit="T", disable=not show_progress):
        label = temperature_label(temp)
        source = reference.nvt_path(temp)
        cg = reference.cg_frames(temp)
        check_frames(cg, config, source)
        res = compute_targets(cg, config, baselines(temp, show_progress))
        out = stage.path / f"{label}.h5md"
        target_frames(cg, res, config, source, ref_hash, stage.config_hash).write(out, __version__)
        convergence[label] = r_e_convergence(cg, res["f0"], res["u_baseline"], config.targets.r_e_check_A,
                                             basis, config.targets.ridge, config.targets.cv_folds)
        outputs[label] = [out.name]
        summary[label] = res["summary"]
        log.info("targets %s: force baseline R2 %.3f, energy baseline R2 %.3f, t1 local/global spread %.2f",
                 label, res["summary"]["force_baseline_r2"], res["summary"]["energy_baseline_r2"],
                 res["summary"]["t1_std_local_over_global"])
    atomic_write_text(stage.path / "convergence.json", dumps(convergence, indent=1))
    outputs["convergence"] = ["convergence.json"]
    return StageResult(outputs, summary, record)


def _restrained(ctx: StageContext, reference, ref_hash: str) -> tuple[dict, dict]:
    """``[targets] method = "restrained"``: sample the first ``restrained_configurations`` training
    frames of each of ``restrained_temperatures_K`` (default: every temperature) with their
    centres of mass restrained (issue 15), in ``[run] processes`` workers; each configuration's
    moments are kept in ``.restrained/<T>/c0000.npz`` as it finishes (a re-run samples only the
    missing ones). Every temperature's targets file holds all its frames with their mapped
    forces (the order-0 targets, as with regression) and the thermal targets of the sampled
    configurations (NaN elsewhere: missing), written when all of them are in."""
    from thermocg.progress import tqdm

    from thermocg import tasks as executors
    from thermocg.errors import SimulationError
    from thermocg.reference import engine
    from thermocg.targets.restrained import (ConfigurationTask, load_configuration, restrained_frames,
                                             sample_configuration)

    config, stage, show_progress = ctx.config, ctx.stage, ctx.show_progress
    t, ref = config.targets, config.reference
    if reference.system_xml_path is None:  # the config's check refuses this; a record could still say so
        raise ConfigError(f"{reference.directory}: imported frames have no OpenMM system; restrained targets "
                          "need one (targets.method = \"regression\")")
    system_xml = reference.system_xml_path.read_text()
    key = stage.config_hash
    seeds = np.random.SeedSequence([config.run.seed, 15]).spawn(len(ref.temperatures_K))
    by_temp, todo, cg_of = {}, [], {}
    gpu = engine.choose_platform(config.run.device)[0].getName() != "CPU"
    sampled = config.restrained_temperatures_K
    regression_at = {config.train.T0_K} if any(v.endswith("-regression") for v in config.train.variants) else set()
    n_tasks = len(sampled) * t.restrained_configurations
    run = executors.executor(config.run.processes, n_tasks, gpu, config.run.scheduler)
    threads = run.threads
    for temp, seq in zip(ref.temperatures_K, seeds):
        label = temperature_label(temp)
        source = reference.nvt_path(temp)
        cg_of[temp] = reference.cg_frames(temp)
        check_frames(cg_of[temp], config, source)
        by_temp[temp] = []
        if temp not in sampled:
            continue
        frames = reference.frames(temp)
        (stage.path / ".restrained" / label).mkdir(parents=True, exist_ok=True)
        task_seeds = seq.generate_state(t.restrained_configurations)
        for m in range(t.restrained_configurations):
            task = ConfigurationTask(
                temperature_K=float(temp), index=m, positions_A=frames.positions[m], box_A=frames.box[m],
                step=int(frames.step[m]), system_xml=system_xml, molecule_index=frames.molecule_index,
                r_e_A=t.r_e_A, offset_radius_A=t.restrained_offset_radius_A, restraint_k=t.restraint_k,
                timestep_fs=ref.timestep_fs, friction_per_ps=ref.friction_per_ps,
                equilibration_ps=t.restrained_equilibration_ps, samples=t.restrained_samples,
                interval_fs=t.restrained_interval_fs, blocks=t.restrained_blocks,
                seed=int(task_seeds[m] % 2**30), device=config.run.device, threads=threads,
                out=stage.path / ".restrained" / label / f"c{m:04d}.npz", key=key)
            by_temp[temp].append(task)
            if load_configuration(task.out, key) is None:
                todo.append(task)
    log.info("targets (restrained): %d of %d configurations to sample, %s, %s", len(todo), n_tasks,
             run.describe(), "GPU" if gpu else "CPU")
    bar = tqdm(total=len(todo), desc="restrained configurations", unit="config", disable=not show_progress)
    try:
        run.map(sample_configuration, todo, label=lambda task: f"targets {task.temperature_K:g} K configuration "
                f"{task.index}", finished=lambda task, _: bar.update(1), died=SimulationError)
    finally:
        bar.close()
    outputs, summary = {}, {}
    for temp, tasks in by_temp.items():
        label = temperature_label(temp)
        rows = [load_configuration(task.out, key) for task in tasks]
        if any(r is None for r in rows):  # written above: only a concurrent deletion gets here
            raise DataFormatError(f"{stage.path / '.restrained' / label}: a sampled configuration is missing; re-run")
        a = restrained_frames(cg_of[temp], rows)
        if temp in regression_at:  # the trf1/trf2-regression variants' targets, from every frame
            res = compute_targets(cg_of[temp], config, baselines_for(config)(temp, show_progress))
            a["targets"].update(t1_regression=res["local"].t1, t2_regression=res["local"].t2)
            a["summary"]["regression"] = res["summary"]
        attrs = {"r_e_A": t.r_e_A, "config_hash": stage.config_hash, "config": config.model_dump_json(exclude={"source"}),
                 "thermocg_version": __version__, "source_file": reference.nvt_path(temp).name,
                 "source_config_hash": ref_hash, "map": "centre of mass, one bead per molecule",
                 "baseline": "none (restrained: per-configuration sample means)", "method": "restrained",
                 "summary": a["summary"]}
        out = stage.path / f"{label}.h5md"
        cg = cg_of[temp]
        TargetFrames(temperature_K=temp, positions=cg.positions, forces=cg.forces, box=cg.box,
                     potential_energy=cg.potential_energy, bead_masses=cg.bead_masses, step=cg.step,
                     targets=a["targets"], attrs=attrs, bead_type=cg.bead_type,
                     bead_types=cg.bead_types).write(out, __version__)
        stage.add_outputs([out.name])
        outputs[label], summary[label] = [out.name], a["summary"]
        if rows:  # debug: the CLI prints the same per temperature once the stage is done (describe)
            log.debug("targets %s (restrained): %d configurations, per-configuration SNR order 0 %.1f, order 1 "
                     "%.2f, order 2 %.2f", label, len(rows), *(a["summary"][f"order{k}"]["snr_per_configuration"]
                                                                or 0.0 for k in range(3)))
    return outputs, summary


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's lines for a finished targets stage."""
    def need(s):
        frames = s["order2"]["frames_for_10_percent"]
        return "no order-2 signal found" if frames is None else f"~{frames:.0f} frames for 10% on F2"

    if any("configurations" in s for s in manifest.get("summary", {}).values()):
        return [f"{label}: {s['frames']} frames, order 0 only" if not s["configurations"] else
                f"{label}: {s['frames']} frames, {s['configurations']} restrained configurations, "
                f"per-configuration SNR order 0 {number(s['order0']['snr_per_configuration'], '.1f')}, order 1 "
                f"{number(s['order1']['snr_per_configuration'], '.2f')}, order 2 "
                f"{number(s['order2']['snr_per_configuration'], '.2f')}"
                for label, s in manifest.get("summary", {}).items()]
    return [f"{label}: F0 R2 {number(s['force_baseline_r2'], '.3f')}, U R2 {number(s['energy_baseline_r2'], '.3f')}, "
            f"order-1 SNR/sample {number(s['order1']['snr_per_sample'], '.3f')}, order-2 SNR/sample "
            f"{number(s['order2']['snr_per_sample'], '.3f')} ({need(s)})"
            for label, s in manifest.get("summary", {}).items()]
