"""Marker ink the training region never showed: how much held-out Dice a pen of another colour costs, with and
without the ink augmentation (`TrainConfig.ink`).

For each seed: the convergence suite's "typical" slide (8192 x 4096, one pen per 10 MP of the generator's colours),
trained on its left half with the defaults but without ink (`ink=0`), then with the default `ink=0.5`; each model
scores the right half as it is, and with two extra pen strokes of one marker colour drawn over it (black, blue,
green, red, purple; labels unchanged: ink over glass is background, tissue under ink stays tissue), one colour at a
time.

Writes benchmarks/results/unseen_ink.json and the table between the markers in README.md.
    python benchmarks/bench_unseen_ink.py [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, run_child, write_readme_table, write_result  # noqa: E402

CASE = "typical"
INK_CHANCES = (0.0, 0.5)
MARKERS = {"black": (25, 25, 30), "blue": (40, 80, 170), "green": (30, 120, 70), "red": (170, 30, 40),
           "purple": (90, 40, 120)}
STROKES = 2  # per colour, over the held-out half


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    runs = [run_child(__file__, seed, ink) for seed in map(int, args.seeds.split(",")) for ink in INK_CHANCES]
    for r in runs:
        print(json.dumps(r), flush=True)
    write_result("unseen_ink", {"case": CASE, "markers": MARKERS, "strokes": STROKES, "runs": runs})
    update_readme(runs)


def update_readme(runs: list[dict]) -> None:
    rows = [[r["ink"], r["seed"], f"{r['clean']:.4f}", *(f"{r['inked'][m]:.4f}" for m in MARKERS),
             f"{r['clean'] - min(r['inked'].values()):.4f}", round(r["seconds"])] for r in runs]
    mean = {ink: statistics.mean(min(r["inked"].values()) for r in runs if r["ink"] == ink) for ink in INK_CHANCES}
    summary = (f"Measured {time.strftime('%Y-%m-%d')} on {machine()['cpus']} CPU cores: the \"{CASE}\" case, "
               f"{STROKES} pen strokes of one colour drawn over the held-out half at a time; the worst colour's Dice, "
               f"mean over seeds: " + ", ".join(f"{mean[i]:.4f} with ink chance {i}" for i in INK_CHANCES) + ".")
    write_readme_table("unseen-ink", summary, ["ink chance", "seed", "held-out Dice", *MARKERS, "worst drop",
                                               "training s"], rows)


def run(seed: int, ink: float) -> dict:
    import keras
    import numpy as np

    import bench_convergence as bc
    from gigapath_desktop.model import build_unet
    from gigapath_desktop.slides.realistic import pen_strokes
    from gigapath_desktop.training import TrainConfig, Trainer
    from gigapath_desktop.training.gradients import region_sums
    from gigapath_desktop.training.plan import step_tile

    train, val = bc.synthetic_regions(CASE, seed)
    keras.utils.set_random_seed(seed)
    config = TrainConfig(steps=bc.STEPS, seed=seed, validate_every=bc.STEPS, ink=ink)
    trainer = Trainer(build_unet(), [train], val, config)
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    tile = step_tile(config.tile, val.labels.shape, config.memory_budget, fold=trainer.config.fold)

    def dice(image: np.ndarray) -> float:
        return round(float(region_sums(trainer.model, image, val.labels, tile=tile).dice), 4)

    image = np.asarray(val.image)
    inked = {}
    for k, (name, colour) in enumerate(MARKERS.items()):
        pixels = image.astype(np.float32)
        pen_strokes(pixels, STROKES, np.random.default_rng([seed, k]), inks=np.array([colour], np.float32))
        inked[name] = dice(np.clip(pixels, 0, 255).astype(np.uint8))
    return {"seed": seed, "ink": ink, "clean": dice(image), "inked": inked, "seconds": round(seconds, 1)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        print(json.dumps(run(int(sys.argv[2]), float(sys.argv[3]))))
    else:
        main()
