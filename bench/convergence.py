"""Claim 4 of the water study (issue 14): is trf2 converged in the data and in the local radius?

trf2 is trained at T0 alone, as ``thermocg train`` trains it, on the first 25, 50, 100 and 200
frames of an independent T0 trajectory (``bench/configs/convergence-300K.toml``: 220 frames
of the study's system, another seed), and on 100 frames with the local radius r_e moved by
-1 and +1 Å. Every model is then scored as the study's evaluate stage scores it: the force
MSE on the study's held-out frames at every reference temperature, in excess of the study's
fm-each (mean over its seeds) at that temperature, and the response scale a* of
:func:`thermocg.evaluate.stage.response_scale` (the scale of the learned response that fits the
held-out forces best; it mixes in W0's error and the forces' noise, so the response's true
size needs bench/restrained_response.py). The fm of the same frames (trf2's own W0: its prediction at every temperature)
is scored beside it, so each curve has its control.

For every frame count the targets are built from those frames alone, by the targets stage's
own :func:`~thermocg.targets.stage.compute_targets` (baselines cross-fitted over them):
convergence in the data includes the baselines' convergence. The training settings are the
study's ([train] of the study config, 15 epochs at most on 2 cores): with 25 frames a model
takes fewer optimiser steps, as it would in a run with fewer frames.

    thermocg reference bench/configs/convergence-300K.toml        # ~10 min on 2 cores
    python bench/convergence.py examples/study-cpu.toml bench/configs/convergence-300K.toml
    python bench/convergence.py STUDY FRAMES --frames 25,50 --seeds 1      # a part

Needs the study's reference, train and evaluate stages (the held-out frames and the fm-each
floor). Writes ``<study run>/convergence/``: one saved model per variant and seed and
``results.json``, each job's numbers as it finishes (a re-run skips finished jobs), and
``convergence.png``, the excess force error against temperature per variant. Prints the
tables; record them in bench/RESULTS.md and docs/results.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Job:
    """trf2 (and its fm) of one seed trained on the first ``frames`` frames at T0, for each of
    ``radii``: one worker's task (the radii share the fm)."""

    study: str
    source: str
    frames: int
    radii: tuple[float, ...]
    seed: int

    def name(self, r_e: float | None) -> str:
        return f"fm-n{self.frames}-seed{self.seed}" if r_e is None else \
            f"trf2-n{self.frames}-re{r_e:g}-seed{self.seed}"

    @property
    def cost(self) -> float:
        return self.frames * (1 + 2 * len(self.radii))  # W0 + two thermal networks per radius

    @property
    def label(self) -> str:
        return f"{self.frames} frames, r_e {list(self.radii)}, seed {self.seed}"


def scorer(study):
    """``score(model)``: the held-out force MSE and a* of a loaded model at every temperature of
    the study, on the study's held-out frames (as its evaluate stage scores them)."""
    from thermocg import pipeline
    from thermocg.evaluate.stage import force_errors, response_scale
    from thermocg.io.records import TrainedModels

    t0 = study.train.T0_K
    reference = pipeline.read(study, "reference")
    held = TrainedModels.read(study.run_dir / "train").held_out
    scored = {t: reference.cg_frames(t) for t in study.reference.temperatures_K}

    def score(model) -> dict:
        out = {}
        for t, frames in scored.items():
            x, f, box = frames.positions[held], frames.forces[held], frames.box[held]
            cells = np.stack([np.diag(b) for b in box])
            mse = force_errors({"m": model}, held, t, frames)["m"]
            a, msq = response_scale(model, x, cells, f, t, t0) if t != t0 else (None, 0.0)
            out[str(t)] = {"mse": mse["value"], "mse_error": mse["error"], "a_star": a, "dF2": msq}
        return out

    return score


def _history(hist: dict) -> dict:
    return {p: {k: h[k] for k in ("valid", "best_epoch", "best_valid")} for p, h in hist.items()}


