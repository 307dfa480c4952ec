"""Step plans: for a region and a memory budget, the fastest exact way to compute one training step that fits.

Every plan gives the same gradient (float64 tests for each kind): one tensor over the whole region (one forward and
one backward pass), or output tiles with their halo (a forward pass for the global sums, then forward + backward per
tile). Peak memory is the process's base plus bytes per input pixel of the largest tensor computed at once; time is
seconds per input pixel of the plan (tiles read their halo too), both measured on this engine
(`benchmarks/bench_training.py --calibrate`) and kept in a `Calibration` for each pixel fold of the model. Bigger
tiles read less halo but run slower per pixel (caches, memory bandwidth), so on a CPU the fastest tiles are a few
thousand pixels a side. TensorFlow-free: the app shows the plan before the engine has loaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import psutil

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.training.config import MIN_BUDGET, TrainConfig

GIB = 2**30
DEFAULT_BUDGET = 3 * GIB
DISTRIBUTED_TILE = 2048  # an "auto" tile when a step's tiles go to several workers
MAX_SIDE = 16384  # px: a Metal texture's limit; no tensor of a plan is wider or taller
NEAR_FASTEST = 1.03  # plans estimated within 3 % of the fastest count as fast
PREFETCH_BYTES_PER_PIXEL = 20.0  # the next step's inputs: 4 B/px kept, up to 15 B/px of copies while preparing


@dataclass(frozen=True)
class Calibration:
    """Measured on 2 CPU cores, float32 (benchmarks/bench_training.py --calibrate, 16 MP, tiles 1024 to 4032 and
    the whole region, in one run). Bigger tensors run slower per pixel (caches, memory bandwidth): the input pixels
    per second of a tile of input side s are `tiled_rate * (2048 / s) ** size_exponent`; the one-tensor plan does
    one forward pass where tiles do two, `whole_speedup` times the tiled rate at the same side. The defaults are the
    4 x 4 fold's."""

    stride: int = 64  # the U-Net's (model.geometry; a test keeps each fold's equal to what its layers give)
    halo: int = 164
    base_bytes: float = 0.55 * GIB  # the process: TensorFlow, the model and its optimizer, the region cache's pages
    bytes_per_pixel: float = 90.0  # per input pixel of the tensor computed at once (forward + backward)
    # measured 2026-11-23 with oneDNN on, tiles folded on the host, the loss fused by XLA, one tensor forward once
    tiled_rate: float = 13.15e6  # input pixels per second, both passes, at an input side of 2048
    size_exponent: float = 0.01
    whole_speedup: float = 1.53
    seconds_per_tile: float = 0.005  # fixed cost of each tile pass (dispatch, mirroring the edges, summing)

    def seconds(self, input_pixels: float, side: float, whole: bool) -> float:
        rate = self.tiled_rate * (2048 / side) ** self.size_exponent * (self.whole_speedup if whole else 1.0)
        return input_pixels / rate


CALIBRATIONS = {
    4: Calibration(),
    # measured 2026-11-25 against the 4 x 4 fold in one run (--calibrate --fold 2, then 4): input pixels per second
    # 0.414x at tile 2048, the one tensor 1.06x the 4 x 4's speedup; the one-tensor 16 MP step peaked at 2.81 GiB
    # (4 x 4: 1.69), tiles of 2048 at 1.46 GiB (1.25)
    2: Calibration(stride=32, halo=82, bytes_per_pixel=140.0, tiled_rate=5.45e6, whole_speedup=1.61),
}


@dataclass(frozen=True)
class StepPlan:
    height: int
    width: int
    tile: int | None  # output tile side; None: the region as one tensor
    tiles: int
    input_pixels: int  # pixels fed to the model per pass (halos included)
    peak_bytes: float
    seconds: float  # estimated per step

    @property
    def kind(self) -> str:
        return "whole" if self.tile is None else "tiled"

    def describe(self) -> str:
        what = "the region as one tensor" if self.tile is None else (
            f"{self.tiles} tile{'s' * (self.tiles > 1)} of {self.tile} px "
            f"(x{self.input_pixels / (self.height * self.width):.2f} pixels read)")
        seconds = f"~{self.seconds:.1f}" if self.seconds >= 0.05 else "under 0.1"  # (not "~0.0": a small region)
        return f"{self.width} x {self.height}: {what}; peak ~{self.peak_bytes / GIB:.1f} GiB, {seconds} s per step"


