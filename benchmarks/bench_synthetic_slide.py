"""Write a 1-gigapixel synthetic slide, report time and peak RSS, and check it through OpenSlide.

Usage: python benchmarks/bench_synthetic_slide.py [--size 32768] [--out DIR]
The slide is written to a temporary folder (never committed) and removed afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_bytes, write_result  # noqa: E402

from gigapath_desktop.slides import Region, open_slide  # noqa: E402
from gigapath_desktop.slides.synthetic import SyntheticField, make_slide  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=32768, help="width = height in pixels")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="gigapath-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    image, mask = make_slide(folder / "synthetic.tif", args.size, args.size, seed=11)
    seconds = time.perf_counter() - start
    rss = peak_rss_bytes()
    field = SyntheticField.create(args.size, args.size, seed=11)
    rng = np.random.default_rng(0)
    checked = 0
    with open_slide(image) as slide, open_slide(mask) as mask_slide:
        levels = slide.level_count
        for _ in range(8):
            x, y = (int(v) for v in rng.integers(0, args.size - 1024, 2))
            got = mask_slide.read_region(Region(x, y, 1024, 1024))[..., 0] > 127
            truth = field.tissue(np.arange(y, y + 1024) + 0.5, np.arange(x, x + 1024) + 0.5)
            assert np.array_equal(got, truth), f"mask differs from the generator at {(x, y)}"
            assert slide.read_region(Region(x, y, 1024, 1024)).shape == (1024, 1024, 3)
            checked += got.size
    sizes = {"image_bytes": image.stat().st_size, "mask_bytes": mask.stat().st_size}
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "pixels": args.size * args.size,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(rss / 2**30, 3),
        "levels": levels,
        "mask_pixels_checked_against_truth": checked,
        **sizes,
    }
    path = write_result("synthetic_slide", result)
    print(f"{args.size} x {args.size} synthetic slide: {seconds:.1f} s, peak RSS {rss / 2**30:.2f} GiB, "
          f"{levels} levels, mask exact on {checked} sampled pixels -> {path}")


if __name__ == "__main__":
    main()
