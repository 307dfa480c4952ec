"""Every file the package writes goes through here: checked up front, written under a temporary name, renamed last.

So a crash, a kill, a full disk or a bad argument never leaves a half-written file under the user's name, never
replaces an input with an output, and always ends in one `GigaPathError` naming the file.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import psutil

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.signals import routed_signals

PathLike = str | os.PathLike[str]
# OSErrors a write can end in that are the user's situation rather than a bug: said in one line.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOENT,
                errno.ENOTDIR, errno.EFBIG, errno.ENAMETOOLONG}


def check_output(path: PathLike, inputs: Iterable[PathLike | None] = ()) -> Path:
    """`path` as a Path if it can be written and is none of `inputs`; a one-line `GigaPathError` otherwise."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise GigaPathError(f"{path}: is a folder, not a file name")
    if path.is_symlink() or (path.exists() and not path.is_file()):  # a rename would replace the link or device
        raise GigaPathError(f"{path}: is a link or a device, not a plain file; name a file (a link's target) instead")
    if not folder.is_dir():
        raise GigaPathError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise GigaPathError(f"{path}: folder {folder} is not writable")
    for other in inputs:
        if other is not None and _same_file(path, Path(other)):
            raise GigaPathError(f"{path}: is an input of this command; choose another output name")
    return path


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (same extension) to write; rename it to `path` when the block succeeds.

    On any failure the temporary file (or folder) is removed and `path` is left as it was; a write error of the
    kind a user can fix (disk full, read-only, missing folder) becomes one `GigaPathError`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        pause_point(f"rename {path.name}")
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, tmp, exc) from None
    finally:
        remove(tmp)


def pause_point(name: str) -> None:
    """A test hook at a moment worth killing a process in: with GIGAPATH_PAUSE_AT=name (or name#k for its k-th
    passage) in the environment, the process says `paused at NAME` on stderr and waits here for a signal: kill -9
    ends it here; after SIGINT / SIGTERM (main thread only) the handler the process had runs and it goes on."""
    wanted = os.environ.get("GIGAPATH_PAUSE_AT")
    if not wanted or wanted.split("#")[0] != name:
        return
    _passages[name] = _passages.get(name, 0) + 1
    if "#" not in wanted or int(wanted.split("#")[1]) == _passages[name]:
        _wait_for_a_signal(lambda: print(f"paused at {name}", file=sys.stderr, flush=True))


_passages: dict[str, int] = {}


def _wait_for_a_signal(say: Callable[[], None]) -> None:
    """`say()`, then sleep until SIGINT / SIGTERM comes and hand it to the handler in place. The wrappers go in
    before `say()`, so a signal sent as soon as it is said is never missed."""
    if threading.current_thread() is not threading.main_thread():  # (no signals there: only kill -9 ends the wait)
        say()
        while True:
            time.sleep(1)
    came: list[int] = []
    with routed_signals(lambda signum, frame: came.append(signum), keep_ignored=False) as previous:
        say()
        while not came:
            time.sleep(0.05)
    handler = previous[came[0]]
    if callable(handler):
        handler(came[0], None)


def keep_aside(path: PathLike) -> Path:
    """Rename an unreadable user file to NAME.unreadable-DATE.EXT beside it (never overwritten, never deleted), so
    the app can start afresh without losing what was there; returns the new name."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        aside = path.with_name(f"{path.stem}.unreadable-{stamp}{f'-{n}' if n else ''}{path.suffix}")
        if not aside.exists():
            os.replace(path, aside)
            return aside
    raise GigaPathError(f"{path}: cannot keep the unreadable file aside")


def write_error(path: Path, tmp: Path, exc: OSError) -> Exception:
    """A one-line error for a failed write the user can act on; other OSErrors stay what they are. It names the
    file when the error is about it, else its folder (a full disk fails whichever output is being written)."""
    if exc.errno not in WRITE_ERRNOS:
        return exc
    about = exc.filename is not None and Path(exc.filename).name in (path.name, tmp.name)
    target = path if about else f"to {exc.filename or path.parent}"
    return GigaPathError(f"cannot write {target}: {exc.strerror or exc}")


SCRATCH = ("mask-levels", "channel-levels", "prob", "clean")  # an export's working folders


def scratch_prefix(kind: str) -> str:
    """The name prefix of an export's working folder (`kind` of SCRATCH): hidden, and naming this process, so a
    later run can tell what a killed one left from what a live one is using."""
    return f".{kind}-{os.getpid()}-"


def remove_orphans(folder: Path) -> None:
    """Remove what killed writers left in `folder`: the temporary outputs and working folders of processes that are
    gone (a batch re-run under its folder's lock, and every prediction, call this)."""
    candidates = [(tmp, tmp.stem.rpartition(".partial-")[2]) for tmp in folder.glob(".*.partial-*")]
    for kind in SCRATCH:
        candidates += [(scratch, scratch.name.split("-")[-2]) for scratch in folder.glob(f".{kind}-*-*")]
    for path, pid in candidates:
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            remove(path)


def remove(path: Path) -> None:
    """Remove a file or folder if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