@dataclass(frozen=True)
class RestrainedJob:
    """trf2 of one seed as the study's targets stage and train stage make it with ``[targets]
    method = "restrained"`` (issue 15): W0 from the regression fm of ``w0_frames`` frames (the
    same seed, trained by a :class:`Job`), thermal heads from zero fitted to the restrained
    targets of the first ``configurations`` configurations at T0, for each local radius."""

    study: str
    source: str
    configurations: int
    w0_frames: int
    seed: int
    #: per local radius: (r_e, the sampled configurations' moment files, their key)
    radii: tuple[tuple[float, tuple[str, ...], str], ...]

    @property
    def cost(self) -> float:
        return (self.configurations * 5.0 + 300.0) * len(self.radii)  # small data: the fixed epoch overhead

    @property
    def label(self) -> str:
        return (f"restrained targets, {self.configurations} configurations, W0 of {self.w0_frames} frames, "
                f"r_e {[r for r, _, _ in self.radii]}, seed {self.seed}")

    def name(self, r_e: float) -> str:
        return f"trf2-restrained-m{self.configurations}-w0n{self.w0_frames}-re{r_e:g}-seed{self.seed}"


def run_restrained_job(job: RestrainedJob) -> dict:
    """trf2 on restrained targets with a regression W0, per local radius (in a worker)."""
    import torch

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.models.saved import load_model, save_model
    from thermocg.models.stage import fit_variant
    from thermocg.models.training import TrainingData
    from thermocg.targets.restrained import load_configuration, restrained_frames
    from thermocg.units import beta_of

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    study = load_config(job.study)
    t0, out_dir = study.train.T0_K, study.run_dir / "convergence"
    w0_path = out_dir / f"fm-n{job.w0_frames}-seed{job.seed}.pt"
    if not w0_path.exists():
        raise RuntimeError(f"{w0_path}: the W0 donor is missing (run the regression jobs first)")
    cg = pipeline.read(load_config(job.source), "reference").cg_frames(t0)
    score, start, results = scorer(study), time.monotonic(), {}
    m = job.configurations
    for r_e, files, key in job.radii:
        rows = [load_configuration(Path(f), key) for f in files]
        if any(r is None for r in rows):
            raise RuntimeError(f"a restrained configuration at r_e = {r_e:g} Å is missing: run the sampling again")
        a = restrained_frames(cg, rows)["targets"]  # the arrays the targets stage writes
        data = TrainingData(positions=cg.positions[:m], box=cg.box[:m],
                            targets={0: a["f0"][:m], 1: a["t1"][:m], 2: a["t2"][:m]}, beta=np.full(m, beta_of(t0)))
        config = study.model_copy(update={"targets": study.targets.model_copy(update={"r_e_A": r_e})})
        name = job.name(r_e)
        path = out_dir / f"{name}.pt"
        common = {"variant": "trf2", "targets": "restrained", "frames": job.w0_frames, "configurations": m,
                  "r_e_A": r_e, "seed": job.seed, "w0": f"regression n={job.w0_frames}"}
        if not path.exists():
            trf2, hist = fit_variant(config, name, 2, t0, data, "cpu", show_progress=False, variant="trf2",
                                     seed=job.seed, w0_from=load_model(w0_path).model)
            save_model(path, trf2, {**common, "history": _history(hist)})
        saved = load_model(path)
        hist = saved.metadata["history"][f"{name}-thermal"]
        results[name] = {**common, "best_valid": hist["best_valid"], "scores": score(saved)}
    return {"results": results, "seconds": time.monotonic() - start}


@dataclass(frozen=True)
class Sampling:
    """One restrained configuration sampled once and reduced for every local radius."""

    tasks: tuple  # ConfigurationTask per radius, the same configuration

    @property
    def label(self) -> str:
        return f"restrained configuration {self.tasks[0].index}"


def run_sampling(job: Sampling):
    from thermocg.targets.restrained import sample_configuration

    return sample_configuration(*job.tasks)


