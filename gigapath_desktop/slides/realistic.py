"""Realistic test slides with exact truth: real tissue texture, real artefacts, varied layouts.

The plain synthetic slides (`slides.synthetic`) are easy by construction: flat pink tissue on clean white glass.
Models that pass them can still fail on real slides, so these are built from what real slides contain:
- texture: patches of real tissue cut from real slides (H&E bright-field, or DAPI fluorescence), quilted with random
  flips and rotations, the stain re-mixed per slide in optical-density (HED) space;
- layout: islands of a chosen tissue fraction with ragged edges, thin strands, lumen holes, adipose lobules at the
  tissue's edges (white fat cells with thin pink membranes), folds (double thickness), edges that fade over a few px;
- artefacts: glass with uneven illumination and noise, dust specks and fibres, pen strokes, air bubbles, an
  out-of-focus band, a scanner colour cast, JPEG compression.
The truth (`OUT.mask.tif`) is tissue where the tissue layer is more than half opaque, and the whole of each adipose
lobule (as pathologists outline fat: the white cell interiors too); lumens, dust, pen, bubbles and glass are
background, and tissue stays tissue under a pen stroke or a bubble. Slides are made whole in memory (up to
~100 MP) and written as pyramidal tiled TIFFs that OpenSlide reads.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile

from gigapath_desktop.outputs import atomic_path
from gigapath_desktop.slides.slide import Slide, open_slide
from gigapath_desktop.slides.synthetic import level_options, mask_path_for, pyramid_shapes

PATCH = 160  # side of the real-texture patches, level-0 px
# Ruifrok & Johnston's H&E(+DAB) stain vectors in optical density, as skimage.color.rgb2hed uses them.
STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
INKS = np.array([[40, 80, 170], [30, 120, 70], [45, 45, 60], [150, 40, 60]], np.float32)


@dataclass(frozen=True)
class Case:
    """What one realistic slide holds; every count is per 10 megapixels of slide."""

    name: str
    width: int = 8192
    height: int = 6144
    modality: str = "brightfield"  # or "fluorescence"
    tissue_fraction: float = 0.35
    island_scale: float = 900.0  # level-0 px; smaller gives more, smaller islands
    strands: float = 1.0
    lumens: float = 2.0
    fat: float = 0.5
    folds: float = 0.5
    dust: float = 60.0
    fibres: float = 2.0
    pens: int = 1
    bubbles: float = 0.5
    blur: float = 0.0  # sigma (px) of one out-of-focus band; 0 for none
    stain_jitter: float = 0.25
    density: float = 1.0  # stain density: below 1 pale (thin or faded sections), above 1 dark
    jpeg_quality: int = 85
    mpp: float | None = None  # recorded in the TIFF when given
    sources: tuple[str, ...] = field(default_factory=tuple)  # texture slides; default: the bundled demo slide
    classes: int = 2  # 3: two tissue classes, textures from sources[0] and from sources[1:], in patches of each


def make_realistic_slide(out: str | os.PathLike[str], case: Case, seed: int = 0) -> tuple[Path, Path]:
    """Write `out` (pyramidal JPEG TIFF) and `out.mask.tif` (truth: 0/255 for tissue, class indices 0..K-1 for K > 2
    classes); return both paths."""
    rng = np.random.default_rng(seed)
    image, truth = render(case, rng)
    out = Path(out)
    mask_out = mask_path_for(out)
    write_pyramid(out, image, case.mpp, jpeg_quality=case.jpeg_quality)
    write_pyramid(mask_out, truth * np.uint8(255) if case.classes == 2 else truth, case.mpp)
    return out, mask_out


def render(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, truth) of one slide of `case`: truth {0, 1} (tissue), or 0..2 for a 3-class case
    (0 background, 1 tissue of the first source's texture, 2 of the others')."""
    h, w = case.height, case.width

    def count(density: float) -> int:
        return int(rng.poisson(density * h * w / 10e6))

    fluorescence = case.modality == "fluorescence"
    sources = case.sources or _default_sources(fluorescence)
    texture, stain = _texture(sources if case.classes == 2 else sources[:1], case, h, w, rng)
    second = None
    if case.classes == 3:
        if len(sources) < 2:
            raise ValueError("a 3-class slide takes its two tissue textures from two or more source slides")
        second = _smooth_noise(h, w, case.island_scale, rng) > 0  # where the second class lies: smooth borders
        texture = np.where(second[..., None], _texture(sources[1:], case, h, w, rng, stain)[0], texture)
    elif case.classes != 2:
        raise ValueError(f"realistic slides have 2 or 3 classes, not {case.classes}")
    shape = _islands(h, w, case.tissue_fraction, case.island_scale, rng)
    _draw_strands(shape, count(case.strands), rng)
    _cut_lumens(shape, count(case.lumens), rng)
    fat_cells = _fat(shape, count(case.fat), rng)
    truth = (cv2.GaussianBlur(shape, (0, 0), 1.2) > 0.5).astype(np.uint8)
    if second is not None:
        truth += truth * second
    alpha = cv2.GaussianBlur(shape * (1 - fat_cells), (0, 0), 1.2)
    od = _optical_density(texture) * (case.density * _thickness(h, w, rng))[..., None]
    for _ in range(count(case.folds)):
        od *= 1.0 + 0.9 * _blob_mask(h, w, rng, radius=rng.uniform(60, 200), elongation=rng.uniform(3, 8))[..., None]
    if fluorescence:
        tissue_rgb = np.clip(texture.astype(np.float32) * 1.1 + np.array([6, 12, 28], np.float32), 0, 255)
        glass = _glass(h, w, rng, level=rng.uniform(3, 9), tint=3.0, noise=2.0)
    else:
        tissue_rgb = 255.0 * np.exp(-od)
        glass = _glass(h, w, rng, level=rng.uniform(232, 246), tint=4.0, noise=2.5)
    image = alpha[..., None] * tissue_rgb + (1 - alpha[..., None]) * glass
    del tissue_rgb, glass, od, texture
    if not fluorescence:
        pen_strokes(image, case.pens, rng)
    _bubbles(image, count(case.bubbles), rng)
    _dust(image, count(case.dust), count(case.fibres), fluorescence, rng)
    if case.blur:
        _out_of_focus_band(image, case.blur, rng)
    image = _scanner_cast(image, rng)
    return image, truth


