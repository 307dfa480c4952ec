"""Whole-slide prediction + pyramidal TIFF write of the 1.024-gigapixel synthetic slide: seconds and peak RSS.

Uses the slide bench_training.py writes (benchmarks/out/bench_slide.tif, made here if missing) and a model trained
for 100 steps on a 16 MP region of it; checks the mask against the generator's truth (Dice, read back via OpenSlide).
Measured with the default clean-up of small holes and again without it (`--min-hole 0`), one process each, so their
ratio is what the clean-up costs on this machine that day.
Writes benchmarks/results/predict.json and the table between the markers in README.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_training import SEED, SLIDE_SHAPE, WORK, load, prepare  # noqa: E402
from common import machine, peak_rss_bytes, replace_readme_block, write_result  # noqa: E402


def main() -> None:
    prepare(["16 MP"])
    model = WORK / "predict-model.keras"
    if not model.exists():
        train(model)
    timing: dict = {}
    for min_hole in (0, None):  # None: the default
        out = subprocess.run([sys.executable, __file__, "--measure", str(model), str(min_hole)], capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        measured["dice_vs_truth"] = round(dice(WORK / "predicted.tif"), 4)
        (WORK / "predicted.tif").unlink()
        timing = {**measured, "without_cleanup": timing} if timing else measured
    path = write_result("predict", timing)
    update_readme(timing)
    print(json.dumps(timing), f"-> {path}")


def train(path: Path) -> None:
    import keras

    from gigapath_desktop.model import build_unet, save_model
    from gigapath_desktop.training import TrainConfig, Trainer

    keras.utils.set_random_seed(0)
    trainer = Trainer(build_unet(), [load("16 MP")], None, TrainConfig(steps=100))
    trainer.run()
    save_model(trainer.model, path)


def measure(model: str, min_hole: str) -> dict:
    from gigapath_desktop.inference import PredictJob, run_predict_job

    start = time.perf_counter()
    job = PredictJob(WORK / "bench_slide.tif", Path(model), WORK / "predicted.tif")
    result = run_predict_job(job if min_hole == "None" else replace(job, min_hole_um2=float(min_hole)))
    seconds = time.perf_counter() - start
    return {"pixels": result.pixels, "seconds": round(seconds, 1), "mpix_per_s": round(result.pixels / 1e6 / seconds, 1),
            "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3), "tiff_bytes": result.out.stat().st_size}


def dice(path: Path) -> float:
    import numpy as np

    from gigapath_desktop.slides import Region, open_slide
    from gigapath_desktop.slides.synthetic import SyntheticField

    field = SyntheticField.create(SLIDE_SHAPE[1], SLIDE_SHAPE[0], seed=SEED)
    both = predicted = truth = 0
    with open_slide(path) as mask:
        for y in range(0, SLIDE_SHAPE[0], 1000):
            p = mask.read_region(Region(0, y, SLIDE_SHAPE[1], 1000))[..., 0] >= 128
            t = field.tissue(np.arange(y, y + 1000) + 0.5, np.arange(SLIDE_SHAPE[1]) + 0.5)
            both, predicted, truth = both + (p & t).sum(), predicted + p.sum(), truth + t.sum()
    return 2 * both / (predicted + truth)


def update_readme(timing: dict) -> None:
    m = machine()
    line = (f"Whole-slide prediction of the 16000 x 64000 synthetic slide with pyramidal TIFF export, measured "
            f"{time.strftime('%Y-%m-%d')} on {m['cpus']} CPU cores: **{timing['seconds']} s** "
            f"({timing['mpix_per_s']} MP/s), peak RSS **{timing['peak_rss_gib']} GiB**, Dice against the generator's "
            f"truth {timing['dice_vs_truth']} (target: <= 60 s, <= 2 GiB). Of this, the clean-up of small holes "
            f"(default) costs {timing['seconds'] - timing['without_cleanup']['seconds']:.1f} s and "
            f"{timing['peak_rss_gib'] - timing['without_cleanup']['peak_rss_gib']:+.3f} GiB of peak RSS "
            f"(without it, measured just before: {timing['without_cleanup']['seconds']} s, "
            f"{timing['without_cleanup']['peak_rss_gib']} GiB, Dice {timing['without_cleanup']['dice_vs_truth']}).")
    replace_readme_block("predict", line)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
    else:
        main()
