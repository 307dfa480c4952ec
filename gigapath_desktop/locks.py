"""A folder in use (a training run) is locked, so two processes never write into the same one.

The lock is an advisory `flock` on FOLDER/.lock: the kernel drops it when its process ends however it ends (kill -9,
crash, power loss), so a lock left by a dead process is never mistaken for a live one. The file names the holder.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from gigapath_desktop.errors import GigaPathError

LOCK_NAME = ".lock"


class FolderInUse(GigaPathError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """`with FolderLock(folder):` holds FOLDER/.lock for the block; raises `FolderInUse` naming the holder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUse(f"{self.path.parent} is in use by {_describe(holder)}; wait for it to finish or "
                              f"choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock; the file stays (removing it would race a new holder)
            self._file = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held(folder: str | os.PathLike[str]) -> bool:
    """Whether a live process holds `folder`'s lock now (looked at without taking it or writing anything)."""
    try:
        handle = (Path(folder) / LOCK_NAME).open("r")
    except OSError:  # (no lock file: never locked)
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"
