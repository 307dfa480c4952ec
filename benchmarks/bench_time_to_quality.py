"""Time to quality at the paper's scale: steps and wall time until validation Dice >= 0.99, training on one
1.024-gigapixel region (16000 x 64000) with the default recipe, beside the 2023 study's 4940 steps / 111 h 24 min.

The training region is the whole synthetic slide of bench_training.py (made and cached there if missing); the
validation region is a 16 MP region of *another* synthetic slide (other seed), so it is never trained on. Stops at
the first validation >= 0.99 or after --max-minutes. Writes benchmarks/results/time_to_quality.json and the table
between the markers in README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_training import SEED, WORK, load, prepare  # noqa: E402
from common import machine, peak_rss_bytes, replace_readme_block, write_result  # noqa: E402

TARGET = 0.99
PAPER = {"steps": 4940, "hours": 111.4, "dice": 0.989}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-minutes", type=float, default=60.0)
    args = parser.parse_args()
    import keras

    from gigapath_desktop.model import build_unet
    from gigapath_desktop.training import StepEvent, TrainConfig, Trainer

    prepare(["1.024 GP"])
    train, val = load("1.024 GP"), validation_region()
    keras.utils.set_random_seed(0)
    curve: list[tuple[int, float, float]] = []
    start = time.perf_counter()

    def watch(event: object) -> None:
        if isinstance(event, StepEvent) and event.val_dice is not None:
            curve.append((event.step, round(event.val_dice, 4), round(time.perf_counter() - start, 1)))
            print(f"step {event.step}: val Dice {event.val_dice:.4f}, {curve[-1][2]:.0f} s", flush=True)
            if event.val_dice >= TARGET or time.perf_counter() - start > 60 * args.max_minutes:
                trainer.stop()

    trainer = Trainer(build_unet(), [train], val, TrainConfig(), listeners=[watch])
    trainer.run()
    reached = next(((s, d, t) for s, d, t in curve if d >= TARGET), None)
    result = {"train_pixels": train.pixels, "target": TARGET, "reached": reached is not None,
              "steps": reached[0] if reached else curve[-1][0], "seconds": reached[2] if reached else curve[-1][2],
              "val_dice": reached[1] if reached else curve[-1][1], "peak_rss_gib": round(peak_rss_bytes() / 2**30, 2),
              "collapses": trainer.recoveries, "curve": curve, "paper": PAPER}
    write_result("time_to_quality", result)
    update_readme(result)
    print(result)


def validation_region():  # -> RegionData
    import numpy as np

    from gigapath_desktop.slides import Region, open_slide
    from gigapath_desktop.slides.synthetic import make_slide, mask_path_for
    from gigapath_desktop.training import RegionData

    path = WORK / "time_to_quality_val.tif"
    if not path.exists():
        make_slide(path, 4096, 4096, seed=SEED + 1)
    region = Region(0, 0, 4096, 4096)
    with open_slide(path) as slide, open_slide(mask_path_for(path)) as mask:
        return RegionData(slide.read_region(region), (mask.read_region(region)[..., 0] > 127).astype(np.uint8),
                          name="another slide, 16 MP")


def update_readme(result: dict) -> None:
    m = machine()
    ours = (f"| this app, default recipe, {m['cpus']} CPU cores | {result['steps']} | "
            f"{result['seconds'] / 3600:.2f} h | {result['val_dice']:.4f}"
            f"{'' if result['reached'] else ' (target not reached)'} | {result['peak_rss_gib']} GiB |")
    rows = ["| who | steps | wall time | validation Dice | memory |", "|---|---|---|---|---|", ours,
            f"| 2023 study, M1 Ultra GPU, TensorFlow whole-image | {PAPER['steps']} | 111 h 24 min | "
            f"{PAPER['dice']} ± 0.005 | > 100 GB |"]
    line = (f"Measured {time.strftime('%Y-%m-%d')}: training on the 1.024 GP region of the synthetic slide "
            f"(bench_training.py), validating every step on 16 MP of another synthetic slide, until Dice >= {TARGET}.")
    block = "\n".join([line, "", *rows])
    replace_readme_block("ttq", block)


if __name__ == "__main__":
    main()
