"""Per-configuration thermal-response targets from restrained-bead sampling (issue 15).

The regression targets of :mod:`thermocg.targets.build` use one fine-grained sample per CG
configuration: each product ``(f - F0)(u - c)`` is the signal plus noise many times its
size, and only the regression over thousands of frames averages it out. Restrained
sampling holds the beads at one configuration R and lets the hidden degrees of freedom
(for water, the orientations) move; K samples of the mapped forces ``f_I`` and the local
energies ``u_loc,I`` at that R then give the conditional moments of THEORY.md §2 directly:

* order 0: ``F_I(R) = <f_I>_R``, the mean force;
* order 1: ``F1_I(R) = -Cov_R(f_I, u_loc,I)``;
* order 2: ``F2_I(R) = kappa_R(f_I, u_loc,I, u_loc,I)``, the third joint cumulant;

with no baseline at all: the sample means play the role of F0 and c exactly, so none of the
baseline biases of THEORY.md §3 (``-e d``, ``-2 d F1``) arise. Orders 1 and 2 use the unbiased
k-statistics (``K/(K-1)`` and ``K^2/((K-1)(K-2))`` times the central sample moments).

The samples of one configuration come from one MD trajectory and are correlated; the
standard errors are the delete-one-block jackknife over ``blocks`` contiguous blocks, which
is right for correlated samples when a block is longer than the correlation time, and for
the nonlinear (cumulant) estimators. (Written here: the estimators are the method itself,
and no library computes block-jackknife errors of joint cumulants over a (K, N, 3) array.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ConditionalMoments:
    """The conditional moments at one CG configuration, per bead, with standard errors.

    ``F``, ``F1``, ``F2`` and their errors ``*_se``: (N, 3), kcal/mol/Å (F1 per unit beta:
    kcal²/mol²/Å; F2: kcal³/mol³/Å). ``U``: (N,) the mean local energy <u_loc,I>_R and
    ``v``: (N,) its variance (the order-2 centring of the regression targets), kcal/mol and
    kcal²/mol². ``samples``: K; ``blocks``: the jackknife blocks.
    """

    F: np.ndarray
    F1: np.ndarray
    F2: np.ndarray
    F_se: np.ndarray
    F1_se: np.ndarray
    F2_se: np.ndarray
    U: np.ndarray
    v: np.ndarray
    samples: int
    blocks: int


def _cumulants(n, s_f, s_u, s_fu, s_uu, s_fuu):
    """Mean force, -k(f, u) and k(f, u, u) (unbiased k-statistics), <u> and Var(u) from the power
    sums of n samples (shifted to a common origin). ``n``: a number, or (B,) for B sets of sums
    stacked on a leading axis (``s_f`` (B, N, 3), ``s_u`` (B, N), ...)."""
    n = np.asarray(n, dtype=np.float64)
    n_u = n[..., None]  # broadcasts against (..., N)
    n_f = n[..., None, None]  # against (..., N, 3)
    f_bar = s_f / n_f
    u_bar = s_u / n_u
    c_fu = s_fu - n_f * f_bar * u_bar[..., None]  # sum (f - f_bar)(u - u_bar)
    c_uu = s_uu - n_u * u_bar**2  # sum (u - u_bar)^2
    # sum (f - f_bar)(u - u_bar)^2 = S_fuu - 2 u_bar S_fu + u_bar^2 S_f - f_bar sum (u - u_bar)^2
    c_fuu = s_fuu - 2 * u_bar[..., None] * s_fu + (u_bar**2)[..., None] * s_f - f_bar * c_uu[..., None]
    f1 = -c_fu / (n_f - 1)
    f2 = n_f * c_fuu / ((n_f - 1) * (n_f - 2))
    return f_bar, f1, f2, u_bar, c_uu / (n_u - 1)


def conditional_moments(forces, local_energies, blocks: int = 10) -> ConditionalMoments:
    """Orders 0-2 at one configuration from K samples in time order.

    Parameters
    ----------
    forces : (K, N, 3) mapped forces f_I of each sample, kcal/mol/Å (without any restraint force)
    local_energies : (K, N) u_loc,I of each sample, kcal/mol (per-molecule energies summed over
        the beads within r_e of I, the neighbours taken at the restrained configuration)
    blocks : contiguous blocks for the jackknife errors (each should outlast the correlation
        time of f and u_loc); at least 2, at most K/3
    """
    f = np.asarray(forces, dtype=np.float64)
    u = np.asarray(local_energies, dtype=np.float64)
    if f.ndim != 3 or f.shape[2] != 3 or u.shape != f.shape[:2]:
        raise ValueError(f"forces must be (K, N, 3) and local energies (K, N); found {f.shape} and {u.shape}")
    k = len(f)
    if not 2 <= blocks <= k // 3:
        raise ValueError(f"blocks = {blocks}: need 2 <= blocks <= K/3 = {k // 3} (K = {k} samples)")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(u))):
        raise ValueError("forces or local energies are not finite")
    # shift to the sample means: cumulants are shift invariant, and the power sums stay small
    f0 = f.mean(axis=0)
    f = f - f0
    u0 = u.mean(axis=0)
    u = u - u0
    edges = np.linspace(0, k, blocks + 1).astype(int)

    def block_sums(x):
        return np.add.reduceat(x, edges[:-1], axis=0)  # (B, ...)

    uu = u * u
    sums = [block_sums(x) for x in (f, u, f * u[..., None], uu, f * uu[..., None])]
    n_b = np.diff(edges).astype(np.float64)
    total = [s.sum(axis=0) for s in sums]
    F, F1, F2, U, v = _cumulants(float(k), *total)
    # delete-one-block: the sums without block b, for every b at once
    loo = [t[None] - s for t, s in zip(total, sums)]
    jf, j1, j2, _, _ = _cumulants(k - n_b, *loo)

    def jackknife_se(est):
        return np.sqrt((blocks - 1) / blocks * np.sum((est - est.mean(axis=0)) ** 2, axis=0))

    return ConditionalMoments(F=F + f0, F1=F1, F2=F2, F_se=jackknife_se(jf), F1_se=jackknife_se(j1),
                              F2_se=jackknife_se(j2), U=U + u0, v=v, samples=k, blocks=blocks)


# -- the targets stage's restrained method --------------------------------------------------

@dataclass(frozen=True)
class ConfigurationTask:
    """One restrained configuration to sample (picklable: it crosses to a worker process)."""

    temperature_K: float
    index: int
    positions_A: np.ndarray  # one reference frame, atoms, molecules whole
    box_A: np.ndarray
    step: int  # the frame's MD step in the reference
    system_xml: str
    molecule_index: np.ndarray
    r_e_A: float
    restraint_k: float
    timestep_fs: float
    friction_per_ps: float
    equilibration_ps: float
    samples: int
    interval_fs: float
    blocks: int
    seed: int
    device: str
    threads: int | None
    out: Path
    #: identifies the settings the result belongs to (a file with another key is sampled again)
    key: str


_SAMPLERS: dict = {}  # per process: one OpenMM context per temperature, reused across configurations


def sample_configuration(task: ConfigurationTask) -> Path:
    """Sample one configuration, reduce it to its conditional moments (local radius r_e and
    global) and write them to ``task.out`` (temporary name, then renamed)."""
    from thermocg.reference.restrained import RestrainedSampler
    from thermocg.stagedir import atomic_path
    from thermocg.targets.local import neighbour_matrix

    where = f"restrained {task.temperature_K:g} K configuration {task.index}"
    handle = (task.temperature_K, task.restraint_k, task.timestep_fs, task.friction_per_ps, task.system_xml)
    if handle not in _SAMPLERS:
        _SAMPLERS.clear()
        _SAMPLERS[handle] = RestrainedSampler(task.system_xml, task.molecule_index, task.temperature_K,
                                              task.restraint_k, task.timestep_fs, task.friction_per_ps,
                                              task.device, task.threads)
    s = _SAMPLERS[handle].sample(task.positions_A, task.box_A, task.equilibration_ps * 1000.0, task.samples,
                                 task.interval_fs, task.seed, where)
    u_loc = (neighbour_matrix(s.centres, s.box, task.r_e_A) @ s.molecule_energies.T).T
    local = conditional_moments(s.forces, u_loc, task.blocks)
    total = np.repeat(s.molecule_energies.sum(axis=1, keepdims=True), s.forces.shape[1], axis=1)
    glob = conditional_moments(s.forces, total, task.blocks)
    with atomic_path(task.out, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, key=task.key, step=task.step, centres=s.centres, box=s.box, F=local.F, F_se=local.F_se,
                     F1=local.F1, F1_se=local.F1_se, F2=local.F2, F2_se=local.F2_se, U=local.U, v=local.v,
                     F1_global=glob.F1, F2_global=glob.F2, U_global=glob.U[0],
                     bead_energy=s.molecule_energies.mean(axis=0), offset_rms=np.sqrt(np.mean(s.offsets**2)))
    return task.out


def load_configuration(path: Path, key: str) -> dict | None:
    """A sampled configuration's moments, or None when missing or made with other settings."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {name: z[name] for name in z.files}
    except (OSError, KeyError, ValueError):
        return None


