"""The exact temperature response of water's mean force, by finite differences of restrained
mean forces (issue 15: why do trf1/trf2 learn half the response, a* ~ 2?).

The conditional mean force F(R, T) is defined at any CG configuration R and any temperature T.
Restrained sampling estimates it at one R with an error of ~0.2 kcal/mol/Å per component in a
few ps (bench/RESULTS.md), against a response F(R, T) - F(R, T0) of ~0.3 at 400 K. So for
``--configs`` of the study's held-out frames at ``--frames-at`` (default T0) this script samples
every bead restrained at T0 twice (independent runs A and B) and once at each ``--temperatures``,
and measures:

* **the targets against the exact response.** ``dF = F(R, T) - F(R, T0)`` (runs T and B) is the
  response with nothing truncated and no baselines; run A gives the restrained targets at T0,
  F1 = -Cov(f_I, u_loc,I) and F2 (u_loc within r_e, and with every molecule in the box), and
  their prediction ``P = F1 dβ + F2 dβ²/2`` (THEORY.md §2). ``b = Σ P_A·dF / Σ P_A·P_B``
  is the response's size relative to the prediction (1: the targets have the right size; P_B
  is run B's prediction, so the denominator is P's power without its noise; the noises of P_A
  and dF are independent). Also the correlation of P and dF with both noises removed. All
  three runs start from the same all-atom frame, so their slowest errors may correlate.
* **the models against the exact response.** For each model file (``--models``, globs), its
  response scale on these configurations, ``a* = Σ dF_model·dF / Σ dF_model²`` with
  ``dF_model = F_model(R, T) - F_model(R, T0)``, and its force error against the exact mean
  force at T in excess of the noise, ``<(F_model(R, T) - F(R, T))²> - <se_T²>``. Unlike the
  pipeline's a* (:func:`thermocg.evaluate.stage.response_scale`, on frames *from* T against
  mapped forces), neither the model's T0 error on configurations T0 rarely visits nor the
  mapped force's noise enters.
* **why the pipeline's a* differs.** With ``--frames-at T`` and T among ``--temperatures``, the
  pipeline's own a* on these frames (against their mapped forces f) splits exactly into three
  sums over ``dF_model``: the exact response (F(R, T) - F(R, T0)), W0's error at T0
  (F(R, T0) - W0(R)) and the mapped force's noise (f - F(R, T)), each / Σ dF_model².
* **the jackknife errors.** Runs A and B estimate the same moments independently, so
  ``<(x_A - x_B)²>`` against ``<se_A² + se_B²>`` checks each order's standard errors; on T0's
  own frames the order-0 ratio rescales F's noise in the "beyond noise" numbers.

Every restrained run is kept in ``--work`` (one .npz per configuration and temperature, written
atomically), so an interrupted run resumes where it stopped.

    python bench/restrained_response.py examples/study-cpu.toml --configs 8 \\
        --models 'runs/restrained-300K/train/trf*.pt' 'runs/study-cpu/train/trf*.pt' 'runs/study-cpu/train/fm-seed*.pt'

Writes ``--out`` (JSON) and prints the tables. Record them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import time

import numpy as np

def run_key(config, ref, frames_at: float, temp: float, frame: int, seed: int) -> str:
    """Everything a cached run depends on: a file made with other settings is refused, not reused."""
    tg, rf = config.targets, config.reference
    return json.dumps({"reference": str(ref.directory.resolve()), "frames_at_K": frames_at, "frame": frame,
                       "temperature_K": temp, "seed": seed, "restraint_k": tg.restraint_k, "r_e_A": tg.r_e_A,
                       "equilibration_ps": tg.restrained_equilibration_ps, "samples": tg.restrained_samples,
                       "interval_fs": tg.restrained_interval_fs, "blocks": tg.restrained_blocks,
                       "timestep_fs": rf.timestep_fs, "friction_per_ps": rf.friction_per_ps}, sort_keys=True)


def sampled(config, ref, frames_at: float, temp: float, frame: int, seed: int, path: str) -> dict:
    """Restrained moments of one held-out frame at one temperature, by the targets stage's own
    :func:`thermocg.targets.restrained.sample_configuration` (local radius r_e and the whole box,
    no offsets regression); read from ``path`` when a previous run with the same settings
    (:func:`run_key`) left it there."""
    from pathlib import Path

    from thermocg.targets.restrained import ConfigurationTask, load_configuration, sample_configuration

    key = run_key(config, ref, frames_at, temp, frame, seed)
    if os.path.exists(path):
        found = load_configuration(Path(path), key)
        if found is None:
            raise SystemExit(f"{path}: unreadable, or made with other settings than this run's ({key}); "
                             "move it away or choose another --work")
        return found
    tg, frames = config.targets, ref.frames(frames_at)
    task = ConfigurationTask(
        temperature_K=temp, index=frame, positions_A=frames.positions[frame], box_A=frames.box[frame],
        step=int(frames.step[frame]), system_xml=(ref.directory / "system.xml").read_text(),
        molecule_index=frames.molecule_index, r_e_A=tg.r_e_A, offset_radius_A=None, restraint_k=tg.restraint_k,
        timestep_fs=config.reference.timestep_fs, friction_per_ps=config.reference.friction_per_ps,
        equilibration_ps=tg.restrained_equilibration_ps, samples=tg.restrained_samples,
        interval_fs=tg.restrained_interval_fs, blocks=tg.restrained_blocks, seed=seed, device=config.run.device,
        threads=None, out=Path(path), key=key)
    return load_configuration(sample_configuration(task), key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the study's config (finished reference stage); its [targets] "
                                   "restrained_* keys and r_e_A set the sampling")
    ap.add_argument("--configs", type=int, default=8, help="held-out frames to sample")
    ap.add_argument("--frames-at", type=float, default=None, help="the frames' temperature, K (default T0)")
    ap.add_argument("--temperatures", default="250,350,400,500,700", help="K, comma-separated")
    ap.add_argument("--models", nargs="*", default=[], help="model files (globs) to score")
    ap.add_argument("--work", default="runs/restrained-response", help="the restrained runs, kept for resuming")
    ap.add_argument("--out", default=None, help="default bench/results/restrained_response[-<frames' T>].json")
    args = ap.parse_args()

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.models.stage import held_out_frames
    from thermocg.labels import temperature_label
    from thermocg.models.saved import load_model
    from thermocg.stagedir import atomic_write_text
    from thermocg.units import KB

    config = load_config(args.config)
    t0 = config.train.T0_K
    temps = [float(t) for t in args.temperatures.split(",") if t]
    ref = pipeline.read(config, "reference")
    frames_at = t0 if args.frames_at is None else args.frames_at
    if frames_at not in config.reference.temperatures_K:
        raise SystemExit(f"--frames-at {frames_at:g}: not a reference temperature of {args.config}")
    if args.out is None:
        args.out = "bench/results/restrained_response" + (
            "" if frames_at == t0 else f"-{temperature_label(frames_at)}") + ".json"
    cg = ref.cg_frames(frames_at)
    held = list(range(len(cg.positions)))[held_out_frames(config)][:args.configs]  # the study's train stage need not have run
    mapped = cg.forces[held]
    os.makedirs(args.work, exist_ok=True)
    tg = config.targets
    tag = f"k{tg.restraint_k:g}-re{tg.r_e_A:g}-K{tg.restrained_samples}"
    start = time.monotonic()
    runs: dict[tuple[int, str], dict] = {}
    jobs = [(t0, "A", 1), (t0, "B", 2)] + [(t, f"{t:g}", 3) for t in temps]
    total = len(jobs) * len(held)
    done = 0
    for temp, name, seed_base in jobs:  # temperature-major: one OpenMM context per temperature
        for c, frame in enumerate(held):
            path = os.path.join(args.work, f"{temperature_label(frames_at)}-f{frame}-{name}-{tag}.npz")
            t_run = time.monotonic()
            runs[(c, name)] = sampled(config, ref, frames_at, temp, int(frame), 1000 * seed_base + int(frame), path)
            done += 1
            print(f"  {done}/{total} frame {frame} run {name} ({temp:g} K): {time.monotonic() - t_run:.0f} s",
                  flush=True)
    seconds_md = time.monotonic() - start
    n = len(held)
    A = [runs[(c, "A")] for c in range(n)]
    B = [runs[(c, "B")] for c in range(n)]
    centres = np.stack([a["centres"] for a in A])
    box = np.stack([np.diag(a["box"]) for a in A])
    if not np.allclose(centres, cg.positions[held], atol=1e-6):
        raise SystemExit(f"{args.work}: the sampled centres are not the held-out frames' beads at {frames_at:g} K")
    beta0 = 1.0 / (KB * t0)

    def jack(num, den):
        """ratio of sums over configurations and its jackknife error over configurations"""
        num, den = np.asarray(num), np.asarray(den)
        r = num.sum() / den.sum()
        if len(num) < 3:
            return float(r), None
        loo = (num.sum() - num) / (den.sum() - den)
        return float(r), float(np.sqrt((len(num) - 1) / len(num) * np.sum((loo - loo.mean()) ** 2)))

    out = {"machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
           "args": vars(args), "T0_K": t0, "frames_at_K": frames_at, "frames": [int(f) for f in held], "restraint_k": tg.restraint_k,
           "r_e_A": tg.r_e_A, "samples": tg.restrained_samples, "seconds_md": seconds_md,
           "targets": {}, "models": {}}
    # the same moments at T0 twice: <(x_A - x_B)^2> against <se_A^2 + se_B^2> checks the errors
    out["se_check_T0"] = {}
    print(f"\n{n} held-out frames at {frames_at:g} K (T0 = {t0:g} K), k = {tg.restraint_k:g}, "
          f"{tg.restrained_samples} samples; MD {seconds_md / 60:.0f} min.\nRuns A and B at T0: "
          "<(x_A - x_B)^2> over the jackknife's <se_A^2 + se_B^2>")
    for key in ("F", "F1", "F2"):
        d_ab = np.mean([np.mean((a[key] - b[key]) ** 2) for a, b in zip(A, B)])
        se_ab = np.mean([np.mean(a[f"{key}_se"] ** 2 + b[f"{key}_se"] ** 2) for a, b in zip(A, B)])
        out["se_check_T0"][key] = {"mean_sq_difference": float(d_ab), "mean_sq_predicted": float(se_ab),
                                   "ratio": float(d_ab / se_ab)}
        print(f"  {key:<3}{d_ab:>9.3g} / {se_ab:<9.3g} = {d_ab / se_ab:.2f}")
    # order 0's jackknife misses slow parts of the mean force (2.6x in variance at T0's own
    # frames, bench/RESULTS.md): its variances scaled by the A/B ratio. On frames from another
    # temperature the ratio also holds the slow relaxation of the hidden degrees of freedom from
    # a configuration T0 rarely visits (6.8x at 400 K's frames), not the noise of the run at T:
    # there the jackknife's own errors are used, and "beyond noise" numbers are upper bounds.
    f_noise = max(out["se_check_T0"]["F"]["ratio"], 1.0) if frames_at == t0 else 1.0
    out["order0_noise_scale"] = f_noise
    print(f"\n{'T':>6}{'dβ':>8}{'|dF|':>8}{'|P|':>8}  {'b (r_e)':>14}{'corr':>7}  {'b (F1 only)':>14}"
          f"  {'b (all u)':>14}{'corr':>7}")
    for t in temps:
        db = 1.0 / (KB * t) - beta0
        T = [runs[(c, f"{t:g}")] for c in range(n)]
        dF = [x["F"] - b["F"] for x, b in zip(T, B)]
        se_dF2 = [f_noise * (x["F_se"] ** 2 + b["F_se"] ** 2) for x, b in zip(T, B)]
        row = {"dbeta_mol_per_kcal": db}
        sig_dF2 = np.mean([np.mean(d ** 2 - s) for d, s in zip(dF, se_dF2)])
        row["dF_rms_beyond_noise"] = float(np.sqrt(max(sig_dF2, 0)))
        cells = ""
        for key, with_f2 in (("r_e", True), ("F1_only", False), ("all_u", True)):
            sfx = "_global" if key == "all_u" else ""
            # P's signal power from runs A and B, whose noises are independent (the F1 and F2
            # errors of one run are correlated, which the jackknife's separate errors miss)
            P, PB = ([x[f"F1{sfx}"] * db + (0.5 * x[f"F2{sfx}"] * db**2 if with_f2 else 0) for x in R] for R in (A, B))
            num = [np.sum(p * d) for p, d in zip(P, dF)]
            den = [np.sum(p * q) for p, q in zip(P, PB)]
            b, b_se = jack(num, den)
            sig_P2 = np.mean([np.mean(p * q) for p, q in zip(P, PB)])
            corr = (float(np.mean([np.mean(p * d) for p, d in zip(P, dF)]) / np.sqrt(sig_P2 * sig_dF2))
                    if sig_P2 > 0 and sig_dF2 > 0 else float("nan"))  # nan: a noise-only estimate
            row[key] = {"b": b, "b_se": b_se, "corr_beyond_noise": corr,
                        "P_rms_beyond_noise": float(np.sqrt(max(sig_P2, 0)))}
        out["targets"][f"{t:g}"] = row
        fmt = lambda r: f"{r['b']:>8.2f} ± {r['b_se'] or 0:<4.2f}"  # noqa: E731
        print(f"{t:>6g}{db:>8.3f}{row['dF_rms_beyond_noise']:>8.3f}{row['r_e']['P_rms_beyond_noise']:>8.3f}  "
              f"{fmt(row['r_e'])}{row['r_e']['corr_beyond_noise']:>7.2f}  {fmt(row['F1_only'])}  "
              f"{fmt(row['all_u'])}{row['all_u']['corr_beyond_noise']:>7.2f}")

    files = sorted({p for pattern in args.models for p in glob.glob(pattern)})
    if files:
        print("\nmodels on the same configurations: a* = Σ dF_model·dF / Σ dF_model² (1: the right size), "
              "and the force MSE against the exact mean force beyond its noise, kcal²/mol²/Å²")
    groups: dict[str, dict] = {}
    for path in files:
        model = load_model(path)
        label = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
        variant = re.sub(r"-seed\d+$", "", os.path.basename(path)[:-3])
        group = f"{label}/{variant}"

        def predict(temp):
            return np.concatenate([model.forces(centres[k:k + 4], box[k:k + 4], temp) for k in range(0, n, 4)])

        base = predict(t0)
        rec = {"T0_mse": float(np.mean([np.mean((base[c] - B[c]["F"]) ** 2 - f_noise * B[c]["F_se"] ** 2)
                                        for c in range(n)]))}
        for t in temps:
            T = [runs[(c, f"{t:g}")] for c in range(n)]
            pred = predict(t)
            d_model = pred - base
            dF = np.stack([x["F"] - b["F"] for x, b in zip(T, B)])
            msq = float(np.mean(d_model ** 2))
            a = float(np.sum(d_model * dF) / np.sum(d_model ** 2)) if msq > 1e-12 else None
            mse = float(np.mean([np.mean((pred[c] - T[c]["F"]) ** 2 - f_noise * T[c]["F_se"] ** 2)
                                 for c in range(n)]))
            per_config = lambda x: np.sum(d_model * x, axis=(1, 2)).tolist()  # noqa: E731
            rec[f"{t:g}"] = {"a_star": a, "dF_model_rms": float(np.sqrt(msq)), "mse_beyond_noise": mse,
                             "den": per_config(d_model), "num": {"a_star": per_config(dF)}}
            if t == frames_at and a is not None:
                # the pipeline's a* on these frames, and its three parts (they sum to it exactly)
                FT, FB = np.stack([x["F"] for x in T]), np.stack([b["F"] for b in B])
                norm = np.sum(d_model ** 2)
                rec[f"{t:g}"].update(
                    a_star_mapped=float(np.sum(d_model * (mapped - base)) / norm),
                    w0_error_part=float(np.sum(d_model * (FB - base)) / norm),
                    noise_part=float(np.sum(d_model * (mapped - FT)) / norm))
                rec[f"{t:g}"]["num"].update(a_star_mapped=per_config(mapped - base),
                                            w0_error_part=per_config(FB - base), noise_part=per_config(mapped - FT))
        groups.setdefault(group, {})[os.path.basename(path)] = rec
    for group, models in groups.items():
        summary = {}
        for key in ["T0"] + [f"{t:g}" for t in temps]:
            def stat(vals):
                vals = [v for v in vals if v is not None]
                if not vals:
                    return None, None
                return float(np.mean(vals)), (float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1
                                              else None)
            if key == "T0":
                summary["T0_mse"] = stat([m["T0_mse"] for m in models.values()])
            else:
                summary[key] = {q: stat([m[key].get(q) for m in models.values()])
                                for q in ("a_star", "mse_beyond_noise", "a_star_mapped", "w0_error_part",
                                          "noise_part")}
                # the seeds' mean ratio with its jackknife over the configurations: the error that
                # the configurations and dF's noise (shared by every seed) give it
                rows = [m[key] for m in models.values() if m[key]["a_star"] is not None]
                summary[key]["over_configurations"] = {
                    q: jack(np.sum([r["num"][q] for r in rows], axis=0), np.sum([r["den"] for r in rows], axis=0))
                    for q in (rows[0]["num"] if rows else ())}
        out["models"][group] = {"seeds": models, "mean_sem": summary}
    if groups:
        print("\nW0's error: MSE vs the exact mean force F(R, T0) beyond noise, (kcal/mol/Å)² (mean ± s.e. over seeds)")
        for group in groups:
            m, s = out["models"][group]["mean_sem"]["T0_mse"]
            print(f"{group:<30}{m:>8.3f}" + ("" if s is None else f" ± {s:.3f}"))
        head = "".join(f"{f'{t:g} K':>13}" for t in temps)
        for title, key in (("a* (over the seeds' sums; ± jackknife over the configurations)", "a_star"),
                           ("MSE vs exact F(R, T) beyond noise (mean ± s.e. over seeds)", "mse_beyond_noise")):
            print(f"\n{title}\n{'model':<30}" + head)
            for group, g in groups.items():
                cells = ""
                for t in temps:
                    ms = out["models"][group]["mean_sem"][f"{t:g}"]
                    m, s = ms["over_configurations"].get(key, (None, None)) if key == "a_star" else ms[key]
                    cells += f"{'-':>13}" if m is None else f"{m:>8.3f}±{s or 0:<4.2f}"
                print(f"{group:<30}{cells}")
        if frames_at in temps and any(out["models"][g]["mean_sem"][f"{frames_at:g}"]["a_star_mapped"][0] is not None
                                      for g in groups):
            print(f"\nthe pipeline's a* at {frames_at:g} K on these frames = exact response + W0's error + "
                  "the mapped force's noise (each Σ dF_model·part / Σ dF_model² over the seeds' sums; ± jackknife "
                  "over the configurations)")
            print(f"{'model':<30}" + "".join(f"{h:>13}" for h in ("pipeline a*", "exact", "W0 error", "noise")))
            for group in groups:
                ms = out["models"][group]["mean_sem"][f"{frames_at:g}"]
                if ms["a_star_mapped"][0] is None:
                    continue
                oc = ms["over_configurations"]
                print(f"{group:<30}" + "".join(f"{oc[q][0]:>8.2f}±{oc[q][1] or 0:<4.2f}" for q in
                                               ("a_star_mapped", "a_star", "w0_error_part", "noise_part")))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
