"""A stage's directory: "up to date" means the outputs still match what was written, damaged
outputs are removed and reported, --force always recomputes, changed inputs invalidate, and
manifests are strict JSON."""

from __future__ import annotations

import json
import logging

import pytest

from thermocg.errors import ConfigError, DataFormatError
from thermocg.stagedir import StageDir


def _finished(path, upstream=(), name="up", summary=None):
    s = StageDir(path, name, "h", f"[{name}]", upstream)
    s.prepare(force=False)
    for f in ("a.dat", "b.dat"):
        (path / f).write_bytes(f.encode() * 100)
    s.write_manifest(True, {}, {"x": ["a.dat", "b.dat"]}, summary or {}, {"kind": "test"})
    return s


def test_up_to_date_only_while_the_outputs_match(tmp_path, caplog):
    s = _finished(tmp_path / "up")
    assert s.prepare(force=False) is not None
    (tmp_path / "up" / "a.dat").write_bytes(b"a.dat" * 60)  # truncated
    (tmp_path / "up" / "b.dat").write_bytes(b"B.dat" * 100)  # same size, other content
    with caplog.at_level(logging.WARNING):
        assert s.prepare(force=False) is None
    assert "a.dat is damaged (300 bytes, 500 when it was written); regenerating it" in caplog.text
    assert "b.dat is damaged (its checksum differs" in caplog.text
    assert not (tmp_path / "up" / "a.dat").exists() and not (tmp_path / "up" / "b.dat").exists()


def test_a_reader_refuses_a_damaged_upstream_output(tmp_path):
    s = _finished(tmp_path / "up")
    s.require_finished()
    (tmp_path / "up" / "b.dat").write_bytes(b"b")
    with pytest.raises(DataFormatError, match=r"b.dat: damaged \(1 bytes, 500 when it was written\); run "
                                              r"`thermocg up` to regenerate it"):
        s.require_finished()


def test_force_always_recomputes_and_repairs_a_corrupt_manifest(tmp_path):
    s = _finished(tmp_path / "up")
    assert s.prepare(force=True) is None and not (tmp_path / "up" / "a.dat").exists()
    (tmp_path / "up" / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"unreadable stage manifest .*`thermocg up --force` to recompute"):
        s.prepare(force=False)
    assert s.prepare(force=True) is None  # the advice works


def test_another_config_is_refused_unless_the_stage_stopped_before_writing_anything(tmp_path):
    """A stage begun, then stopped by an error before it wrote a file (a missing PDB, a cutoff
    too long for the box), does not hold a fixed config back; a stage that wrote anything, a
    partial trajectory included, is kept for --force to remove."""
    from types import SimpleNamespace

    config = SimpleNamespace(model_dump_json=lambda exclude=None: "{}")
    first = StageDir(tmp_path / "s", "s", "old", "[s]")
    assert first.begin(False, config)[0] is None
    again = StageDir(tmp_path / "s", "s", "new", "[s]")
    assert again.prepare(force=False) is None  # nothing was written: the new config takes over
    again.write_manifest(False, {})
    (tmp_path / "s" / ".T300K.h5md.part").write_bytes(b"frames")
    with pytest.raises(ConfigError, match="made by a different \\[s\\] config"):
        StageDir(tmp_path / "s", "s", "newer", "[s]").prepare(force=False)
    assert (tmp_path / "s" / ".T300K.h5md.part").exists()


def test_changed_upstream_outputs_invalidate_the_stage(tmp_path, caplog):
    up = _finished(tmp_path / "up")
    down = _finished(tmp_path / "down", upstream=(up,), name="down")
    assert down.prepare(force=False) is not None
    _finished(tmp_path / "up")  # the same config, recomputed: same files here, but say the content moved
    (tmp_path / "up" / "a.dat").write_bytes(b"new" * 10)
    up.write_manifest(True, {}, {"x": ["a.dat", "b.dat"]}, {}, {"kind": "test"})
    with caplog.at_level(logging.WARNING):
        assert down.prepare(force=False) is None
    assert "down: made from other up outputs than there are now; recomputing it" in caplog.text
    assert not (tmp_path / "down" / "a.dat").exists()


def test_manifests_are_strict_json(tmp_path):
    _finished(tmp_path / "up", summary={"rate": float("nan"), "n": [1.0, float("inf")]})
    text = (tmp_path / "up" / "manifest.json").read_text()
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert m["summary"] == {"rate": None, "n": [1.0, None]}


