"""Writing files without losing any: atomic writes, atomic folder swaps, locks, and the rule that
hdc never overwrites a file it did not write.

- `atomic_open` / `write_atomic`: a temporary file in the same folder, then a rename. A crash
  mid-write leaves the old file (or none), never half a file.
- `swap_in`: a finished folder takes the place of another in one step (a bundle over the bundle
  it replaces), so a kill leaves the old folder or the new one.
- `Lock`: an exclusive lock on a file (flock), so two hdc processes never write the same output.
  The kernel drops it when the process dies, so a killed run leaves no stale lock.
- `check_overwrite`: refuses to replace an existing file that does not look like hdc's own.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import HdcError, UsageError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_parent(path: str | Path, flag: str) -> Path:
    """Create the folder that will hold `path` (an output named by `flag`), so a long run does not
    end in a missing-folder error; a path that cannot hold a file fails now, naming the flag."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot create its folder {path.parent} ({e.strerror})") from None
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; name a file")
    return path


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> None:
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def sha256(path: str | Path) -> str:
    """The file's sha256, read in pieces of 1 MB."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_overwrite(path: str | Path, ours: Callable[[bytes], bool], flag: str) -> None:
    """Refuse to replace `path` when it exists and its first bytes do not satisfy `ours` (a file
    hdc wrote): hdc never overwrites a user's file."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise UsageError(f"{flag} {path}: exists and cannot be read ({e.strerror}); choose another path") from None
    if path.stat().st_size and not ours(head):
        raise UsageError(f"{flag} {path}: exists and was not written by hdc; remove it yourself or choose another path")


# ---------------------------------------------------------------------------------------------
# Folders

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux's renameat2(RENAME_EXCHANGE); False where the
    system or the file system does not offer it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(error, os.strerror(error), str(b))


def swap_in(new: Path, target: Path) -> None:
    """Put the folder `new` where `target` is, and remove what was there. Where the system can
    exchange the two in one step, a kill at any point leaves the old folder or the new one."""
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        shutil.rmtree(new)  # now the old folder
    else:  # a rename each way: a kill between the two leaves the old folder beside, as .NAME.old
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(new, target)
        shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------
# Locks


class Lock:
    """An exclusive, non-blocking lock on `path` (created if missing, never truncated). The file
    descriptor stays open for the lock's life; `fd` may be used to read and write the file."""

    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise HdcError(
                    f"{what} is being written by another hdc process (locked: {self.path}); "
                    "wait for it to finish, or write elsewhere"
                ) from None
            # The file may have been renamed away (a finished output) between open and lock:
            # then this lock guards nothing, so take it again on the file now at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