# --- texture ------------------------------------------------------------------------------------------------------
def _texture(sources: tuple[str, ...], case: Case, h: int, w: int, rng: np.random.Generator,
             stain: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A slide-sized quilt of real tissue patches from `sources`, the stain re-mixed (bright-field) by the slide's
    `stain` scale (drawn when None); returns the quilt and that scale."""
    fluorescence = case.modality == "fluorescence"
    patches = texture_patches(sources, fluorescence, rng)
    if not fluorescence:
        patches, stain = _jitter_stain(patches, case.stain_jitter, rng, stain)
    return _quilt(patches, h, w, rng), stain


def texture_patches(sources: tuple[str, ...], fluorescence: bool, rng: np.random.Generator,
                    count: int = 160) -> list[np.ndarray]:
    """`count` PATCH x PATCH patches of real tissue (nearly all tissue pixels) from the source slides."""
    pools = [_tissue_patches(path, fluorescence) for path in sources]
    pool = [p for pool in pools for p in pool]
    if not pool:
        raise ValueError(f"no tissue patches found in {', '.join(sources)}")
    return [pool[i] for i in rng.integers(0, len(pool), count)]


def _tissue_patches(path: str, fluorescence: bool) -> list[np.ndarray]:
    with open_slide(path) as slide:
        rgb = _read_whole(slide)
    if fluorescence:
        signal = cv2.GaussianBlur(rgb.max(axis=2).astype(np.float32), (0, 0), 6)
        tissue = signal > 4
    else:
        saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
        tissue = cv2.GaussianBlur(saturation, (0, 0), 3) > 40
    patches = []
    for y in range(0, rgb.shape[0] - PATCH, PATCH // 2):
        for x in range(0, rgb.shape[1] - PATCH, PATCH // 2):
            if tissue[y : y + PATCH, x : x + PATCH].mean() > 0.9:
                patches.append(rgb[y : y + PATCH, x : x + PATCH].copy())
    return patches


def _read_whole(slide: Slide) -> np.ndarray:
    """The largest level of at most 20 MP, whole."""
    level = next(i for i, (w, h) in enumerate(slide.level_dimensions) if w * h <= 20e6 or i == slide.level_count - 1)
    w, h = slide.level_dimensions[level]
    return slide.read_pixels((0, 0), level, (w, h))


def _default_sources(fluorescence: bool) -> tuple[str, ...]:
    from gigapath_desktop.resources import demo_slide

    if fluorescence:
        raise ValueError("a fluorescence case needs its texture slides (e.g. a DAPI NDPI) in Case.sources")
    return (str(demo_slide()),)


def _jitter_stain(patches: list[np.ndarray], strength: float, rng: np.random.Generator,
                  slide_scale: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Re-mix H and E per slide (and a little per patch) in optical density, as stains and scanners vary; returns
    the patches and the slide's stain scale (drawn here unless given: every texture of a slide shares it)."""
    inverse = np.linalg.inv(STAINS)
    if slide_scale is None:
        slide_scale = np.exp(rng.normal(0, strength, 3)).astype(np.float32)
    out = []
    for patch in patches:
        stains = _optical_density(patch) @ inverse
        stains *= slide_scale * np.exp(rng.normal(0, strength / 4, 3)).astype(np.float32)
        out.append(np.clip(255 * np.exp(-(stains @ STAINS)), 0, 255).astype(np.uint8))
    return out, slide_scale


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)


