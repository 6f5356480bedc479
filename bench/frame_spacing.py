"""Frame spacing for the regression targets (issue 15): at a fixed all-atom MD budget, how does
the noise of the thermal-response targets fall as the frames come closer than the study's 1 ps?

The regression targets are one product of fluctuations per frame, ``t1 = -(f - F0)(u_loc - c)``
(THEORY.md §3). Their noise is made by the hidden degrees of freedom (for water, the
orientations and the hydrogen-bond network), which decorrelate in femto- to picoseconds, while
the beads' configuration (the signal's argument) moves more slowly. Frames closer together
give more samples per nanosecond, but correlated ones. From one dense trajectory (the targets
stage's output for ``bench/configs/spacing-300K.toml``: 600 frames 50 fs apart) this script
measures, per quantity (the force's fluctuation f - F0, the local energy's u_loc - c, the
targets t1 and t2), the normalised autocorrelation function over beads and components and
its integrated time (Sokal's window at the first negative value); then for each frame
spacing Delta the statistical inefficiency ``g = 1 + 2 sum_j rho(j Delta)`` and the
effective independent samples per ps of MD, ``1 / (Delta g)``. The noise of a target fitted
from a fixed budget scales as ``sqrt(Delta g)``; the table gives it relative to 1 ps.

    thermocg reference bench/configs/spacing-300K.toml && thermocg targets bench/configs/spacing-300K.toml
    python bench/frame_spacing.py bench/configs/spacing-300K.toml

Writes ``--out`` (JSON). Record the table in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np


def acf(series: np.ndarray, max_lag: int) -> np.ndarray:
    """The normalised autocorrelation of (F, ...) series along the frames, averaged over the
    trailing axes (each component centred on its own mean), lags 0..max_lag."""
    x = series.reshape(len(series), -1)
    x = x - x.mean(axis=0)
    n = len(x)
    spec = np.fft.rfft(x, n=2 * n, axis=0)
    c = np.fft.irfft(spec * np.conj(spec), axis=0)[:max_lag + 1].sum(axis=1)
    c /= (n - np.arange(max_lag + 1))  # unbiased at each lag
    return c / c[0]


def integrated_time(rho: np.ndarray, dt: float) -> float:
    """dt x (1/2 + sum of rho up to its first negative value)."""
    cut = int(np.argmax(rho < 0)) if np.any(rho < 0) else len(rho)
    return float(dt * (0.5 + rho[1:cut].sum()))


def inefficiency(rho: np.ndarray, every: int) -> float:
    """g = 1 + 2 sum_j rho(j every) over the lags of a subsampled series, up to the first
    negative value of the dense function (beyond it rho is noise)."""
    cut = int(np.argmax(rho < 0)) if np.any(rho < 0) else len(rho)
    return float(1.0 + 2.0 * sum(rho[j] for j in range(every, cut, every)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a config whose targets stage has run on densely spaced frames")
    ap.add_argument("--temperature", type=float, default=None, help="K (default: the first)")
    ap.add_argument("--spacings-ps", default="0.05,0.1,0.2,0.5,1.0")
    ap.add_argument("--max-lag-ps", type=float, default=5.0)
    ap.add_argument("--out", default="bench/results/frame_spacing.json")
    args = ap.parse_args()

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.stagedir import atomic_write_text

    config = load_config(args.config)
    temp = args.temperature or config.reference.temperatures_K[0]
    tf = pipeline.read(config, "targets").frames(temp)
    dt = config.reference.frame_interval_ps
    steps = np.diff(tf.step)
    if len(set(steps.tolist())) != 1:
        raise SystemExit(f"{args.config}: the frames are not evenly spaced")
    max_lag = min(int(round(args.max_lag_ps / dt)), len(tf.step) // 3)
    t = tf.targets
    series = {"f - F0": tf.forces - t["f0"], "u_loc - c": t["u_loc"] - t["c"], "t1": t["t1"], "t2": t["t2"]}
    rhos = {name: acf(x, max_lag) for name, x in series.items()}
    out = {"config": args.config, "temperature_K": temp, "frames": len(tf.step), "frame_interval_ps": dt,
           "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
           "integrated_time_fs": {n: 1000 * integrated_time(r, dt) for n, r in rhos.items()},
           "acf": {n: r[:int(round(1.0 / dt)) + 1].tolist() for n, r in rhos.items()}, "by_spacing": {}}
    print(f"{len(tf.step)} frames {1000 * dt:g} fs apart at {temp:g} K; integrated autocorrelation time along the "
          "trajectory (fs): " + ", ".join(f"{n} {v:.0f}" for n, v in out["integrated_time_fs"].items()))
    print(f"\n{'spacing (ps)':>13}" + "".join(f"{n + ': g':>12}{'n_eff/ps':>10}{'noise':>8}" for n in ("t1", "t2")))
    spacings = [float(s) for s in args.spacings_ps.split(",")]
    ref = {}
    for name in ("t1", "t2"):
        every = int(round(1.0 / dt))
        ref[name] = 1.0 * inefficiency(rhos[name], every)
    for spacing in spacings:
        every = int(round(spacing / dt))
        if abs(every * dt - spacing) > 1e-9 or every < 1:
            raise SystemExit(f"--spacings-ps: {spacing} ps is not a multiple of the frames' {dt} ps")
        row, cells = {}, ""
        for name in ("t1", "t2"):
            g = inefficiency(rhos[name], every)
            n_eff = 1.0 / (spacing * g)
            noise = float(np.sqrt(spacing * g / ref[name]))
            row[name] = {"inefficiency": g, "effective_samples_per_ps": n_eff, "noise_relative_to_1ps": noise}
            cells += f"{g:>12.2f}{n_eff:>10.2f}{noise:>8.2f}"
        out["by_spacing"][str(spacing)] = row
        print(f"{spacing:>13g}{cells}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
