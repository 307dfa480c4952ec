"""Batch prediction throughput: slides per hour for 16 MP slides and for a 1.024-gigapixel slide.

`predict-batch`'s engine (`inference.batch.run_batch`: the model loaded once, a pyramidal TIFF mask, GeoJSON
contours and a PNG preview per slide, summary.csv) over 8 synthetic 4096 x 4096 slides, then over the 1.024 GP
synthetic slide of bench_training.py, with a model trained here for 60 steps on a 16 MP region of it (a real mask,
so the contours are what a user gets). Each batch runs in a process of its own (peak RSS per batch). Writes
benchmarks/results/batch.json and the README table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_training import SEED, SLIDE_SHAPE, WORK, load, prepare  # noqa: E402
from common import machine, peak_rss_bytes, replace_readme_block, write_result  # noqa: E402

SMALL = 8  # 16 MP slides in the first batch
SMALL_SIDE = 4096


def main() -> None:
    from gigapath_desktop.slides.synthetic import make_slide

    small = WORK / "batch-slides"
    small.mkdir(parents=True, exist_ok=True)
    if not (WORK / "bench_slide.tif").exists():  # the 1.024 GP slide bench_training.py uses
        make_slide(WORK / "bench_slide.tif", SLIDE_SHAPE[1], SLIDE_SHAPE[0], seed=SEED)
    for k in range(SMALL):
        if not (small / f"s{k}.tif").exists():
            make_slide(small / f"s{k}.tif", SMALL_SIDE, SMALL_SIDE, seed=100 + k)
    for mask in small.glob("*.mask.tif"):  # the generator's truth beside each slide is not a slide to predict
        mask.rename(mask.with_suffix(".truth"))
    model = WORK / "batch-model.keras"
    if not model.exists():
        train(model)
    rows = {}
    for name, slides in (("16 MP", sorted(small.glob("s*.tif"))), ("1.024 GP", [WORK / "bench_slide.tif"])):
        out = subprocess.run([sys.executable, __file__, "--measure", str(model), *map(str, slides)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    path = write_result("batch", rows)
    update_readme(rows)
    print(f"-> {path}")


def train(path: Path) -> None:
    import keras

    from gigapath_desktop.model import build_unet, save_model
    from gigapath_desktop.training import TrainConfig, Trainer

    prepare(["16 MP"])
    keras.utils.set_random_seed(0)
    trainer = Trainer(build_unet(), [load("16 MP")], None, TrainConfig(steps=60, augment=False))
    trainer.run()
    save_model(trainer.model, path)


def measure(model: str, slides: list[str]) -> dict:
    import shutil
    import tempfile

    from gigapath_desktop.inference.batch import BatchJob, run_batch

    out = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        start = time.perf_counter()
        rows = run_batch(BatchJob(Path(model), out, tuple(map(Path, slides)), geojson=True, png=True))
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(out)
    assert all(r.status == "ok" for r in rows), [r.message for r in rows]
    return {"slides": len(slides), "seconds": round(seconds, 1), "slides_per_hour": round(3600 * len(slides) / seconds, 1),
            "seconds_per_slide": [round(r.seconds, 1) for r in rows], "peak_rss_gib": round(peak_rss_bytes() / 2**30, 2)}


def update_readme(rows: dict) -> None:
    m = machine()
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {m['cpus']} CPU cores (no GPU), `predict-batch` with "
             f"`--geojson --png` (one model load per batch; seconds include writing every output):", "",
             "| slides | per batch | seconds | slides per hour | peak RSS (GiB) |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['slides']} | {r['seconds']} | {r['slides_per_hour']} | {r['peak_rss_gib']} |")
    replace_readme_block("batch", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], sys.argv[3:])))
    else:
        main()