def test_an_interrupted_stage_trusts_only_the_outputs_it_recorded_intact(tmp_path, caplog):
    s = StageDir(tmp_path / "st", "st", "h", "[st]")
    s.prepare(force=False)
    s.write_manifest(False, {})
    for f in ("a.dat", "b.dat"):
        (tmp_path / "st" / f).write_bytes(f.encode() * 100)
    s.add_outputs(["a.dat", "b.dat"])  # finished, then the run was interrupted
    (tmp_path / "st" / "c.dat").write_bytes(b"never recorded")
    (tmp_path / "st" / "b.dat").write_bytes(b"b" * 7)  # damaged after it was recorded
    again = StageDir(tmp_path / "st", "st", "h", "[st]")
    with caplog.at_level(logging.WARNING):
        assert again.prepare(force=False) is None
    assert "b.dat is damaged (7 bytes, 500 when it was written)" in caplog.text
    assert set(again.recorded) == {"a.dat"} and not (tmp_path / "st" / "b.dat").exists()
    again.write_manifest(False, {})  # the re-run's manifest keeps what is still trusted
    assert set(json.loads((tmp_path / "st" / "manifest.json").read_text())["files"]) == {"a.dat"}


@pytest.mark.parametrize("text", ["[]", '"x"'])
def test_a_manifest_that_is_not_an_object_is_one_line(tmp_path, text):
    s = _finished(tmp_path / "up")
    (tmp_path / "up" / "manifest.json").write_text(text)
    with pytest.raises(ConfigError, match=r"not a stage manifest .*run `thermocg up --force`"):
        s.prepare(force=False)
    with pytest.raises(ConfigError, match="not a stage manifest"):
        s.require_finished()


def test_wall_time_adds_up_over_an_interrupted_and_a_resumed_run(tmp_path, monkeypatch):
    """wall_s: seconds spent on the outputs, over every run that worked on them (a fake clock:
    10 s to the first output, interruption, 5 s more in the resumed run); --force starts at 0."""
    from thermocg import stagedir

    clock = {"t": 100.0}
    monkeypatch.setattr(stagedir.time, "monotonic", lambda: clock["t"])
    path = tmp_path / "s"
    s = StageDir(path, "s", "h", "[s]")
    s.prepare(force=False)
    s.write_manifest(False, {})
    clock["t"] += 10.0
    (path / "a.dat").write_bytes(b"a")
    s.add_outputs(["a.dat"])  # then the run is interrupted
    clock["t"] += 50.0  # time between the runs does not count
    resumed = StageDir(path, "s", "h", "[s]")
    assert resumed.prepare(force=False) is None
    clock["t"] += 5.0
    (path / "b.dat").write_bytes(b"b")
    m = resumed.write_manifest(True, {}, {"x": ["a.dat", "b.dat"]}, {}, {"kind": "test"})
    assert m["wall_s"] == pytest.approx(15.0)
    again = StageDir(path, "s", "h", "[s]")
    again.prepare(force=True)
    assert again.write_manifest(False, {})["wall_s"] == pytest.approx(0.0)


def test_an_edited_user_file_makes_the_stage_run_again_and_a_deleted_one_does_not(tmp_path, caplog):
    """The user's files (a PDB, force-field XML, imported frames) are inputs like upstream
    outputs: editing one in place recomputes the stage; one that has gone keeps the outputs
    (they are all that is left of it) with a warning; a manifest without their checksums (an
    older thermocg) cannot be trusted with them."""
    ff = tmp_path / "ff.xml"
    ff.write_text("<ForceField>a</ForceField>")
    make = lambda: StageDir(tmp_path / "ref", "reference", "h", "[reference]", files=(ff,))  # noqa: E731
    s = make()
    s.prepare(force=False)
    (tmp_path / "ref" / "a.dat").write_bytes(b"frames")
    s.write_manifest(True, {}, {"x": ["a.dat"]}, {}, {"kind": "test"})
    assert make().prepare(force=False) is not None
    ff.write_text("<ForceField>b</ForceField>")  # same size, edited in place
    with caplog.at_level(logging.WARNING):
        assert make().prepare(force=False) is None
    assert f"reference: made from {ff} as it was before it changed; recomputing it" in caplog.text
    assert not (tmp_path / "ref" / "a.dat").exists()

    s = make()
    s.prepare(force=False)
    (tmp_path / "ref" / "a.dat").write_bytes(b"frames")
    s.write_manifest(True, {}, {"x": ["a.dat"]}, {}, {"kind": "test"})
    ff.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert make().prepare(force=False) is not None
    assert f"{ff} no longer exists; keeping the outputs made from it" in caplog.text
    assert (tmp_path / "ref" / "a.dat").exists()

    ff.write_text("<ForceField>b</ForceField>")
    old = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    old["inputs"] = {}  # written before the stage recorded its files
    (tmp_path / "ref" / "manifest.json").write_text(json.dumps(old))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert make().prepare(force=False) is None
    assert f"made from files it has no checksum of ({ff}); recomputing it" in caplog.text
