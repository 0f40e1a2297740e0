"""Files replaced whole (basinvcs.atomic): the old file or the new one, never part of one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from basinvcs.atomic import TEMP_PREFIX, replacing


def test_the_new_file_takes_the_targets_place_whole(tmp_path):
    target = tmp_path / "config.json"
    target.write_bytes(b"old")
    for durable in (False, True):
        with replacing(target, durable=durable) as fh:
            fh.write(b"new ")
            assert target.read_bytes() in (b"old", b"new ")  # not yet replaced
        assert target.read_bytes() == b"new "
        target.write_bytes(b"old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_failed_write_changes_nothing_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.car"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"), replacing(target) as fh:
        fh.write(b"half")
        raise RuntimeError("midway")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.car"]
    # no folder: the OSError goes to the caller
    with pytest.raises(FileNotFoundError), replacing(tmp_path / "missing" / "x") as fh:
        fh.write(b"x")


def test_new_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    target = tmp_path / "f"
    with replacing(target) as fh:
        fh.write(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_leftovers_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"{TEMP_PREFIX}{dead.stdout.strip()}.f.abc.tmp"
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}.g.abc.tmp"
    other = tmp_path / ".basin-tmp.notapid"
    for path in (stale, live, other):
        path.write_bytes(b"")
    with replacing(tmp_path / "f") as fh:
        fh.write(b"x")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["f", live.name, other.name])