def sampling_tasks(study, source, m: int, out_dir: Path, r_e: float):
    """The restrained configurations to sample at T0: the first ``m`` frames of the frames
    config's reference, with the study's [targets] restrained settings and the local radius
    ``r_e``; and their key."""
    import hashlib

    from thermocg import pipeline
    from thermocg.targets.restrained import ConfigurationTask

    t, t0 = study.targets, study.train.T0_K
    ref = pipeline.read(source, "reference")
    frames = ref.frames(t0)
    settings = (r_e, t.restraint_k, t.restrained_equilibration_ps, t.restrained_samples, t.restrained_interval_fs,
                t.restrained_blocks, source.reference.timestep_fs, source.section_hash("reference"))
    if t.restrained_offset_radius_A is not None:
        settings += (t.restrained_offset_radius_A,)
    key = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    system_xml = (ref.directory / "system.xml").read_text()
    where = out_dir / "restrained" / f"re{r_e:g}"
    where.mkdir(parents=True, exist_ok=True)
    tasks = [ConfigurationTask(
        temperature_K=t0, index=i, positions_A=frames.positions[i], box_A=frames.box[i], step=int(frames.step[i]),
        system_xml=system_xml, molecule_index=frames.molecule_index, r_e_A=r_e,
        offset_radius_A=t.restrained_offset_radius_A, restraint_k=t.restraint_k,
        timestep_fs=source.reference.timestep_fs, friction_per_ps=source.reference.friction_per_ps,
        equilibration_ps=t.restrained_equilibration_ps, samples=t.restrained_samples,
        interval_fs=t.restrained_interval_fs, blocks=t.restrained_blocks, seed=4000 + i, device="cpu", threads=1,
        out=where / f"c{i:04d}.npz", key=key) for i in range(m)]
    return tasks, key


def run_job(job: Job) -> dict:
    """Targets, fm, trf2 and their scores for one job (in a worker process)."""
    import torch

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.models.saved import load_model, save_model
    from thermocg.models.stage import fit_variant
    from thermocg.models.training import TrainingData
    from thermocg.targets.stage import compute_targets
    from thermocg.units import beta_of

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    study, source = load_config(job.study), load_config(job.source)
    t0 = study.train.T0_K
    out_dir = study.run_dir / "convergence"
    cg = pipeline.read(source, "reference").cg_frames(t0)
    cg = replace(cg, **{k: getattr(cg, k)[:job.frames] for k in
                         ("positions", "forces", "box", "bead_energy", "potential_energy", "step")})
    score = scorer(study)

    results, start = {}, time.monotonic()
    fm_path = out_dir / f"{job.name(None)}.pt"
    beta = np.full(len(cg.positions), beta_of(t0))
    if not fm_path.exists():
        fm, hist = fit_variant(study, job.name(None), 0, t0,
                               TrainingData(positions=cg.positions, box=cg.box, targets={0: cg.forces}, beta=beta),
                               "cpu", show_progress=False, variant="fm", seed=job.seed)
        save_model(fm_path, fm, {"variant": "fm", "frames": job.frames, "seed": job.seed, "history": _history(hist)})
    fm = load_model(fm_path)
    results[job.name(None)] = {"variant": "fm", "frames": job.frames, "r_e_A": None, "seed": job.seed,
                               "best_valid": fm.metadata["history"][job.name(None)]["best_valid"],
                               "scores": score(fm)}
    for r_e in job.radii:
        config = study.model_copy(update={"targets": study.targets.model_copy(update={"r_e_A": r_e})})
        res = compute_targets(cg, config)
        data = TrainingData(positions=cg.positions, box=cg.box,
                            targets={0: cg.forces, 1: res["local"].t1, 2: res["local"].t2}, beta=beta)
        name = job.name(r_e)
        trf2, hist = fit_variant(config, name, 2, t0, data, "cpu", show_progress=False, variant="trf2",
                                 seed=job.seed, w0_from=fm.model)
        path = out_dir / f"{name}.pt"
        save_model(path, trf2, {"variant": "trf2", "frames": job.frames, "r_e_A": r_e, "seed": job.seed,
                                "history": _history(hist)})
        results[name] = {"variant": "trf2", "frames": job.frames, "r_e_A": r_e, "seed": job.seed,
                         "best_valid": hist[f"{name}-thermal"]["best_valid"],
                         "valid_before": hist[f"{name}-thermal"].get("valid_before"),
                         "snr_order1": res["summary"]["order1"]["snr_per_sample"],
                         "snr_order2": res["summary"]["order2"]["snr_per_sample"],
                         "scores": score(load_model(path))}
    return {"results": results, "seconds": time.monotonic() - start}


