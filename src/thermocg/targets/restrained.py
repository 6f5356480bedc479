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

from dataclasses import dataclass, fields
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


def conditional_moments(forces, local_energies, blocks: int = 10, offsets=None,
                        regress_on=None) -> ConditionalMoments:
    """Orders 0-2 at one configuration from K samples in time order.

    Parameters
    ----------
    forces : (K, N, 3) mapped forces f_I of each sample, kcal/mol/Å (without any restraint force)
    local_energies : (K, N) u_loc,I of each sample, kcal/mol (per-molecule energies summed over
        the beads within r_e of I, the neighbours taken at the restrained configuration)
    blocks : contiguous blocks for the jackknife errors (each should outlast the correlation
        time of f and u_loc); at least 2, at most K/3
    offsets : (K, N, 3) Å, optional: each bead's displacement from its restrained position in
        each sample. Given, the moments are taken at zero offset (:func:`_at_zero_offset`): the
        finite springs' bias removed to first order in the offsets.
    regress_on : (N, N) bool, optional (with ``offsets``): row I marks the beads whose offsets
        bead I's f and u_loc are regressed on; default: its own offset only
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
    edges = np.linspace(0, k, blocks + 1).astype(int)
    if offsets is not None:
        return _at_zero_offset(f, u, np.asarray(offsets, dtype=np.float64), regress_on, edges)
    if regress_on is not None:
        raise ValueError("regress_on needs offsets")
    # shift to the sample means: cumulants are shift invariant, and the power sums stay small
    f0 = f.mean(axis=0)
    f = f - f0
    u0 = u.mean(axis=0)
    u = u - u0

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
    return ConditionalMoments(F=F + f0, F1=F1, F2=F2, F_se=_jackknife_se(jf), F1_se=_jackknife_se(j1),
                              F2_se=_jackknife_se(j2), U=U + u0, v=v, samples=k, blocks=blocks)


def _jackknife_se(replicates: np.ndarray) -> np.ndarray:
    """The delete-one-block jackknife standard error from the B replicates on the leading axis."""
    b = len(replicates)
    return np.sqrt((b - 1) / b * np.sum((replicates - replicates.mean(axis=0)) ** 2, axis=0))


def _residual_moments(x, y, coef, leverage):
    """From the least-squares fit ``coef`` (q, 4) of y (K, 4: f's components and u) on x (K, q: a
    column of ones, then the scaled offsets): the intercept (4,), -cov(f, u) (3,) and k3(f, u, u)
    (3,) of the residuals, and var(u) of the residuals. Unbiased for independent rows: a residual
    r = M e (M = 1 - H, H the hat matrix, ``leverage`` its diagonal) has E[sum r_a r_b] = tr(M)
    cov(a, b) = (K - q) cov(a, b) and E[sum r_a r_b r_c] = sum_ij M_ij^3 k3(a, b, c) ~
    sum_i (1 - H_ii)^3 k3 (the off-diagonal terms are O(1/K) of it; with q = 1 this is the
    k-statistic to a relative 1/K^2)."""
    res = y - x @ coef
    dof = len(x) - x.shape[1]
    c3 = np.sum((1.0 - leverage) ** 3)
    rf, ru = res[:, :3], res[:, 3]
    return coef[0], -(rf * ru[:, None]).sum(axis=0) / dof, (rf * (ru**2)[:, None]).sum(axis=0) / c3, \
        float(ru @ ru / dof)


def _at_zero_offset(f, u, offsets, regress_on, edges) -> ConditionalMoments:
    """The moments at the restrained configuration itself, not averaged over the springs' play.

    With finite springs the beads wander by ``delta`` (~sqrt(kB T / k) per axis), and the
    samples are of the constrained ensemble at R + delta, not R. Exactly (the joint
    distribution of beads and hidden degrees of freedom is canonical with the springs added,
    so at given R + delta the hidden ones follow their constrained law), to first order in
    delta: ``E[f_I | delta] = F_I(R) + A_I delta`` and ``E[u_I | delta] = U_I(R) + C_I delta``, and
    the plain covariance over the samples picks up ``-Cov(F_I(R + delta), U_I(R + delta))``
    = ``-A_I Cov(delta) C_I^T``, of order (kB T / k) x the PMF's stiffness x the local energy's
    gradient: several times the F1 signal on the pairwise oracle even at k = 640 (bench/RESULTS.md).
    Regressing f_I and u_I on the offsets of the beads in ``regress_on[I]`` and taking the
    intercept (order 0) and the moments of the residuals (orders 1, 2: partial cumulants at
    fixed offsets) removes it for the offsets included. (Written here: a per-bead regression of
    correlated MD samples with block-jackknife errors is the method itself.)
    """
    k, n = f.shape[:2]
    if offsets.shape != f.shape:
        raise ValueError(f"offsets must be (K, N, 3) like the forces {f.shape}; found {offsets.shape}")
    if not np.all(np.isfinite(offsets)):
        raise ValueError("offsets are not finite")
    if regress_on is None:
        regress_on = np.eye(n, dtype=bool)
    regress_on = np.asarray(regress_on.toarray() if hasattr(regress_on, "toarray") else regress_on, dtype=bool)
    if regress_on.shape != (n, n):
        raise ValueError(f"regress_on must be ({n}, {n}); found {regress_on.shape}")
    q_max = 1 + 3 * int(regress_on.sum(axis=1).max())
    blocks = len(edges) - 1
    if k - np.diff(edges).max() - q_max < 10:
        raise ValueError(f"{k} samples cannot carry a regression on up to {q_max - 1} offsets with a block "
                         "left out: take more samples or regress on fewer beads")
    scale = float(np.sqrt(np.mean(offsets**2))) or 1.0  # offsets in units of their spread: G well conditioned
    out = {name: np.empty((n, 3)) for name in ("F", "F1", "F2", "F_se", "F1_se", "F2_se")}
    out_u, out_v = np.empty(n), np.empty(n)
    starts = edges[:-1]
    kept = [np.r_[0:edges[b], edges[b + 1]:k] for b in range(blocks)]
    for i in range(n):
        # uncentred offsets: the intercept is the prediction at zero offset, the restrained R itself
        x = np.concatenate([np.ones((k, 1)), offsets[:, regress_on[i]].reshape(k, -1) / scale], axis=1)
        y = np.concatenate([f[:, i], u[:, i:i + 1]], axis=1)
        # normal equations from per-block sums, so that leaving a block out costs a q x q solve
        g_b = np.add.reduceat(x[:, :, None] * x[:, None, :], starts, axis=0)  # (B, q, q)
        h_b = np.add.reduceat(x[:, :, None] * y[:, None, :], starts, axis=0)  # (B, q, 4)
        g, h = g_b.sum(axis=0), h_b.sum(axis=0)
        leverage = np.einsum("kq,qk->k", x, np.linalg.solve(g, x.T))
        full = _residual_moments(x, y, np.linalg.solve(g, h), leverage)
        reps = np.array([np.concatenate(_residual_moments(x[rows], y[rows], np.linalg.solve(g - g_b[b], h - h_b[b]),
                                                          leverage[rows] * k / len(rows))[:3])
                         for b, rows in enumerate(kept)])
        se = _jackknife_se(reps)
        out["F"][i], out["F1"][i], out["F2"][i] = full[0][:3], full[1], full[2]
        out["F_se"][i], out["F1_se"][i], out["F2_se"][i] = se[:3], se[4:7], se[7:]  # se[3]: the intercept of u
        out_u[i], out_v[i] = full[0][3], full[3]
    return ConditionalMoments(**out, U=out_u, v=out_v, samples=k, blocks=blocks)


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
    #: the offsets of the beads within this radius are regressed out (0: each bead's own; None: none)
    offset_radius_A: float | None
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


def sample_configuration(task: ConfigurationTask, *more_radii: ConfigurationTask) -> Path:
    """Sample one configuration, reduce it to its conditional moments (local radius r_e and
    global) and write them to ``task.out`` (temporary name, then renamed).

    ``more_radii``: tasks of the same configuration and sampling that differ only in ``r_e_A``
    (and ``out``, ``key``): the same samples are reduced and written for each of them too (one
    sampling serves several local radii; bench/convergence.py)."""
    from thermocg.reference.restrained import RestrainedSampler

    for other in more_radii:
        differ = [f.name for f in fields(task) if f.name not in ("r_e_A", "out", "key")
                  and not np.array_equal(getattr(task, f.name), getattr(other, f.name))]
        if differ:
            raise ValueError(f"restrained configuration {task.index}: the tasks to reduce together differ in "
                             f"{differ}, not only in r_e_A, out and key")
    where = f"restrained {task.temperature_K:g} K configuration {task.index}"
    handle = (task.temperature_K, task.restraint_k, task.timestep_fs, task.friction_per_ps, task.system_xml)
    if handle not in _SAMPLERS:
        _SAMPLERS.clear()
        _SAMPLERS[handle] = RestrainedSampler(task.system_xml, task.molecule_index, task.temperature_K,
                                              task.restraint_k, task.timestep_fs, task.friction_per_ps,
                                              task.device, task.threads)
    s = _SAMPLERS[handle].sample(task.positions_A, task.box_A, task.equilibration_ps * 1000.0, task.samples,
                                 task.interval_fs, task.seed, where)
    for t in (task, *more_radii):
        _write_moments(s, t)
    return task.out


def _write_moments(s, task: ConfigurationTask) -> None:
    """Reduce the samples ``s`` of one configuration with ``task``'s local radius and write them."""
    from thermocg.stagedir import atomic_path
    from thermocg.targets.local import neighbour_matrix

    u_loc = (neighbour_matrix(s.centres, s.box, task.r_e_A) @ s.molecule_energies.T).T
    raw = conditional_moments(s.forces, u_loc, task.blocks)
    if task.offset_radius_A is None:
        local = raw
    else:
        near = neighbour_matrix(s.centres, s.box, task.offset_radius_A) if task.offset_radius_A > 0 else None
        local = conditional_moments(s.forces, u_loc, task.blocks, offsets=s.offsets, regress_on=near)
    # the global moments: every bead's u is the total energy (its offsets regression would need all
    # beads' offsets, more regressors than samples; the global targets are a diagnostic here)
    total = np.repeat(s.molecule_energies.sum(axis=1, keepdims=True), s.forces.shape[1], axis=1)
    glob = conditional_moments(s.forces, total, task.blocks)
    with atomic_path(task.out, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, key=task.key, step=task.step, centres=s.centres, box=s.box, F=local.F, F_se=local.F_se,
                     F1=local.F1, F1_se=local.F1_se, F2=local.F2, F2_se=local.F2_se, U=local.U, v=local.v,
                     F_raw=raw.F, F1_raw=raw.F1, F2_raw=raw.F2, F1_global=glob.F1, F2_global=glob.F2,
                     U_global=glob.U[0], bead_energy=s.molecule_energies.mean(axis=0),
                     offset_rms=np.sqrt(np.mean(s.offsets**2)))


def load_configuration(path: Path, key: str) -> dict | None:
    """A sampled configuration's moments, or None when missing or made with other settings."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {name: z[name] for name in z.files}
    except (OSError, KeyError, ValueError):
        return None


def restrained_frames(cg, rows: list[dict]) -> dict:
    """The targets-file arrays (:class:`thermocg.io.targets_file.TargetFrames`) of one temperature:
    every frame of ``cg`` (:class:`thermocg.mapping.CGFrames`) with its mapped forces as the
    order-0 target, as for regression targets (fm, fm-each and em read the same data either
    way), and the thermal targets of the restrained configurations ``rows`` (the first
    ``len(rows)`` frames; none: order 0 only): t1 and t2 the conditional order-1 and order-2
    estimates at zero offset, with their standard errors, f0 the conditional mean force, and
    the exact sample means as baselines (c = <u_loc>, v = Var(u_loc)), which is what makes
    these targets free of the baselines' bias. Every thermal entry of a frame not sampled is NaN:
    training reads a NaN target as missing (:func:`thermocg.models.stage.training_data`)."""
    f, n = cg.positions.shape[:2]
    m = len(rows)
    if m > f:
        raise ValueError(f"{m} restrained configurations for {f} frames")

    def padded(name, shape=(n, 3)):
        out = np.full((f, *shape), np.nan)
        if m:
            out[:m] = np.stack([r[name] for r in rows])
        return out

    for i, r in enumerate(rows):
        if int(r["step"]) != int(cg.step[i]):
            raise ValueError(f"restrained configuration {i} is of MD step {int(r['step'])}, but frame {i} of step "
                             f"{int(cg.step[i])}")
        d = r["centres"] - cg.positions[i]
        d -= r["box"] * np.round(d / r["box"])
        if np.abs(d).max() > 1e-6:
            raise ValueError(f"restrained configuration {i}: its springs' centres are up to {np.abs(d).max():.3g} Å "
                             f"from frame {i}'s centres of mass")
    targets = {"t1": padded("F1"), "t2": padded("F2"), "t1_global": padded("F1_global"),
               "t2_global": padded("F2_global"), "f0": padded("F"), "u_loc": padded("U", (n,)),
               "c": padded("U", (n,)), "v": padded("v", (n,)), "u_baseline": padded("bead_energy", (n,)),
               "bead_energy": np.asarray(cg.bead_energy, dtype=np.float64), "u_global": padded("U_global", ()),
               "c_global": padded("U_global", ()), "t0_se": padded("F_se"), "t1_se": padded("F1_se"),
               "t2_se": padded("F2_se")}
    return {"targets": targets, "summary": restrained_summary(targets, rows, f)}


def restrained_summary(targets: dict, rows: list[dict], frames: int) -> dict:
    """Per order: the rms estimate over beads and configurations with its noise removed (the
    signal), the rms standard error, and their ratio (the per-configuration SNR); and how far
    the springs' bias moved each order (rms of the estimate at zero offset minus the plain one)."""
    out = {"frames": frames, "configurations": len(rows)}
    if not rows:
        return out
    m = len(rows)
    out["offset_rms_A"] = float(np.mean([r["offset_rms"] for r in rows]))
    for order, (est, se, raw) in enumerate((("f0", "t0_se", "F_raw"), ("t1", "t1_se", "F1_raw"),
                                            ("t2", "t2_se", "F2_raw"))):
        e, s = targets[est][:m], targets[se][:m]
        signal = float(np.sqrt(max(np.mean(e**2) - np.mean(s**2), 0.0)))
        noise = float(np.sqrt(np.mean(s**2)))
        out[f"order{order}"] = {"signal_rms": signal, "error_rms": noise,
                                "snr_per_configuration": signal / noise if noise else None,
                                "offset_correction_rms": float(np.sqrt(np.mean(
                                    (e - np.stack([r[raw] for r in rows])) ** 2)))}
    return out
