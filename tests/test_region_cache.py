"""The on-disk region cache: decoded once, reused, atomic, cancellable, read through a memmap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import DAPI
from gigapath_desktop import Cancelled
from gigapath_desktop.slides import ArrayCache, Region, cached_region, open_slide
from gigapath_desktop.slides import cache as cache_module
from gigapath_desktop.slides.diskarray import DiskArray


def test_region_is_decoded_once_then_reused(_private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "DECODE_CHUNK", 512)  # several chunks even for a small region
    region = Region(100, 200, 2000, 1500, level=1)
    calls: list[tuple[int, int]] = []
    with open_slide(DAPI) as slide:
        first = cached_region(slide, region, progress=lambda d, t: calls.append((d, t)))
        direct = slide.read_region(region)
        assert isinstance(first, DiskArray) and not first.writable
        assert first.shape == direct.shape == (750, 1000, 3)
        assert np.array_equal(np.asarray(first), direct)
        assert calls[-1][0] == calls[-1][1] == 4 and len(calls) == 4
        files = list(_private_cache.rglob("*.npy"))
        assert len(files) == 1 and "partial" not in files[0].name
        inode = files[0].stat().st_ino
        calls.clear()
        again = cached_region(slide, region, progress=lambda d, t: calls.append((d, t)))
    assert calls == [] and files[0].stat().st_ino == inode, "reused, not rewritten"
    assert np.array_equal(np.asarray(again[100:200, 300:400]), direct[100:200, 300:400])


def test_cancel_leaves_no_cache_entry(_private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "DECODE_CHUNK", 256)
    with open_slide(DAPI) as slide, pytest.raises(Cancelled):
        cached_region(slide, Region(0, 0, 2048, 2048), cancel=lambda: True)
    assert list(_private_cache.rglob("*")) == [] or not list(_private_cache.rglob("*.npy"))


def test_not_enough_disk_space_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: usage(10, 10, 1 << 20))
    cache = ArrayCache(tmp_path / "c")
    with pytest.raises(Exception, match="not enough disk space"):
        cache.get_or_build("k", (4096, 4096, 3), np.uint8, lambda out: None)
    assert not list((tmp_path / "c").glob("*.npy"))


def test_fill_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = ArrayCache(tmp_path / "c")

    def boom(out: np.ndarray) -> None:
        out[:] = 1
        raise OSError(28, "No space left on device")

    with pytest.raises(Exception, match="disk full"):
        cache.get_or_build("k", (10, 10), np.uint8, boom)
    assert list((tmp_path / "c").iterdir()) == []


def test_disk_array_reads_and_writes_rectangles(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8)
    out = DiskArray.create(tmp_path / "a.npy", data.shape, np.uint8)
    out[:20] = data[:20]
    out[20:, :30] = data[20:, :30]
    out[20:, 30:] = data[20:, 30:]
    out.close()
    assert np.array_equal(np.load(tmp_path / "a.npy"), data), "a plain .npy that numpy reads"
    back = DiskArray(tmp_path / "a.npy")
    assert back.shape == data.shape and back.ndim == 3
    assert np.array_equal(back[5:31, 7:40], data[5:31, 7:40])
    assert np.array_equal(np.asarray(back), data)
    with pytest.raises(ValueError, match="read-only"):
        back[0:1, 0:1] = 0


def test_the_cache_keeps_to_its_size_limit_dropping_the_least_recently_used(tmp_path: Path) -> None:
    import os
    import time

    cache = ArrayCache(tmp_path, limit_bytes=int(2.5 * 2**20))
    fill = lambda out: None  # noqa: E731
    for key in ("a", "b"):
        cache.get_or_build(key, (1024, 1024), np.uint8, fill)
        time.sleep(0.05)
    cache.get_or_build("a", (1024, 1024), np.uint8, fill)  # a is used again: b is now the oldest
    dead = tmp_path / "c.partial-999999999-1.npy"  # left by a process that no longer runs
    dead.write_bytes(b"x")
    live = tmp_path / f"d.partial-{os.getpid()}-1.npy"  # being written right now
    live.write_bytes(b"x")
    cache.get_or_build("e", (1024, 1024), np.uint8, fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", live.name, "e.npy"]
