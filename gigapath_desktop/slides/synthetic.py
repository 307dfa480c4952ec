"""Synthetic H&E-like slides of any size, with their exact tissue mask, written tile by tile.

Tissue is where a smooth random field (two bilinearly interpolated grids: islands and their ragged edges) exceeds a
threshold. Every pyramid level is rendered from that field at its own pixel centres, so nothing is ever held whole
and the mask is exact at every level. Used by tests and benchmarks at gigapixel scale.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tifffile
from scipy import ndimage

from gigapath_desktop.outputs import atomic_path
from gigapath_desktop.parallel import bounded_map

ProgressFn = Callable[[int, int], None]

TILE = 512
ISLAND_CELL = 1024  # level-0 px per grid cell of the island field
EDGE_CELL = 96  # level-0 px per grid cell of the edge-roughness field
TEXTURE = 2048  # side of the precomputed texture patches sampled by every tile

BACKGROUND = np.array([242.0, 240.0, 244.0], np.float32)
EOSIN_LIGHT = np.array([236.0, 170.0, 205.0], np.float32)
EOSIN_DARK = np.array([205.0, 115.0, 170.0], np.float32)
HEMATOXYLIN = np.array([95.0, 65.0, 150.0], np.float32)


@dataclass(frozen=True)
class SyntheticField:
    """The random tissue field of one synthetic slide, cheap to evaluate on any tile at any downsample."""

    islands: np.ndarray
    edges: np.ndarray
    shade: np.ndarray
    threshold: float

    @classmethod
    def create(cls, width: int, height: int, seed: int, tissue_fraction: float = 0.4) -> "SyntheticField":
        rng = np.random.default_rng(seed)

        def grid(cell: int, sigma: float) -> np.ndarray:
            g = rng.standard_normal((math.ceil(height / cell) + 2, math.ceil(width / cell) + 2))
            g = ndimage.gaussian_filter(g, sigma, mode="wrap")
            return (g / (g.std() + 1e-12)).astype(np.float32)

        islands, edges, shade = grid(ISLAND_CELL, 1.0), grid(EDGE_CELL, 1.0), grid(ISLAND_CELL // 2, 1.5)
        field = cls(islands, edges, shade, 0.0)
        sample = field.value(np.linspace(0, height, 256, endpoint=False), np.linspace(0, width, 256, endpoint=False))
        return cls(islands, edges, shade, float(np.quantile(sample, 1.0 - tissue_fraction)))

    def value(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Field value at level-0 coordinates ys (rows) x xs (columns)."""
        return _bilinear(self.islands, ISLAND_CELL, ys, xs) + 0.35 * _bilinear(self.edges, EDGE_CELL, ys, xs)

    def tissue(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return self.value(ys, xs) > self.threshold


def make_slide(
    out: str | os.PathLike[str],
    width: int,
    height: int,
    seed: int = 0,
    mpp: float = 0.5,
    progress: ProgressFn | None = None,
) -> tuple[Path, Path]:
    """Write `out` (pyramidal tiled JPEG TIFF) and `out.mask.tif` (0/255 tissue mask, deflate); return both paths."""
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be positive, got {width} x {height}")
    out = Path(out)
    mask_out = mask_path_for(out)
    field = SyntheticField.create(width, height, seed)
    textures = _Textures(seed)
    levels = pyramid_shapes(width, height)
    total = sum(math.ceil(w / TILE) * math.ceil(h / TILE) for w, h in levels)
    done = 0
    with atomic_path(out) as tmp_image, atomic_path(mask_out) as tmp_mask, \
            tifffile.TiffWriter(tmp_image, bigtiff=True) as image_tif, tifffile.TiffWriter(tmp_mask, bigtiff=True) as mask_tif:
        for level, (lw, lh) in enumerate(levels):
            ds = 2**level
            render = functools.partial(_image_tile, field, textures, ds=ds, level_shape=(lw, lh))
            mask_tiles = (_mask_tile(field, origin, ds, (lw, lh)) for origin in _tile_origins(lw, lh))
            image_tiles = (tile for _, tile in bounded_map(render, _tile_origins(lw, lh)))
            if progress is not None:
                image_tiles = _counted(image_tiles, progress, done, total)
            done += math.ceil(lw / TILE) * math.ceil(lh / TILE)
            options = level_options(level, mpp)
            image_tif.write(
                image_tiles, shape=(lh, lw, 3), dtype=np.uint8, photometric="rgb",
                compression="jpeg", compressionargs={"level": 90}, **options,
            )
            mask_tif.write(
                mask_tiles, shape=(lh, lw), dtype=np.uint8, photometric="minisblack", compression="zlib", **options
            )
    return out, mask_out


def _counted(tiles: Iterator[np.ndarray], progress: ProgressFn, before: int, total: int) -> Iterator[np.ndarray]:
    """Pass tiles through, reporting progress(tiles done so far, total) for each."""
    for done, tile in enumerate(tiles, start=before + 1):
        progress(done, total)
        yield tile


def mask_path_for(slide_path: str | os.PathLike[str]) -> Path:
    """`X.tif` -> `X.mask.tif`: where `make_slide` writes the ground truth."""
    path = Path(slide_path)
    return path.with_name(path.stem + ".mask" + path.suffix)


def pyramid_shapes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of each level, halving until the whole level fits in one tile."""
    shapes = [(width, height)]
    while max(shapes[-1]) > TILE:
        w, h = shapes[-1]
        shapes.append((math.ceil(w / 2), math.ceil(h / 2)))
    return shapes


class _Textures:
    """Per-pixel noise and nuclei patterns, made once and sampled at a random offset by every tile."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed + 1)
        self.noise = rng.integers(-7, 8, (TEXTURE, TEXTURE, 3), dtype=np.int8)
        blobs = ndimage.gaussian_filter(rng.standard_normal((TEXTURE, TEXTURE)).astype(np.float32), 2.0, mode="wrap")
        self.nuclei = blobs > np.quantile(blobs, 0.90)

    def sample(self, rng: np.random.Generator, h: int, w: int, ds: int) -> tuple[np.ndarray, np.ndarray]:
        oy, ox = rng.integers(0, TEXTURE - TILE, 2)
        noise = self.noise[oy : oy + h, ox : ox + w]
        nuclei = self.nuclei[::ds, ::ds] if ds < TEXTURE // TILE else self.nuclei[:: TEXTURE // TILE, :: TEXTURE // TILE]
        ny, nx = rng.integers(0, nuclei.shape[0] - h + 1), rng.integers(0, nuclei.shape[1] - w + 1)
        return noise, nuclei[ny : ny + h, nx : nx + w]


def _tile_coordinates(origin: tuple[int, int], ds: int, level_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 coordinates of the pixel centres of the tile at `origin` (clipped to the level)."""
    ty, tx = origin
    lw, lh = level_shape
    ys = (np.arange(ty, min(ty + TILE, lh)) + 0.5) * ds
    xs = (np.arange(tx, min(tx + TILE, lw)) + 0.5) * ds
    return ys, xs


def _mask_tile(field: SyntheticField, origin: tuple[int, int], ds: int, level_shape: tuple[int, int]) -> np.ndarray:
    """One TILE x TILE tile of the 0/255 tissue mask, zero past the level's edge."""
    ys, xs = _tile_coordinates(origin, ds, level_shape)
    mask = np.zeros((TILE, TILE), np.uint8)
    mask[: len(ys), : len(xs)] = field.tissue(ys, xs) * np.uint8(255)
    return mask


def _image_tile(
    field: SyntheticField, textures: _Textures, origin: tuple[int, int], ds: int, level_shape: tuple[int, int]
) -> np.ndarray:
    """One TILE x TILE RGB tile at downsample `ds`: eosin-pink tissue with nuclei on a bright background."""
    ys, xs = _tile_coordinates(origin, ds, level_shape)
    h, w = len(ys), len(xs)
    tissue = field.tissue(ys, xs)
    shade = np.clip(0.5 + 0.35 * _bilinear(field.shade, ISLAND_CELL // 2, ys, xs), 0.0, 1.0)[..., None]
    noise, nuclei = textures.sample(np.random.default_rng([origin[0], origin[1], ds]), h, w, ds)
    color = EOSIN_LIGHT * (1.0 - shade) + EOSIN_DARK * shade
    color = np.where(nuclei[..., None], HEMATOXYLIN, color)
    rgb = np.where(tissue[..., None], color, BACKGROUND) + noise
    image = np.full((TILE, TILE, 3), 255, np.uint8)
    image[:h, :w] = np.clip(rgb, 0, 255).astype(np.uint8)
    return image


def _tile_origins(width: int, height: int) -> Iterator[tuple[int, int]]:
    for ty in range(0, height, TILE):
        for tx in range(0, width, TILE):
            yield ty, tx


def level_options(level: int, mpp: float | None) -> dict[str, object]:
    """TIFF tags shared by the image and mask pages of one level: tiling, reduced-image flag, resolution (level-0
    microns per pixel times the level's downsample; None records no resolution)."""
    options: dict[str, object] = {"tile": (TILE, TILE), "subfiletype": 1 if level else 0, "metadata": None}
    if mpp is not None:
        pixels_per_cm = 1e4 / (mpp * 2**level)
        options.update(resolution=(pixels_per_cm, pixels_per_cm), resolutionunit="CENTIMETER")
    return options


def _bilinear(grid: np.ndarray, cell: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of `grid` (one value per `cell` level-0 px) at the outer product of ys and xs."""
    v, u = ys / cell, xs / cell
    iv, iu = np.floor(v).astype(np.intp), np.floor(u).astype(np.intp)
    fv, fu = (v - iv).astype(np.float32)[:, None], (u - iu).astype(np.float32)[None, :]
    a = grid[iv[:, None], iu[None, :]]
    b = grid[iv[:, None], iu[None, :] + 1]
    c = grid[iv[:, None] + 1, iu[None, :]]
    d = grid[iv[:, None] + 1, iu[None, :] + 1]
    return (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv
