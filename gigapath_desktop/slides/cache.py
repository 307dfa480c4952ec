"""Decode a (gigapixel) region once into an on-disk array and reuse it, read back tile by tile.

Entries are plain `.npy` files accessed as `DiskArray` (rectangles by pread/pwrite, so RSS stays bounded by a tile),
written under a temporary name and renamed into place, so a crash or a full disk never leaves a half-written entry
that looks complete. The folder is a size-capped LRU (`GIGAPATH_CACHE_LIMIT_GB`, default 64): after each new entry
the least recently used ones go, and temporary files of processes that died are cleared.
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import numpy as np
import platformdirs
import psutil

from gigapath_desktop.errors import Cancelled, GigaPathError
from gigapath_desktop.parallel import bounded_map
from gigapath_desktop.slides.diskarray import DiskArray
from gigapath_desktop.slides.resample import Scale, read_at
from gigapath_desktop.slides.slide import Region, Slide, SlideSource

ProgressFn = Callable[[int, int], None]
"""Called as progress(done, total) while long work advances."""
CancelFn = Callable[[], bool]
"""Returns True when the caller wants the work stopped."""

DECODE_CHUNK = 2048
DEFAULT_LIMIT_GB = 64.0


def default_cache_dir() -> Path:
    """`$GIGAPATH_CACHE_DIR`, else the platform's user cache dir."""
    env = os.environ.get("GIGAPATH_CACHE_DIR")
    return Path(env) if env else platformdirs.user_cache_path("gigapath-desktop")


def cache_limit_bytes() -> int:
    """`$GIGAPATH_CACHE_LIMIT_GB` (the app's setting sets it), else 64 GiB."""
    try:
        gb = float(os.environ.get("GIGAPATH_CACHE_LIMIT_GB", DEFAULT_LIMIT_GB))
    except ValueError:
        gb = DEFAULT_LIMIT_GB
    return int(gb * 2**30) if 0 < gb < 1e9 else int(DEFAULT_LIMIT_GB * 2**30)  # NaN, inf, <= 0: the default


class ArrayCache:
    """A folder of memory-mappable arrays keyed by strings, each built once by a fill function."""

    def __init__(self, root: str | os.PathLike[str] | None = None, limit_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "arrays"
        self.limit_bytes = cache_limit_bytes() if limit_bytes is None else limit_bytes

    def path_for(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get_or_build(
        self, key: str, shape: tuple[int, ...], dtype: np.dtype | type, fill: Callable[[DiskArray], None]
    ) -> DiskArray:
        """The cached array for `key` (read-only), building it with `fill(out)` when missing."""
        path = self.path_for(key)
        cached = self._load(path, shape, np.dtype(dtype))
        if cached is not None:
            try:
                os.utime(path)  # recently used
            except OSError:
                pass  # pruned by another process meanwhile: the open array stays readable
            return cached
        self.root.mkdir(parents=True, exist_ok=True)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.prune(keep=nbytes)
        free = shutil.disk_usage(self.root).free
        if nbytes + (256 << 20) > free:
            raise GigaPathError(
                f"not enough disk space in {self.root} for a {nbytes / 2**30:.2f} GiB region cache "
                f"({free / 2**30:.2f} GiB free); free some space or set GIGAPATH_CACHE_DIR to a larger disk"
            )
        tmp = path.with_name(f"{key}.partial-{os.getpid()}-{threading.get_ident()}.npy")
        try:
            out = DiskArray.create(tmp, shape, dtype)
            try:
                fill(out)
                out.flush()
            finally:
                out.close()
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise GigaPathError(f"disk full while writing the region cache in {self.root}") from None
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return DiskArray(path)

    def prune(self, keep: int = 0) -> None:
        """Remove least recently used entries until they and `keep` more bytes fit the limit; remove temporary
        files of processes that no longer run. An entry still open elsewhere stays readable there (POSIX)."""
        entries = []
        for path in self.root.glob("*.npy"):
            pid = _writer_pid(path)
            if pid is not None:
                if not psutil.pid_exists(pid):
                    path.unlink(missing_ok=True)
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries) + keep
        for _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    @staticmethod
    def _load(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> DiskArray | None:
        try:
            arr = DiskArray(path)
            expected = path.stat().st_size == arr._offset + arr.size * arr.dtype.itemsize
        except (OSError, ValueError):
            return None
        if expected and arr.shape == tuple(shape) and arr.dtype == dtype:
            return arr
        arr.close()
        return None


def cached_region(
    slide: Slide,
    region: Region,
    cache: ArrayCache | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    scale: Scale | None = None,
) -> DiskArray:
    """The pixels of `region` as an (h, w, 3) uint8 read-only DiskArray, decoded from the slide only the first time:
    at the region's level, or at `scale` (another resolution, area-resampled)."""
    slide.check_region(region)
    cache = cache or ArrayCache()
    key = f"region-{slide.identity}-{region.x}-{region.y}-{region.width}-{region.height}-L{region.level}"
    if scale is None:
        source: Any = SlideSource(slide, region)
    else:
        source = read_at(slide, region, scale)
        key += f"-S{scale.level}x{scale.factor:.12g}"

    def fill(out: DiskArray) -> None:
        decode_into(source, out, progress, cancel)

    return cache.get_or_build(key, source.shape, np.uint8, fill)


def decode_into(
    source: Any,
    out: DiskArray,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> None:
    """Decode a rectangle-readable `source` chunk by chunk into `out` with a few reader threads, never holding more
    than a few chunks."""
    h, w = out.shape[:2]
    chunks = [(cy, cx) for cy in range(0, h, DECODE_CHUNK) for cx in range(0, w, DECODE_CHUNK)]

    def read(chunk: tuple[int, int]) -> np.ndarray:
        cy, cx = chunk
        return source[cy : cy + DECODE_CHUNK, cx : cx + DECODE_CHUNK]

    with closing(bounded_map(read, chunks)) as reads:  # no read outlives a stop or an error (the slide closes next)
        for done, ((cy, cx), tile) in enumerate(reads, start=1):
            if cancel is not None and cancel():
                raise Cancelled("region decoding was stopped")
            out[cy : cy + tile.shape[0], cx : cx + tile.shape[1]] = tile
            if progress is not None:
                progress(done, len(chunks))


def _writer_pid(path: Path) -> int | None:
    """The process id in a temporary entry's name (KEY.partial-PID-THREAD.npy), None for a finished entry."""
    if ".partial-" not in path.name:
        return None
    try:
        return int(path.name.split(".partial-")[1].split("-")[0])
    except ValueError:
        return None