def _quilt(patches: list[np.ndarray], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Cover (h, w) with randomly flipped/rotated patches, overlapping by a quarter and feathered together."""
    step = PATCH * 3 // 4
    ramp = np.minimum(np.arange(PATCH) + 1, PATCH - np.arange(PATCH)).astype(np.float32)
    weight = np.minimum(np.outer(ramp, ramp), (PATCH / 8) ** 2)[..., None]
    acc = np.zeros((h + 2 * PATCH, w + 2 * PATCH, 3), np.float32)
    total = np.zeros((h + 2 * PATCH, w + 2 * PATCH, 1), np.float32)
    for y in range(-PATCH // 4, h, step):
        for x in range(-PATCH // 4, w, step):
            patch = np.rot90(patches[rng.integers(len(patches))], rng.integers(4))
            if rng.integers(2):
                patch = patch[:, ::-1]
            ys, xs = slice(y + PATCH // 4, y + PATCH // 4 + PATCH), slice(x + PATCH // 4, x + PATCH // 4 + PATCH)
            acc[ys, xs] += patch * weight
            total[ys, xs] += weight
    q = PATCH // 4
    return (acc[q : q + h, q : q + w] / np.maximum(total[q : q + h, q : q + w], 1e-6)).astype(np.uint8)


# --- layout -------------------------------------------------------------------------------------------------------
def _smooth_noise(h: int, w: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance noise smooth over ~`cell` px, at full size."""
    gh, gw = max(2, math.ceil(h / cell) + 2), max(2, math.ceil(w / cell) + 2)
    grid = cv2.GaussianBlur(rng.standard_normal((gh, gw)).astype(np.float32), (0, 0), 1.0)
    grid = (grid - grid.mean()) / (grid.std() + 1e-6)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _islands(h: int, w: int, fraction: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """float32 {0, 1} tissue islands covering about `fraction` of the slide, with ragged edges."""
    value = _smooth_noise(h, w, scale, rng) + 0.25 * _smooth_noise(h, w, scale / 8, rng)
    value += 0.08 * _smooth_noise(h, w, 12, rng)
    threshold = np.quantile(value[::7, ::7], 1 - fraction)
    return (value > threshold).astype(np.float32)


def _curve(h: int, w: int, rng: np.random.Generator, length: float) -> np.ndarray:
    """A smooth random polyline (int32 points) of about `length` px starting anywhere on the slide."""
    n = 40
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, n))
    step = length / n
    pts = np.array([rng.uniform(0, w), rng.uniform(0, h)]) + np.cumsum(
        np.stack([np.cos(heading), np.sin(heading)], 1) * step, axis=0)
    return pts.astype(np.int32)


