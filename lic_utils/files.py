"""Where the study keeps things, atomic writes so that an interruption never leaves half a file,
and the guards around writing: one-line errors, outputs that would destroy an input, folder locks."""
from __future__ import annotations

import errno
import glob
import io
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from lic_utils.errors import LicError

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data"
RESULTS_DIR = REPO / "results"
FIGURES_DIR = REPO / "figures"
RUNS_DIR = REPO / "runs"
NOTEBOOKS_DIR = REPO / "notebooks"


def repo_relative(text: str, repo: Path | None = None) -> str:
    """`text` with the checkout's absolute path made repository-relative ("/…/checkout/runs/x" →
    "runs/x"), for what is committed or published (executed notebooks, the site)."""
    root = str(repo or REPO).rstrip("/")
    return text.replace(root + "/", "").replace(root, ".")


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it is renamed over `path` in one step.

    The temporary file is `.NAME.XXXXXXXX.tmp`; ones older than a minute are what a killed write
    left behind, and are removed. A failed write (permissions, a full disk, a parent that is a file)
    is a LicError naming `path` and the fix. A symbolic link is followed (the file it names is
    replaced, the link stays); an existing output that is not a regular file (a device such as
    /dev/null or /dev/stdout, a FIFO, a socket) is never renamed over: the finished bytes are
    written into it.
    """
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # (through links: /dev/stdout)
        yield from _written_into(path)
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def _written_into(path: Path):
    """atomic_path for a device, FIFO or socket: a private temporary file, then its bytes written
    into `path` (no rename: that would put a regular file where the device was)."""
    fd, tmp = tempfile.mkstemp(prefix="lic-", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as src, open(path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except BrokenPipeError:  # the reader left (`| head`): the caller ends quietly, as other tools do
        raise
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _remove_stale_temporaries(path: Path) -> None:
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.????????.tmp"):  # mkstemp: 8 characters
        try:
            if tmp.stat().st_mtime < time.time() - 60:
                tmp.unlink()
        except FileNotFoundError:  # removed meanwhile by another writer
            pass


_WRITE_ERRORS = {
    errno.EACCES: "permission denied: choose a folder you may write to",
    errno.EPERM: "operation not permitted: choose a folder you may write to",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOSPC: "no space left on the device: free some space",
    errno.EDQUOT: "disk quota exceeded: free some space",
    errno.EFBIG: "the file exceeds the file-size limit (ulimit -f): raise it or write elsewhere",
    errno.ENOTDIR: "a parent of it is a file, not a folder: choose another path",
    errno.EEXIST: "a parent of it is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder: name a file",
}


def write_error(path: str | os.PathLike, e: OSError) -> LicError:
    """A failed write as one line: the path, why, and the fix."""
    why = _WRITE_ERRORS.get(e.errno) or f"{e.strerror or e}: check the path and retry"
    return LicError(f"cannot write {path}: {why}")


def check_output(output: str | os.PathLike, source: str | os.PathLike, magic: bytes | tuple = b"",
                 kind: str = "") -> None:
    """Refuse to write `output` when that would destroy `source` (the same file, also through
    links) or an existing file that does not start with `magic` (or one of a tuple of them: not a
    `kind` file, so no earlier output)."""
    out = Path(output)
    if out.exists() and Path(source).exists() and os.path.samefile(out, source):
        raise LicError(f"refusing to write {output} over the input {source}: choose another output")
    if out.is_dir():
        raise LicError(f"cannot write {output}: it is a folder: name a file")
    if magic and out.is_file() and out.stat().st_size:  # (an empty file holds nothing to lose: `> out.png`)
        with open(out, "rb") as f:
            if not f.read(64).startswith(magic):
                raise LicError(f"{output} exists and is not a {kind} file: choose another output "
                               "(or delete that file first)")


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str):
    """Hold an exclusive lock on `folder` (flock on folder/.lock) or refuse at once: one process at a
    time works in it. The OS releases the lock when the process ends, even by kill -9."""
    import fcntl

    lock = Path(folder) / ".lock"
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a")  # never written: the lock is the flock, not the file
    except OSError as e:
        raise write_error(lock, e) from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LicError(f"{folder} is in use: another process is {what} in it (it holds {lock}); "
                           "wait for it to finish, or choose another folder") from None
        yield


@contextmanager
def file_lock(path: str | os.PathLike):
    """Hold an exclusive lock for writing `path` (flock on .NAME.lock beside it), waiting for another
    process that holds it: read-modify-write of a shared file without losing the other's rows."""
    import fcntl

    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a")
    except OSError as e:
        raise write_error(lock, e) from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save through a temporary file, so a checkpoint is either the old one or the new one."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_to_csv(df, path: str | os.PathLike) -> Path:
    """pandas DataFrame → CSV, atomically."""
    return atomic_write_text(path, df.to_csv(index=False))