def step_tile(config_tile: int | str | None, shape: tuple[int, int], budget_gib: float,
              distributed: bool = False, fold: int = TrainConfig.fold) -> int | None:
    """The tile a step uses: the configured one, or for "auto" the plan's within the budget and the memory the
    machine has free now (tiles of at most DISTRIBUTED_TILE when they are spread over workers, so there are tiles
    to spread)."""
    if config_tile != "auto":
        return config_tile  # type: ignore[return-value]
    free = psutil.Process().memory_info().rss + 0.9 * psutil.virtual_memory().available
    tile = plan_step(*shape, min(budget_gib * GIB, max(free, MIN_BUDGET * GIB)), fold=fold).tile
    return min(tile or DISTRIBUTED_TILE, DISTRIBUTED_TILE) if distributed else tile


def plan_step(height: int, width: int, budget: float = DEFAULT_BUDGET, dtype: str = "float32",
              fold: int = TrainConfig.fold) -> StepPlan:
    """For an H x W region, the plan with the smallest estimated peak among those that fit `budget` bytes and are
    within NEAR_FASTEST of the fastest of them: estimates are not finer than that, and the memory spared is the
    machine's (so a region's peak stops growing once bigger tiles only shave the halo). GigaPathError saying what
    budget the smallest plan needs when none fits."""
    candidates = plans(height, width, dtype, fold)
    fitting = [p for p in candidates if p.peak_bytes <= budget]
    if not fitting:
        smallest = min(candidates, key=lambda p: p.peak_bytes)
        what = "the region as one tensor" if smallest.tile is None else f"tiles of {smallest.tile} px"
        raise GigaPathError(f"a memory budget of {budget / GIB:.2f} GiB is too small: even {what} need "
                            f"~{smallest.peak_bytes / GIB:.2f} GiB; raise the memory budget to at least "
                            f"{math.ceil(smallest.peak_bytes / GIB * 10) / 10:g} GiB")
    fastest = min(p.seconds for p in fitting)
    return min((p for p in fitting if p.seconds <= NEAR_FASTEST * fastest), key=lambda p: (p.peak_bytes, p.seconds))


def plans(height: int, width: int, dtype: str = "float32", fold: int = TrainConfig.fold) -> list[StepPlan]:
    """Every plan worth considering: the region as one tensor, and tiles of every side from 4 strides up to the
    region's (in strides; bigger tiles are fewer, with less halo, but need more memory); none with a tensor side
    beyond MAX_SIDE."""
    stride, halo = CALIBRATIONS[fold].stride, CALIBRATIONS[fold].halo
    longest = max(math.ceil(d / stride) * stride for d in (height, width))
    whole = [None] if longest + 2 * halo <= MAX_SIDE else []
    longest = min(longest, MAX_SIDE - 2 * halo)
    return [estimate(height, width, tile, dtype, fold)
            for tile in (*whole, *range(4 * stride, longest // stride * stride + stride, stride))]


def prefetch_fits(height: int, width: int, budget_gib: float, fold: int = TrainConfig.fold) -> bool:
    """Whether a one-tensor step on an H x W region leaves room in the budget for the next step's inputs prepared
    beside it (`training.prefetch`: the folded pixels and labels kept, and the copies made on the way)."""
    plan = estimate(height, width, None, fold=fold)
    return plan.peak_bytes + PREFETCH_BYTES_PER_PIXEL * plan.input_pixels <= budget_gib * GIB


def estimate(height: int, width: int, tile: int | None, dtype: str = "float32",
             fold: int = TrainConfig.fold) -> StepPlan:
    """The plan of an H x W region with output tiles of `tile` px (None: one tensor) for a model of this pixel fold:
    its peak memory and time."""
    c = CALIBRATIONS[fold]
    ph, pw = (math.ceil(d / c.stride) * c.stride for d in (height, width))
    scale = np.dtype(dtype).itemsize / 4
    if tile is None:
        pixels = (ph + 2 * c.halo) * (pw + 2 * c.halo)
        return StepPlan(height, width, None, 1, pixels, c.base_bytes + c.bytes_per_pixel * scale * pixels,
                        c.seconds(pixels, math.sqrt(pixels), whole=True))
    tile = max(c.stride, round(tile / c.stride) * c.stride)  # as TilePlan rounds it
    rows, cols = math.ceil(ph / tile), math.ceil(pw / tile)
    pixels = (ph + 2 * c.halo * rows) * (pw + 2 * c.halo * cols)  # every tile row and column adds two halos
    largest = (min(tile, ph) + 2 * c.halo) * (min(tile, pw) + 2 * c.halo)
    return StepPlan(height, width, tile, rows * cols, pixels, c.base_bytes + c.bytes_per_pixel * scale * largest,
                    c.seconds(pixels, math.sqrt(largest), whole=False) + 2 * rows * cols * c.seconds_per_tile)
