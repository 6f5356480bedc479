"""Cost of the HIP-NN-TS thermal force field: force evaluation and training step.

Beads on a jittered simple-cubic lattice at water's bead density (timing does
not depend on the physics), float32, the default [train] network
(HipnnQuad, 32 features, 10 sensitivities, 1 interaction layer, cutoff 6 Å).

    python bench/model_cost.py                      # 512 beads, CPU
    python bench/model_cost.py --device cuda
    python bench/model_cost.py --architectures      # the MD cost of each network choice
    python bench/model_cost.py --bead-types         # the MD cost of 1, 2, 3 bead types (mixtures)

``--architectures``: the cost side of the accuracy-cost curve. For each network choice of
bench/transfer.py (cutoff, sensitivities, features, interaction layers, tensor order) the
inference form's force call in MD conditions (float32, one system, skin 1 Å, positions moved
0.01 Å per call so the list is reused), for fm (one network) and trf2 (three), each choice
timed alternately with the default in the same run. The accuracy side is bench/transfer.py's.

``--bead-types``: the inference form's force call (MD conditions as above; trf2's three
networks) with 2 and 3 bead types (random types; one-hot input features) against one type, each
on the numba kernels (one pass over the pairs per type) and on torch ops, alternating in the
same run.

Prints a table; record it in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch

from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network
from thermocg.models.training import _predictions


def lattice(n, box, rng):
    m = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    return (grid + 0.5) * box / m + rng.normal(0, 0.2, (n, 3))


def median_time(fn, n, sync):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beads", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--architectures", action="store_true", help="time the inference form of each network choice")
    ap.add_argument("--bead-types", action="store_true", help="time the inference form with 1, 2, 3 bead types")
    args = ap.parse_args()
    if args.architectures:
        return architectures(args)
    if args.bead_types:
        return bead_types(args)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    box = (args.beads * 18.015 * 1.0e24 / 6.02214076e23 / 0.997) ** (1 / 3)
    torch.manual_seed(0)
    settings = NetworkSettings()
    model = ThermalForceField(build_network(settings), RepulsivePrior(2.4, 10.0), beta_of(300.0), 2,
                              settings).to(dev)
    x1 = lattice(args.beads, box, rng)
    xb = np.stack([lattice(args.beads, box, rng) for _ in range(args.batch)])
    sp, xt, cell = model._tensors(x1, np.full(3, box))
    spb, xtb, cellb = model._tensors(xb, np.full((args.batch, 3), box))
    sp, xt, cell, spb, xtb, cellb = (t.to(dev) for t in (sp, xt, cell, spb, xtb, cellb))
    model.energy_and_forces(sp, xt, cell, 350.0)  # warm-up (numba compile, caches)
    t_one = median_time(lambda: model.energy_and_forces(sp, xt, cell, 350.0), args.repeats, sync)
    model.energy_and_forces(spb, xtb, cellb, torch.full((args.batch,), 350.0, device=dev))
    t_batch = median_time(lambda: model.energy_and_forces(spb, xtb, cellb,
                                                          torch.full((args.batch,), 350.0, device=dev)),
                          args.repeats, sync)
    opt = torch.optim.Adam([p for p in model.parameters() if p.is_floating_point() and p.requires_grad], 1e-3)
    target = torch.zeros_like(xt)

    def train_step():
        opt.zero_grad()
        pred = _predictions(model, xt, cell, sp, [0, 1, 2])
        loss = sum(torch.mean((pred[k] - target) ** 2) for k in pred)
        loss.backward()
        opt.step()

    train_step()
    t_train = median_time(train_step, args.repeats, sync)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# HIP-NN-TS thermal force field ({settings}), float32, {args.beads} beads, box {box:.2f} Å")
    print(f"# device {dev}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print()
    print("| what | value |")
    print("|---|---|")
    print(f"| energy + forces, {args.beads} beads, order 2 | {t_one * 1e3:.1f} ms |")
    print(f"| energy + forces, {args.batch} x {args.beads} beads in one batch | {t_batch * 1e3:.1f} ms "
          f"({t_batch / args.batch * 1e3:.1f} ms per system) |")
    print(f"| training step (3 heads, double backward), one frame of {args.beads} beads | {t_train * 1e3:.1f} ms |")
    print(f"| peak resident memory of this process | {peak_mb:.0f} MB |")


#: bench/transfer.py's network choices: name -> NetworkSettings overrides
ARCHITECTURES = {
    "default (quad, cutoff 6, 10 sens., 32 feat., 1 layer)": {},
    "cutoff 5 Å": {"cutoff_A": 5.0, "dist_soft_max_A": 4.5},
    "cutoff 7 Å": {"cutoff_A": 7.0, "dist_soft_max_A": 6.5},
    "6 sensitivities": {"n_sensitivities": 6},
    "20 sensitivities": {"n_sensitivities": 20},
    "16 features": {"n_features": 16},
    "64 features": {"n_features": 64},
    "2 interaction layers": {"n_interaction_layers": 2},
    "vec (l = 1)": {"interaction": "vec"},
    "scalar (l = 0)": {"interaction": "scalar"},
}


def _md_timer(args):
    """(form(overrides, order), per_call(form, types=None)): an inference form of the default
    network with ``overrides`` and its mean ms per force call in MD conditions."""
    from dataclasses import replace

    from thermocg.models.fast import FastForceField

    rng = np.random.default_rng(0)
    box = (args.beads * 18.015 * 1.0e24 / 6.02214076e23 / 0.997) ** (1 / 3)
    x0 = torch.as_tensor(lattice(args.beads, box, rng)[None], dtype=torch.float32)
    edges = torch.full((1, 3), box, dtype=torch.float32)

    def form(overrides, order):
        torch.manual_seed(0)
        settings = replace(NetworkSettings(), shared=order == 0, **overrides)
        model = ThermalForceField(build_network(settings, 3), RepulsivePrior(2.4, 10.0), beta_of(300.0), order,
                                  settings)
        return FastForceField.from_model(model, skin_A=1.0)

    def per_call(ff, types=None):
        g = torch.Generator().manual_seed(1)
        x = x0.clone()
        ff.energy_and_forces(x, edges, 350.0, types)
        start = time.perf_counter()
        for _ in range(args.repeats):
            x = x + 0.01 * torch.randn(x.shape, generator=g)
            ff.energy_and_forces(x, edges, 350.0, types)
        return 1e3 * (time.perf_counter() - start) / args.repeats

    return form, per_call


def bead_types(args) -> None:
    form, per_call = _md_timer(args)
    rng = np.random.default_rng(2)
    rows = []
    for kernels in ("auto", "torch"):
        one = form({}, 2)
        one.kernels = kernels
        for n_types in (2, 3):
            many = form({"n_types": n_types}, 2)
            many.kernels = kernels
            types = torch.as_tensor(rng.integers(0, n_types, args.beads))
            t_one, t_many = [], []
            for _ in range(3):  # alternate, keep the best
                t_one.append(per_call(one))
                t_many.append(per_call(many, types))
            rows.append(("numba kernels" if kernels == "auto" else "torch ops", n_types, min(t_one), min(t_many)))
    print(f"# inference form per force call, trf2 (three networks): {args.beads} beads, float32, skin 1 Å, one "
          f"system, {args.repeats} calls x best of 3, alternating with one bead type")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print()
    print("| path | bead types | one type ms per call | these types ms per call | ratio |")
    print("|---|---|---|---|---|")
    for path, n_types, t1, tn in rows:
        print(f"| {path} | {n_types} | {t1:.2f} | {tn:.2f} | {tn / t1:.2f} |")


def architectures(args) -> None:
    form, per_call = _md_timer(args)

    rows = []
    for name, overrides in ARCHITECTURES.items():
        cells = []
        for order in (0, 2):  # fm: one network (the shared graph, W0 only); trf2: three networks
            default, choice = form({}, order), form(overrides, order)
            t_default, t_choice = [], []
            for _ in range(3):  # alternate, keep the best
                t_default.append(per_call(default))
                t_choice.append(per_call(choice))
            cells += [min(t_choice), min(t_choice) / min(t_default)]
        rows.append((name, *cells))
        print(f"  {name} done", flush=True)
    print(f"# inference form per force call: {args.beads} beads, float32, skin 1 Å, one system, "
          f"{args.repeats} calls x best of 3, alternating with the default")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print()
    print("| network | fm ms per call | fm / default | trf2 ms per call | trf2 / default |")
    print("|---|---|---|---|---|")
    for name, fm_ms, fm_ratio, trf_ms, trf_ratio in rows:
        print(f"| {name} | {fm_ms:.2f} | {fm_ratio:.2f} | {trf_ms:.2f} | {trf_ratio:.2f} |")


if __name__ == "__main__":
    main()