def _draw_strands(shape: np.ndarray, n: int, rng: np.random.Generator) -> None:
    h, w = shape.shape
    for _ in range(n):
        cv2.polylines(shape, [_curve(h, w, rng, rng.uniform(800, 3000))], False, 1.0,
                      thickness=int(rng.integers(5, 26)), lineType=cv2.LINE_8)


def _blob_mask(h: int, w: int, rng: np.random.Generator, radius: float, elongation: float = 1.0) -> np.ndarray:
    """float32 {0, 1}: one filled, irregular ellipse somewhere on the slide."""
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = radius * np.exp(0.2 * np.convolve(rng.standard_normal(48), np.ones(5) / 5, "same"))
    theta = rng.uniform(0, np.pi)
    x, y = radii * np.cos(angles) * math.sqrt(elongation), radii * np.sin(angles) / math.sqrt(elongation)
    pts = np.stack([centre[0] + x * np.cos(theta) - y * np.sin(theta), centre[1] + x * np.sin(theta) + y * np.cos(theta)], 1)
    cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    return mask.astype(np.float32)


def _cut_lumens(shape: np.ndarray, n: int, rng: np.random.Generator) -> None:
    """Round holes in the tissue (vessels, glands): background in the truth."""
    h, w = shape.shape
    for _ in range(n):
        shape *= 1 - _blob_mask(h, w, rng, radius=rng.uniform(25, 160), elongation=rng.uniform(1, 3))


def _fat(shape: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Adipose lobules growing out of the tissue's edges: fat cells 60-160 px across, white inside, with 3-px pink
    membranes, over glass or over other tissue. A lobule is tissue in the truth, as a pathologist outlines it
    (added to `shape`); the returned layer marks the unstained cell interiors, which the image shows as white."""
    h, w = shape.shape
    interiors = np.zeros((h, w), np.float32)
    tissue = np.argwhere(shape[::16, ::16] > 0)
    for _ in range(n):
        lobule = _blob_mask(h, w, rng, radius=rng.uniform(150, 400))
        if len(tissue):  # move the lobule's centre onto a tissue pixel
            ys, xs = np.nonzero(lobule[::16, ::16])
            dy, dx = tissue[rng.integers(len(tissue))] * 16 - (int(ys.mean()) * 16, int(xs.mean()) * 16)
            lobule = np.roll(lobule, (int(dy), int(dx)), axis=(0, 1))
        ys, xs = np.nonzero(lobule[::32, ::32])
        if not len(ys):
            continue
        cells, membranes = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        for i in rng.permutation(len(ys)):
            r, centre = int(rng.uniform(30, 80)), (int(xs[i] * 32 + rng.integers(32)), int(ys[i] * 32 + rng.integers(32)))
            cv2.circle(cells, centre, r, 1, -1)
            cv2.circle(membranes, centre, r, 1, 3)
        inner = cv2.erode(lobule, np.ones((7, 7), np.uint8))  # the lobule's rim stays membrane
        interiors = np.maximum(interiors, cells * (1 - membranes) * inner)
        np.maximum(shape, lobule, out=shape)
    return interiors


def _thickness(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Section thickness varies smoothly: stain density from ~0.5x to ~2x (pale loose tissue to dense)."""
    return np.exp(0.35 * _smooth_noise(h, w, 1500, rng)).astype(np.float32)


# --- glass and artefacts ----------------------------------------------------------------------------------------
def _glass(h: int, w: int, rng: np.random.Generator, level: float, tint: float, noise: float) -> np.ndarray:
    """Background with a per-slide tint, uneven illumination and sensor noise."""
    base = level + rng.normal(0, tint, 3).astype(np.float32)
    light = 1 + 0.015 * _smooth_noise(h, w, 3000, rng)[..., None]
    return base * light + rng.normal(0, noise, (h, w, 1)).astype(np.float32)


def pen_strokes(image: np.ndarray, n: int, rng: np.random.Generator, inks: np.ndarray = INKS) -> None:
    """Marker ink on a float RGB image, in place: translucent strokes, 25-70 px wide, each of one of `inks`."""
    h, w = image.shape[:2]
    for _ in range(n):
        stroke = np.zeros((h, w), np.uint8)
        cv2.polylines(stroke, [_curve(h, w, rng, rng.uniform(0.5, 1.2) * max(h, w))], False, 1,
                      thickness=int(rng.integers(25, 70)))
        alpha = cv2.GaussianBlur(stroke.astype(np.float32), (0, 0), 2) * rng.uniform(0.55, 0.85)
        alpha *= 1 + 0.15 * _smooth_noise(h, w, 40, rng)
        ink = inks[rng.integers(len(inks))] / 255.0
        image *= 1 - alpha[..., None] * (1 - ink)


def _bubbles(image: np.ndarray, n: int, rng: np.random.Generator) -> None:
    """Air bubbles under the cover slip: a dark refracting rim, a slightly brighter inside."""
    h, w = image.shape[:2]
    for _ in range(n):
        centre, r = (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(60, 350))
        rim, inside = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        cv2.circle(rim, centre, r, 1, int(rng.integers(3, 8)))
        cv2.circle(inside, centre, r, 1, -1)
        rim_alpha = cv2.GaussianBlur(rim.astype(np.float32), (0, 0), 2)[..., None]
        image += inside[..., None] * 6.0
        image *= 1 - 0.45 * rim_alpha


def _dust(image: np.ndarray, specks: int, fibres: int, fluorescence: bool, rng: np.random.Generator) -> None:
    """Dust specks (1-10 px) and fibres (thin curves): dark on bright-field glass, bright in fluorescence."""
    h, w = image.shape[:2]
    layer = np.zeros((h, w), np.float32)
    for _ in range(specks):
        axes = (int(rng.uniform(1, 10)), int(rng.uniform(1, 6)))
        cv2.ellipse(layer, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), axes, rng.uniform(0, 180), 0, 360,
                    float(rng.uniform(0.4, 0.9)), -1)
    for _ in range(fibres):
        cv2.polylines(layer, [_curve(h, w, rng, rng.uniform(100, 600))], False, float(rng.uniform(0.3, 0.7)),
                      thickness=int(rng.integers(1, 4)))
    layer = cv2.GaussianBlur(layer, (0, 0), 0.8)[..., None]
    colour = np.array([90, 200, 120] if fluorescence else [60, 55, 50], np.float32)
    image *= 1 - layer
    image += layer * colour