def restrained_frames(rows: list[dict]) -> dict:
    """The targets-file arrays (:class:`thermocg.io.records.TargetFrames`) of the sampled
    configurations at one temperature: positions are the restrained centres, the order-0 target
    is the conditional mean force, t1 and t2 the conditional order-1 and order-2 estimates, with
    their standard errors; the baselines are the exact sample means (F0 = F, c = <u_loc>,
    v = Var(u_loc)), which is what makes these targets unbiased."""
    def stack(name):
        return np.stack([r[name] for r in rows])

    F = stack("F")
    targets = {"t1": stack("F1"), "t2": stack("F2"), "t1_global": stack("F1_global"), "t2_global": stack("F2_global"),
               "f0": F, "u_loc": stack("U"), "c": stack("U"), "v": stack("v"), "u_baseline": stack("bead_energy"),
               "bead_energy": stack("bead_energy"), "u_global": stack("U_global"), "c_global": stack("U_global"),
               "t0_se": stack("F_se"), "t1_se": stack("F1_se"), "t2_se": stack("F2_se")}
    return {"positions": stack("centres"), "forces": F, "box": stack("box"), "potential_energy": stack("U_global"),
            "step": stack("step").astype(np.int64), "targets": targets, "summary": restrained_summary(targets, rows)}


def restrained_summary(targets: dict, rows: list[dict]) -> dict:
    """Per order: the rms estimate over beads and configurations with its noise removed (the
    signal), the rms standard error, and their ratio (the per-configuration SNR)."""
    out = {"configurations": len(rows), "offset_rms_A": float(np.mean([r["offset_rms"] for r in rows]))}
    for order, (est, se) in enumerate((("f0", "t0_se"), ("t1", "t1_se"), ("t2", "t2_se"))):
        e, s = targets[est], targets[se]
        signal = float(np.sqrt(max(np.mean(e**2) - np.mean(s**2), 0.0)))
        noise = float(np.sqrt(np.mean(s**2)))
        out[f"order{order}"] = {"signal_rms": signal, "error_rms": noise,
                                "snr_per_configuration": signal / noise if noise else None}
    return out