def floor_of(study) -> dict[float, float]:
    """fm-each's held-out force MSE at each temperature, mean over its seeds (the study's)."""
    from thermocg import pipeline
    from thermocg.labels import temperature_label

    res = pipeline.read(study, "evaluate")
    out = {}
    for t in study.reference.temperatures_K:
        stat = res.over_seeds(f"fm-each-{temperature_label(t)}", t, "force_mse")
        if stat is None:
            raise SystemExit(f"the study's evaluate stage has no fm-each force error at {t:g} K")
        out[t] = stat.mean
    return out


def label_of(r: dict) -> str:
    if r.get("targets") == "restrained":
        return f"trf2 restrained n={r['frames']} m={r['configurations']} r_e={r['r_e_A']:g}"
    return f"{r['variant']} n={r['frames']}" + ("" if r["r_e_A"] is None else f" r_e={r['r_e_A']:g}")


def summarise(results: dict, temps, floor: dict) -> dict:
    """Per variant (over seeds) and temperature: the excess force MSE over fm-each (mean, standard
    error over seeds) and a*, in the form :func:`thermocg.report.claims.claim4` reads."""
    groups: dict[str, list[dict]] = {}
    for r in results.values():
        groups.setdefault(label_of(r), []).append(r)
    out = {}
    for key in sorted(groups, key=lambda k: (groups[k][0].get("targets", "regression"), groups[k][0]["variant"],
                                             groups[k][0]["frames"] or 0, groups[k][0]["r_e_A"] or 0.0, k)):
        rs, by_t = groups[key], {}
        for t in temps:
            ex = np.array([r["scores"][str(t)]["mse"] - floor[t] for r in rs])
            a = [r["scores"][str(t)]["a_star"] for r in rs if r["scores"][str(t)]["a_star"] is not None]
            by_t[str(t)] = {"excess_mean": float(ex.mean()),
                            "excess_sem": float(ex.std(ddof=1) / np.sqrt(len(ex))) if len(ex) > 1 else None,
                            "a_star_mean": float(np.mean(a)) if a else None, "n_seeds": len(rs)}
        out[key] = {"variant": rs[0]["variant"], "frames": rs[0]["frames"], "r_e_A": rs[0]["r_e_A"],
                    "targets": rs[0].get("targets", "regression"), "configurations": rs[0].get("configurations"),
                    "seeds": sorted(r["seed"] for r in rs), "by_temperature": by_t}
    return out


def table(summary: dict, temps, t0: float) -> str:
    """The printed tables: excess force MSE (mean ± s.e. over seeds) and trf2's a*."""
    lines = ["excess held-out force MSE over fm-each, (kcal/mol/Å)^2: mean ± s.e. over seeds",
             f"{'variant':<24}{'seeds':>6}" + "".join(f"{t:>13g} K" for t in temps)]
    for key, v in summary.items():
        cells = ""
        for t in temps:
            e = v["by_temperature"][str(t)]
            cells += f"{e['excess_mean']:>9.3f}" + (f"±{e['excess_sem']:<5.2g}" if e["excess_sem"] is not None
                                                     else " " * 6)
        lines.append(f"{key:<24}{len(v['seeds']):>6}{cells}")
    lines += ["", "response scale a* of trf2 on held-out forces (mean over seeds; mixes in W0's error: "
              "bench/restrained_response.py measures the response's size)",
              f"{'variant':<24}" + "".join(f"{t:>9g} K" for t in temps if t != t0)]
    for key, v in summary.items():
        if v["variant"] == "trf2":
            lines.append(f"{key:<24}" + "".join(f"{v['by_temperature'][str(t)]['a_star_mean']:>11.2f}"
                                                 for t in temps if t != t0))
    return "\n".join(lines)


