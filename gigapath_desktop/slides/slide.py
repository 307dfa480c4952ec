"""One small interface over every slide format OpenSlide reads, plus plain PNG/JPEG/TIFF images.

Every failure of the underlying readers is turned into `SlideError` here, in one place, with the file named.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, TypeVar

import numpy as np
import openslide
import tifffile
from PIL import Image, UnidentifiedImageError

from gigapath_desktop.errors import GigaPathError, SlideError
from gigapath_desktop.mpp import MPP_TEXT, is_mpp

PLAIN_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
# what OpenSlide reads, by extension: a folder's other files (notes, GeoJSON, CSV) are not slides
SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
                            ".dcm", ".czi"})
_T = TypeVar("_T")

# a damaged TIFF header makes PIL warn before the file is refused in one error line (two stray lines before it)
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


@dataclass(frozen=True)
class Region:
    """A rectangle of a slide: origin and size in level-0 pixels, read at `level`."""

    x: int
    y: int
    width: int
    height: int
    level: int = 0

    @classmethod
    def parse(cls, text: str, level: int = 0) -> "Region":
        """Parse 'X,Y,W,H' (level-0 pixels), as typed on the command line."""
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError:
            raise SlideError(f"region {text!r} is not X,Y,W,H (four integers, level-0 pixels)") from None
        return cls(x, y, w, h, level)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.width, self.height)

    @classmethod
    def around(cls, bounds: tuple[float, float, float, float], dimensions: tuple[int, int]) -> "Region | None":
        """The level-0 pixel rectangle holding `bounds` (x0, y0, x1, y1), clipped to a slide of `dimensions`;
        None when nothing of it lies on the slide."""
        x0, y0, x1, y1 = bounds
        x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        x1, y1 = min(dimensions[0], math.ceil(x1)), min(dimensions[1], math.ceil(y1))
        return cls(x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


class Slide:
    """An open slide. Safe to read from several threads; use as a context manager or call `close()`."""

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        self.path = Path(path)
        self.given_mpp = mpp  # the user's word for the slide's µm/px, over what the file records (or lacks)
        self._lock: threading.Lock | None = None  # only PIL-backed images need one
        if self.path.is_dir():
            raise SlideError(f"{self.path}: is a folder, not a slide file")
        if not self.path.is_file():
            raise SlideError(f"{self.path}: no such file")
        vendor = _call(self.path, lambda: openslide.OpenSlide.detect_format(str(self.path)))
        if vendor is not None:
            self._osr: openslide.AbstractSlide = _call(self.path, lambda: openslide.OpenSlide(str(self.path)))
            self.vendor = vendor
        elif self.path.suffix.lower() in PLAIN_IMAGE_SUFFIXES:
            _check_not_a_damaged_pyramid(self.path)
            self._osr = _call(self.path, lambda: openslide.ImageSlide(str(self.path)))
            self._lock = threading.Lock()
            self.vendor = "image"
        else:
            raise SlideError(
                f"{self.path}: not recognised as a slide (unsupported format, or the file is corrupt or truncated); "
                "readable: OpenSlide formats (SVS, NDPI, MRXS, DICOM, tiled TIFF ...), PNG, JPEG, TIFF"
            )
        self._check_readable()

    # --- geometry -------------------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self._osr.dimensions

    @property
    def level_count(self) -> int:
        return self._osr.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._osr.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._osr.level_downsamples

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._osr.properties)

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Microns per level-0 pixel (x, y): the one given when opening, else the file's; None when the file does not
        record it (or records nonsense: a value outside MPP_RANGE)."""
        if self._mpp is not None:
            return (self._mpp, self._mpp)
        return self.recorded_mpp

    @property
    def recorded_mpp(self) -> tuple[float, float] | None:
        """Microns per level-0 pixel (x, y) as the file records them (None: not, or nonsense)."""
        props = self._osr.properties
        try:
            mpp = (float(props[openslide.PROPERTY_NAME_MPP_X]), float(props[openslide.PROPERTY_NAME_MPP_Y]))
        except (KeyError, ValueError):
            return None
        return mpp if all(map(is_mpp, mpp)) else None

    @property
    def given_mpp(self) -> float | None:
        """The µm/px the user gave the slide (None: the file's own, if any); a project slide takes its project's."""
        return self._mpp

    @given_mpp.setter
    def given_mpp(self, mpp: float | None) -> None:
        if mpp is not None and not is_mpp(mpp):
            raise GigaPathError(f"a slide's µm/px must be {MPP_TEXT}, got {mpp}")
        self._mpp = mpp

    def reopen(self) -> "Slide":
        """Another handle on the same file and µm/px (for a background task, while this one may be closed)."""
        return Slide(self.path, self._mpp)

    @property
    def associated_image_names(self) -> list[str]:
        return sorted(self._osr.associated_images.keys())

    @property
    def identity(self) -> str:
        """A short key that changes when the file changes; used to key caches."""
        stat = self.path.stat()
        quickhash = self._osr.properties.get("openslide.quickhash-1", "")
        text = f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{quickhash}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short key of the file's content alone (not its path or time stamps): what a user's annotations are
        kept under, so they survive a `touch`, a re-sync or a move. OpenSlide's quick hash, the size, the levels'
        sizes and the first and last 64 KiB of the file."""
        digest = hashlib.sha256(self._osr.properties.get("openslide.quickhash-1", "").encode())
        digest.update(repr((self.path.stat().st_size, self.level_dimensions)).encode())
        with self.path.open("rb") as f:
            digest.update(f.read(65536))
            f.seek(max(0, self.path.stat().st_size - 65536))
            digest.update(f.read(65536))
        return digest.hexdigest()[:24]

    def best_level_for_downsample(self, downsample: float) -> int:
        return self._osr.get_best_level_for_downsample(downsample)

    def level_rect(self, region: Region) -> tuple[int, int, int, int]:
        """(column, row, width, height) of `region` in pixels of its level, inside that level.

        The one place a region meets a level's grid (reader, region cache, prediction canvas): level sizes are rounded
        down from level 0 (a 1003-px side is 501 px at downsample 2), so the far edge is clipped, never past it."""
        ds = self.level_downsamples[region.level]
        lw, lh = self.level_dimensions[region.level]
        col, row = min(int(region.x / ds), lw - 1), min(int(region.y / ds), lh - 1)
        width = min(lw - col, max(1, round(region.width / ds)))
        height = min(lh - row, max(1, round(region.height / ds)))
        return col, row, width, height

    def level_size(self, region: Region) -> tuple[int, int]:
        """(width, height) in pixels of `region` read at its level."""
        return self.level_rect(region)[2:]

    # --- pixels ---------------------------------------------------------------------------------------------
    def read_region(self, region: Region) -> np.ndarray:
        """Pixels of `region` as an (h, w, 3) uint8 RGB array; transparent pixels are composited onto white."""
        self.check_region(region)
        w, h = self.level_size(region)
        return self.read_pixels((region.x, region.y), region.level, (w, h))

    def read_pixels(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide-style read: `location` in level-0 pixels, `size` in pixels of `level`; no bounds check."""
        image = self._read(lambda: self._osr.read_region(location, level, size))
        return _rgba_to_rgb(np.asarray(image))

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """A whole-slide RGB thumbnail whose longer side is at most `max_size` pixels."""
        image = self._read(lambda: self._osr.get_thumbnail((max_size, max_size)))
        return _rgba_to_rgb(np.asarray(image.convert("RGBA")))

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (label, macro, thumbnail ...) as RGB."""
        if name not in self._osr.associated_images:
            raise SlideError(f"{self.path}: no associated image {name!r} (has {self.associated_image_names})")
        image = self._read(lambda: self._osr.associated_images[name])
        return _rgba_to_rgb(np.asarray(image.convert("RGBA")))

    def check_region(self, region: Region) -> None:
        """Raise `SlideError` unless `region` lies inside the slide at a valid level."""
        if not 0 <= region.level < self.level_count:
            raise SlideError(f"{self.path}: level {region.level} does not exist (slide has {self.level_count})")
        w0, h0 = self.dimensions
        if region.width <= 0 or region.height <= 0:
            raise SlideError(f"{self.path}: region {region.as_tuple()} is empty")
        if region.x < 0 or region.y < 0 or region.x + region.width > w0 or region.y + region.height > h0:
            raise SlideError(
                f"{self.path}: region {region.as_tuple()} (x, y, w, h) lies outside the slide ({w0} x {h0} at level 0)"
            )

    # --- lifetime -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, vendor={self.vendor!r}, dimensions={self.dimensions})"

    def _read(self, fn: Callable[[], _T]) -> _T:
        if self._lock is None:
            return _call(self.path, fn)
        with self._lock:
            return _call(self.path, fn)

    def _check_readable(self) -> None:
        """Decode (up to 16 MP of) the smallest level once, so a truncated file fails at open, not mid-training."""
        level = self.level_count - 1
        lw, lh = self.level_dimensions[level]
        w, h = min(lw, 4096), min(lh, 4096)
        ds = self.level_downsamples[level]
        origin = (int((lw - w) * ds), int((lh - h) * ds))
        self._read(lambda: self._osr.read_region(origin, level, (w, h)))


@dataclass
class SlideSource:
    """A slide region seen as an (h, w, 3) array that reads rectangles from the slide on demand."""

    slide: Slide
    region: Region

    def __post_init__(self) -> None:
        self.slide.check_region(self.region)
        w, h = self.slide.level_size(self.region)
        self.shape = (h, w, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._downsample = self.slide.level_downsamples[self.region.level]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        location = (self.region.x + round(x0 * self._downsample), self.region.y + round(y0 * self._downsample))
        return self.slide.read_pixels(location, self.region.level, (x1 - x0, y1 - y0))


def open_slide(path: str | os.PathLike[str], mpp: float | None = None) -> Slide:
    """Open a slide or plain image; raises `SlideError` with the file named when it cannot. `mpp`: its µm per
    level-0 pixel where the file records none (or records it wrongly)."""
    return Slide(path, mpp)


def identity(path: str | os.PathLike[str]) -> str | None:
    """The content fingerprint of the slide at `path` (None: not a readable slide)."""
    try:
        with open_slide(path) as slide:
            return slide.fingerprint
    except SlideError:
        return None


def _check_not_a_damaged_pyramid(path: Path) -> None:
    """A tiled TIFF that OpenSlide refuses is damaged (OpenSlide reads every intact one): read as a plain image it
    gave a wrong slide without a word (no µm/px, no levels, a cut-off picture)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return
    reader_log = logging.getLogger("tifffile")
    level = reader_log.level
    reader_log.setLevel(logging.CRITICAL)  # (its complaints about a broken file are said below, in one line)
    try:
        with tifffile.TiffFile(path) as tif:
            tiled = tif.pages.first.is_tiled
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, struct.error):
        tiled = False  # (not a TIFF tifffile reads: the plain-image reader says what is wrong)
    finally:
        reader_log.setLevel(level)
    if tiled:
        raise SlideError(f"{path}: a tiled TIFF that OpenSlide cannot read: the file is truncated or damaged")


def _call(path: Path, fn: Callable[[], _T]) -> _T:
    """Run a reader call, turning every reader failure into `SlideError` naming the file."""
    try:
        return fn()
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(f"{path}: unsupported or unrecognised slide format") from None
    except openslide.OpenSlideError as exc:
        raise SlideError(f"{path}: cannot read slide ({exc}); the file may be corrupt or truncated") from None
    except Image.DecompressionBombError:
        raise SlideError(f"{path}: plain image too large to load whole; convert it to a tiled pyramidal TIFF") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SlideError(f"{path}: cannot read image ({exc}); the file may be corrupt or truncated") from None


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite un-premultiplied RGBA onto white."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)
