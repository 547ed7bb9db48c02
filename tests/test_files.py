"""files.py: what a killed writer leaves is swept, and a folder being replaced
is never lost, whichever step the writer died at."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rexnet_plugin import files


@pytest.fixture(scope="module")
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_writer_killed_mid_swap_gets_its_old_folder_back(tmp_path, dead_pid):
    old = tmp_path / f".out.rexnet-old-{dead_pid}-0123abcd"  # `out` renamed away ...
    new = tmp_path / f".out.rexnet-tmp-{dead_pid}-89abcdef"  # ... the new one not yet in
    old.mkdir()
    (old / "inference.yml").write_text("old")
    new.mkdir()
    assert files.sweep_stale(tmp_path) == [new]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "inference.yml").read_text() == "old"


def test_a_live_writers_temps_stay_and_a_dead_ones_go(tmp_path, dead_pid):
    live = files.temp_path(tmp_path / "weights.pdparams", ".pdparams")
    live.write_bytes(b"")
    dead = tmp_path / f".weights.pdparams.rexnet-tmp-{dead_pid}-0123abcd.pdparams"
    dead.write_bytes(b"")
    assert files.sweep_stale(tmp_path) == [dead]
    assert live.exists()


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path):
    files.write_text(tmp_path / "out" / "a.txt", "kept")
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "b.txt").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.txt"]