def plot(summary: dict, temps, t0: float, r0: float, r_e_frames: int, path: Path) -> None:
    """Excess force MSE against temperature: per frame count (trf2 solid, on restrained targets
    dotted, its fm dashed), and trf2 per local radius."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thermocg.stagedir import atomic_path

    colours = {}

    def curve(ax, key, **kw):
        v = summary[key]
        group = v["frames"] if ax is by_frames else v["r_e_A"]
        kw.setdefault("color", colours.setdefault((ax, group), f"C{len([c for c in colours if c[0] is ax])}"))
        row = v["by_temperature"]
        ax.errorbar(temps, [row[str(t)]["excess_mean"] for t in temps],
                    [row[str(t)]["excess_sem"] or 0.0 for t in temps],
                    marker="o", ms=3, capsize=2, label=key, **kw)

    fig, (by_frames, by_radius) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for key, v in summary.items():
        ls = ":" if v.get("targets") == "restrained" else "-"
        if v["variant"] == "fm":
            curve(by_frames, key, ls="--")
        elif v["r_e_A"] == r0:
            curve(by_frames, key, ls=ls)
        if v["variant"] == "trf2" and v["frames"] == r_e_frames:
            curve(by_radius, key, ls=ls)
    for ax, title in ((by_frames, f"frames at T0 (trf2 solid, restrained targets dotted, its fm dashed; r_e {r0:g} Å)"),
                      (by_radius, f"local radius r_e (trf2, {r_e_frames} frames)")):
        ax.axvline(t0, color="grey", lw=0.5)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("temperature (K)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    by_frames.set_ylabel("excess force MSE over fm-each ((kcal/mol/Å)²)")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_pool(fn, tasks: list, processes: int, finished) -> None:
    """``fn(task)`` for every task in worker processes (largest ``cost`` first);
    ``finished(task, result)`` here as each ends."""
    from thermocg.tasks import LocalProcesses

    tasks = sorted(tasks, key=lambda t: -getattr(t, "cost", 0.0))
    procs = max(1, min(processes, len(tasks)))
    LocalProcesses(procs, max(1, (os.cpu_count() or 1) // procs)).map(
        fn, tasks, finished=finished, label=lambda t: getattr(t, "label", f"configuration {getattr(t, 'index', '?')}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="the study's config (finished reference, train and evaluate stages)")
    ap.add_argument("frames_config", help="the config of the T0 trajectory to train on")
    ap.add_argument("--frames", default="25,50,100,200")
    ap.add_argument("--r-e", default="5.5,7.5", help="further local radii, Å (besides the study's)")
    ap.add_argument("--r-e-frames", type=int, default=100, help="frames for the further radii")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--configurations", default="",
                    help="restrained studies: the configurations per frame count of --frames (default: the "
                         "study's restrained_configurations per training frame, e.g. 5,10,20,40 for 20 per 100)")
    args = ap.parse_args()

    from thermocg.config import load_config
    from thermocg.stagedir import atomic_write_text

    study, source = load_config(args.study), load_config(args.frames_config)
    t0 = study.train.T0_K
    frames = [int(x) for x in args.frames.split(",")]
    extra = [float(x) for x in args.r_e.split(",") if x]
    have = source.reference.n_frames
    if t0 not in source.reference.temperatures_K or max(frames + [args.r_e_frames]) > have:
        raise SystemExit(f"{args.frames_config}: needs T0 = {t0:g} K and at least {max(frames)} frames; it has "
                         f"{list(source.reference.temperatures_K)} K and {have} frames")
    for key in ("water_model", "n_molecules", "density_g_cm3", "cutoff_A", "ewald_error_tolerance"):
        if getattr(study.reference, key) != getattr(source.reference, key):
            raise SystemExit(f"{args.frames_config}: [reference] {key} = {getattr(source.reference, key)!r}, but "
                             f"the study has {getattr(study.reference, key)!r}: not the same system")
    floor = floor_of(study)
    out_dir = study.run_dir / "convergence"
    out_dir.mkdir(exist_ok=True)
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    r0 = study.targets.r_e_A
    restrained = study.targets.method == "restrained"
    seeds = [int(x) for x in args.seeds.split(",")]
    if restrained:  # the study's trf2: restrained thermal heads on the regression fm's W0 (its donor)
        per_frame = study.targets.restrained_configurations / (study.reference.n_frames - study.train.test_frames)
        counts = ([int(x) for x in args.configurations.split(",")] if args.configurations
                  else [max(1, round(n * per_frame)) for n in frames])
        if len(counts) != len(frames) or max(counts) > have:
            raise SystemExit(f"--configurations {counts}: one count per frame count of --frames {frames}, at most "
                             f"the {have} frames of {args.frames_config}")
    jobs = [Job(str(study.source), str(source.source), n,
                () if restrained else (r0, *extra) if n == args.r_e_frames else (r0,), s)
            for s in seeds for n in frames]
    jobs = [j for j in jobs if not all(j.name(r) in results for r in (None, *j.radii))]
    print(f"{len(jobs)} job(s) to run in {args.processes} process(es) -> {out_dir}", flush=True)

    def finished(job, out):
        results.update(out["results"])
        atomic_write_text(results_path, json.dumps(results, indent=1))
        print(f"done: {job.label} in {out['seconds']:.0f} s", flush=True)

    run_pool(run_job, jobs, args.processes, finished)
    if restrained:
        from thermocg.targets.restrained import load_configuration
        radii = (r0, *extra)
        made = {r: sampling_tasks(study, source, max(counts), out_dir, r) for r in radii}
        tasks, keys = {r: made[r][0] for r in radii}, {r: made[r][1] for r in radii}
        todo = [Sampling(tuple(tasks[r][i] for r in radii)) for i in range(max(counts))
                if any(load_configuration(tasks[r][i].out, keys[r]) is None for r in radii)]
        print(f"restrained: {len(todo)} of {max(counts)} configurations at {t0:g} K to sample "
              f"(each reduced at r_e = {', '.join(f'{r:g}' for r in radii)} Å)", flush=True)
        run_pool(run_sampling, todo, args.processes, lambda job, _: print(f"sampled {job.label}", flush=True))
        rjobs = [RestrainedJob(str(study.source), str(source.source), m, n, s,
                               tuple((r, tuple(str(t.out) for t in tasks[r][:m]), keys[r])
                                     for r in (radii if n == args.r_e_frames else (r0,))))
                 for s in seeds for n, m in zip(frames, counts)]
        rjobs = [j for j in rjobs if not all(j.name(r) in results for r, _, _ in j.radii)]
        print(f"{len(rjobs)} restrained job(s) to run", flush=True)
        run_pool(run_restrained_job, rjobs, args.processes, finished)

    from thermocg.report.claims import claim4

    temps = list(study.reference.temperatures_K)
    summary = summarise(results, temps, floor)
    print(f"\n{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; study {args.study}, "
          f"frames from {args.frames_config}; T0 = {t0:g} K\n")
    print(table(summary, temps, t0))
    verdict = claim4(summary, t0, study.targets.method)
    print(f"\nclaim 4 ({verdict.text}): {verdict.verdict}")
    for line in verdict.evidence:
        print("  " + line)
    atomic_write_text(out_dir / "summary.json", json.dumps({"floor_fm_each": {str(t): v for t, v in floor.items()},
                                                             "variants": summary}, indent=1))
    plot(summary, temps, t0, r0, args.r_e_frames, out_dir / "convergence.png")
    print(f"\nwrote {out_dir / 'summary.json'} and {out_dir / 'convergence.png'}")


if __name__ == "__main__":
    main()
