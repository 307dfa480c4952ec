"""Issue 8's acceptance command as a new user runs it, on fresh realistic slides of several seeds.

For each seed: `make-slide --realistic` writes an 8192 x 6144 slide (real H&E texture, stain variation, holes, fat,
folds, pen, dust, bubbles, JPEG; no µm/px recorded) with its truth as GeoJSON; then, through the command line with
no flag beyond these,

    gigapath-desktop train SLIDE --region 0,0,4096,6144 --labels truth.geojson --steps 150 --out RUN
    gigapath-desktop predict SLIDE --model RUN/model.keras --region 4096,0,4096,6144 --binary --out MASK

and the right half's mask, read back by OpenSlide, is scored against the slide's exact truth. Each command is its own
process (its output in benchmarks/out/first_run/seed-N/COMMAND.log); peak memory is the training process's
high-water mark.

Writes benchmarks/results/first_run.json and the table between the markers in README.md.
    python benchmarks/bench_first_run.py [--seeds 0,1,2,3]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, high_water_mark, machine, write_readme_table, write_result  # noqa: E402

WORK = Path(__file__).resolve().parent / "out" / "first_run"
WIDTH, HEIGHT = 8192, 6144
TRAIN, HELD_OUT = "0,0,4096,6144", "4096,0,4096,6144"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3")
    args = parser.parse_args()
    path = RESULTS / "first_run.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    for seed in (int(s) for s in args.seeds.split(",")):
        result = run(seed)
        print(json.dumps(result), flush=True)
        runs = sorted([r for r in runs if r["seed"] != seed] + [result], key=lambda r: r["seed"])
        write_result("first_run", {"width": WIDTH, "height": HEIGHT, "runs": runs})
    update_readme(runs)


def run(seed: int) -> dict:
    folder = WORK / f"seed-{seed}"
    shutil.rmtree(folder, ignore_errors=True)  # a fresh start: `train --out` refuses a folder holding a run
    folder.mkdir(parents=True)
    slide, truth, model, mask = (folder / name for name in ("slide.tif", "truth.geojson", "run", "mask.tif"))
    cli(folder, "make-slide", "--width", WIDTH, "--height", HEIGHT, "--seed", seed, "--realistic", "--geojson", truth,
        slide)
    start = time.perf_counter()
    peak = cli(folder, "train", slide, "--region", TRAIN, "--labels", truth, "--steps", 150, "--out", model)
    trained = time.perf_counter()
    cli(folder, "predict", slide, "--model", model / "model.keras", "--region", HELD_OUT, "--binary", "--out", mask)
    predicted = time.perf_counter()
    return {"seed": seed, "held_out_dice": round(held_out_dice(slide, mask), 4),
            "train_seconds": round(trained - start), "predict_seconds": round(predicted - trained),
            "train_peak_gib": round(peak / 2**30, 2)}


def cli(folder: Path, *args: object) -> int:
    """Run one gigapath-desktop command in its own process (its output to FOLDER/COMMAND.log); its peak resident
    size (Linux: the kernel's high-water mark, read until it exits; elsewhere the resident size, sampled)."""
    log = folder / f"{args[0]}.log"
    with log.open("w") as out:
        process = psutil.Popen([sys.executable, "-m", "gigapath_desktop", *map(str, args)], stdout=out, stderr=out)
        peak = 0
        while process.poll() is None:
            with contextlib.suppress(psutil.Error, OSError):
                sample = high_water_mark(process.pid) if sys.platform == "linux" else process.memory_info().rss
                peak = max(peak, sample or 0)
            time.sleep(0.2)
    if process.wait() != 0:
        raise SystemExit(f"gigapath-desktop {' '.join(map(str, args))} failed:\n{log.read_text()[-3000:]}")
    return peak


def held_out_dice(slide: Path, mask: Path) -> float:
    """Dice of the predicted mask against the slide's truth on the held-out half, both read back by OpenSlide."""
    import numpy as np

    from gigapath_desktop.slides import Region, open_slide
    from gigapath_desktop.slides.synthetic import mask_path_for

    region = Region.parse(HELD_OUT)
    with open_slide(mask) as predicted, open_slide(mask_path_for(slide)) as truth:
        p = predicted.read_region(region)[..., 0] > 127
        t = truth.read_region(region)[..., 0] > 127
    return float(2 * np.sum(p & t) / (np.sum(p) + np.sum(t)))


def update_readme(runs: list[dict]) -> None:
    rows = [[r["seed"], f"{r['held_out_dice']:.4f}", f"{r['train_seconds'] / 60:.1f} min", f"{r['predict_seconds']} s",
             f"{r['train_peak_gib']:.1f} GiB"] for r in runs]
    summary = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()['cpus']} CPU cores: `make-slide --realistic` "
               f"{WIDTH} x {HEIGHT}, `train` on the left half with `--steps 150` and nothing else, `predict` the right "
               f"half; times are wall times of each process, start-up and region decoding included.")
    write_readme_table("first-run", summary, ["slide seed", "held-out Dice", "training", "prediction",
                                              "training peak memory"], rows)


if __name__ == "__main__":
    main()