def _out_of_focus_band(image: np.ndarray, sigma: float, rng: np.random.Generator) -> None:
    """One band across the slide scanned out of focus."""
    h = image.shape[0]
    y0 = int(rng.uniform(0, h * 0.7))
    band = slice(y0, min(h, y0 + int(h * rng.uniform(0.15, 0.3))))
    image[band] = cv2.GaussianBlur(image[band], (0, 0), sigma)


def _scanner_cast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-scanner gamma and white balance, then uint8."""
    gain = np.exp(rng.normal(0, 0.04, 3)).astype(np.float32)
    gamma = float(np.exp(rng.normal(0, 0.08)))
    out = 255.0 * (np.clip(image * gain, 0, 255) / 255.0) ** gamma
    return np.clip(out, 0, 255).astype(np.uint8)


# --- output -------------------------------------------------------------------------------------------------------
def write_pyramid(path: Path, image: np.ndarray, mpp: float | None, jpeg_quality: int | None = None) -> None:
    """A tiled pyramidal TIFF (JPEG for RGB, deflate for masks) written to a temporary name, then renamed."""
    rgb = image.ndim == 3
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        level = image
        for i, (lw, lh) in enumerate(pyramid_shapes(image.shape[1], image.shape[0])):
            if i:
                level = cv2.resize(level, (lw, lh), interpolation=cv2.INTER_AREA if rgb else cv2.INTER_NEAREST)
            compression = ("jpeg", {"level": jpeg_quality}) if rgb else ("zlib", {})
            tif.write(level, photometric="rgb" if rgb else "minisblack", compression=compression[0],
                      compressionargs=compression[1], **level_options(i, mpp))
