"""Atomic writes and folder locks (lic_utils.files)."""
import os
import time

import pytest

from lic_utils import files
from lic_utils.errors import LicError


def test_temporaries_a_killed_write_left_behind_are_removed(tmp_path):
    stale = tmp_path / ".out.bin.abcd1234.tmp"  # a write killed two minutes ago
    live = tmp_path / ".out.bin.efgh5678.tmp"  # a write in progress
    other = tmp_path / ".out.bin.x.ijkl9012.tmp"  # a stale temporary of another file, out.bin.x
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    for p in (stale, other):
        os.utime(p, (time.time() - 120,) * 2)
    files.atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert (tmp_path / "out.bin").read_bytes() == b"data"
    assert {p.name for p in tmp_path.iterdir()} == {"out.bin", live.name, other.name}


def test_a_folder_lock_is_exclusive_and_released(tmp_path):
    run = tmp_path / "runs" / "r"
    with files.folder_lock(run, "training"):  # flock: a second open file is refused, even in-process
        with pytest.raises(LicError, match=f"{run} is in use: another process is training in it"):
            with files.folder_lock(run, "training"):
                pass
    with files.folder_lock(run, "training"):
        pass
    assert [p.name for p in run.iterdir()] == [".lock"]


def test_outputs_that_are_not_regular_files_are_written_into_not_replaced(tmp_path):
    """A FIFO (or /dev/null, /dev/stdout) stays what it is and gets the bytes; a symbolic link stays
    a link and the file it names is replaced atomically."""
    import stat
    import threading

    from lic_utils.files import atomic_write_bytes

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_bytes(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)

    target, link = tmp_path / "real.png", tmp_path / "link.png"
    target.write_bytes(b"old")
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
