"""A LAMMPS data file cut short is named by its section and counts (issue 33), not by the
parser's StopIteration."""

from __future__ import annotations

from thermocg.reference.imported import _short_data_section

DATA = """LAMMPS data file (a water molecule and a bond), atom_style full

3 atoms
1 bonds
2 atom types
1 bond types

0 10 xlo xhi
0 10 ylo yhi
0 10 zlo zhi

Masses

1 15.9994  # O
2 1.008

Atoms # full

1 1 1 -0.8476 1.0 1.0 1.0
2 1 2 0.4238 2.0 1.0 1.0
3 1 2 0.4238 1.0 2.0 1.0

Bonds

1 1 1 2
"""


def test_a_short_section_is_named_with_its_counts(tmp_path):
    path = tmp_path / "w.data"
    path.write_text(DATA)
    assert _short_data_section(path) is None
    path.write_text(DATA.replace("3 1 2 0.4238 1.0 2.0 1.0\n", ""))
    assert _short_data_section(path) == "the Atoms section has 2 line(s), but the header says 3 atoms (a file cut short?)"
    path.write_text(DATA.split("Atoms # full")[0] + "Atoms # full\n\n1 1 1 -0.8476 1.0 1.0 1.0\n")  # cut mid-section
    assert "the Atoms section has 1 line(s), but the header says 3 atoms" in _short_data_section(path)
    path.write_text(DATA.replace("2 1.008\n", ""))
    assert _short_data_section(path).startswith("the Masses section has 1 line(s), but the header says 2 atom types")
