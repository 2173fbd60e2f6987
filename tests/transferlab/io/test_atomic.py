"""Atomic writes: a reader never sees half a file, a failed write leaves nothing, and files honour the umask."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO
from transferlab.io.atomic import _umask, atomic_dir, atomic_path, write_json, write_text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    """A store shared by several users or worker uids must be readable by them (mkstemp alone gives 0600)."""
    before = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x\n")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"\0")
    finally:
        os.umask(before)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "m.json"
    write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert dest.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "results"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "a.json").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "b.json").write_text("half")
        raise RuntimeError("killed")
    assert [p.relative_to(dest).as_posix() for p in dest.rglob("*")] == ["old", "old/a.json"]
    with atomic_dir(dest) as tmp:
        (tmp / "b.json").write_text("2")
        assert (dest / "old" / "a.json").is_file()  # readers see the old folder until the swap
    assert [p.name for p in dest.iterdir()] == ["b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temp or old folder left
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~_umask()
    with atomic_dir(tmp_path / "new") as tmp:  # a folder that did not exist
        (tmp / "c").write_text("3")
    assert (tmp_path / "new" / "c").read_text() == "3"


KILLED = """
import os, signal, sys
from transferlab.io import atomic
dest, when = sys.argv[1], sys.argv[2]
real_replace, calls = os.replace, []
def replace(a, b):  # the second rename is the new folder's: die just before it
    calls.append(a)
    if when == "between" and len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(a, b)
atomic.os.replace = replace
with atomic.atomic_dir(dest) as tmp:
    (tmp / "new.json").write_text("2")
    if when == "inside":
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("when", ["inside", "between"])
def test_a_folder_write_killed_loses_nothing_and_the_next_one_clears_up(tmp_path, when):
    dest = tmp_path / "results" / "metrics"
    dest.mkdir(parents=True)
    (dest / "old.json").write_text("1")
    proc = subprocess.run([sys.executable, "-c", KILLED, str(dest), when], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in dest.parent.iterdir())
    assert any(n.startswith(".metrics.") for n in left), left  # the kill left its temp (or old) folder
    with atomic_dir(dest) as tmp:
        # the old folder is back where the kill came between the renames: readers see it until the swap
        assert (dest / "old.json").read_text() == "1"
        (tmp / "b.json").write_text("3")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["metrics"]  # nothing hidden lingers
    assert [p.name for p in dest.iterdir()] == ["b.json"]
