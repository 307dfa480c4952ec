"""Training speed and memory, tiled vs whole-region vs a naive full-resolution TensorFlow U-Net, in one run.

Regions of 16 MP, 64 MP, 256 MP and 1.024 GP (16000 x 64000) come from one synthetic gigapixel slide, decoded once
into the region cache; labels are the generator's exact truth. Each measurement runs in a fresh process so its peak
RSS is its own. A quality run trains on one 16 MP region and reports validation Dice on another.

Writes benchmarks/results/training.json and training.png, and the table between the markers in README.md.
Usage: python benchmarks/bench_training.py [--quick]      (--quick: 16 and 64 MP only, for a smoke test)
       python benchmarks/bench_training.py --calibrate [--fold 2]     (the planner's constants for a pixel fold)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import RESULTS, machine, peak_rss_bytes, replace_readme_block, write_result  # noqa: E402
from gigapath_desktop.training.config import TrainConfig  # noqa: E402  (TensorFlow-free)

HERE = Path(__file__).resolve().parent
WORK = HERE / "out"
SLIDE_SHAPE = (16000, 64000)  # rows, columns: the 1.024 GP region of the 2023 study
SIZES = {"16 MP": (4000, 4000), "64 MP": (8000, 8000), "256 MP": (16000, 16000), "1.024 GP": (16000, 64000)}
SEED = 21
TILE = 2048
MAX_RSS_GIB = 18.0
REPEATS = 3
MODES = ("tiled", "whole", "naive-fullres", "naive-highstride")  # whole-region runs predicted to need more are skipped on this 24 GiB machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--plans", metavar="SIZES", help="time each plan mode (tile 2048, auto at 1, 3 and 8 GiB) at "
                                                        "these sizes, e.g. '16 MP,256 MP'; README table 'plans'")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure the step planner's constants (training/plan.py, Calibration) on this machine")
    parser.add_argument("--fold", type=int, default=TrainConfig.fold,
                        help="the model's pixel fold for --one and --calibrate (default: TrainConfig's)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, fold=args.fold)))
        return
    if args.calibrate:
        prepare(["16 MP"])
        print(json.dumps(calibrate(args.fold), indent=1))
        return
    if args.plans:
        run_plans(args.plans.split(","))
        return
    sizes = list(SIZES)[:2] if args.quick else list(SIZES)
    prepare(sizes)
    rows = []
    for size in sizes:
        for mode in MODES:
            row = predicted_skip(rows, mode, size) or run_one(mode, size)
            rows.append(row)
            print(format_row(row), flush=True)
    quality = run_quality()
    result = {"tile": TILE, "rows": rows, "quality": quality, "summary": summary(rows)}
    path = write_result("training", result)
    plot(rows, RESULTS / "training.png")
    update_readme(rows, quality, result["summary"])
    print(f"wrote {path}, {RESULTS / 'training.png'} and the README table")


# --- data ------------------------------------------------------------------------------------------------------
def prepare(sizes: list[str]) -> None:
    """Synthetic slide (once), then each region's pixels (region cache) and exact labels (DiskArray)."""
    from gigapath_desktop.slides import ArrayCache, Region, cached_region, open_slide
    from gigapath_desktop.slides.synthetic import make_slide

    WORK.mkdir(exist_ok=True)
    slide_path = WORK / "bench_slide.tif"
    if not slide_path.exists():
        start = time.perf_counter()
        make_slide(slide_path, SLIDE_SHAPE[1], SLIDE_SHAPE[0], seed=SEED)
        print(f"synthetic slide written in {time.perf_counter() - start:.0f} s", flush=True)
    cache = ArrayCache(WORK / "cache")
    with open_slide(slide_path) as slide:
        for name in sizes + ["quality-val"]:
            h, w = region_shape(name)
            y, x = region_origin(name)
            start = time.perf_counter()
            cached_region(slide, Region(x, y, w, h), cache)
            labels_for(name)
            print(f"{name}: region cached in {time.perf_counter() - start:.0f} s", flush=True)


def region_shape(name: str) -> tuple[int, int]:
    return SIZES.get(name, (4000, 4000))


def region_origin(name: str) -> tuple[int, int]:
    return (8000, 40000) if name == "quality-val" else (0, 0)


def load(name: str):  # -> RegionData
    from gigapath_desktop.slides import ArrayCache, Region, cached_region, open_slide
    from gigapath_desktop.training import RegionData

    h, w = region_shape(name)
    y, x = region_origin(name)
    with open_slide(WORK / "bench_slide.tif") as slide:
        image = cached_region(slide, Region(x, y, w, h), ArrayCache(WORK / "cache"))
    return RegionData(image, labels_for(name), name)


def labels_for(name: str):  # -> DiskArray
    """The generator's exact tissue truth for the region, written once in row strips."""
    import numpy as np

    from gigapath_desktop.slides.diskarray import DiskArray
    from gigapath_desktop.slides.synthetic import SyntheticField

    path = WORK / f"labels-{name.replace(' ', '').replace('.', '')}.npy"
    h, w = region_shape(name)
    if not path.exists():
        y0, x0 = region_origin(name)
        field = SyntheticField.create(SLIDE_SHAPE[1], SLIDE_SHAPE[0], seed=SEED)
        out = DiskArray.create(path.with_suffix(".partial"), (h, w), np.uint8)
        for r in range(0, h, 1024):
            rows = np.arange(y0 + r, y0 + min(h, r + 1024)) + 0.5
            out[r : r + len(rows)] = field.tissue(rows, np.arange(x0, x0 + w) + 0.5).astype(np.uint8)
        out.close()
        path.with_suffix(".partial").rename(path)
    return DiskArray(path)


# --- one measurement, in its own process -------------------------------------------------------------------------
def run_one(mode: str, size: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", mode, size], capture_output=True, text=True)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"mode": mode, "size": size, "error": tail[0][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(mode: str, size: str, fold: int) -> dict:
    import keras
    import numpy as np

    from gigapath_desktop.model import build_unet
    from gigapath_desktop.training import region_gradients

    data = load(size)
    keras.utils.set_random_seed(0)
    if mode.startswith("naive"):
        step = naive_step(data, mode)
    else:
        model = build_unet(block=fold)
        tile = TILE if mode == "tiled" else plan_tile(mode, data.labels.shape)
        warm = np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256), np.uint8)
        region_gradients(model, *warm, tile=tile)  # trace once on something small

        def step() -> None:
            region_gradients(model, data.image, data.labels, tile=tile)
    if mode.startswith("naive") or data.pixels <= 64e6:
        step()  # the naive and whole graphs trace per shape: warm up on the real one
    times = []
    many = data.pixels <= (64e6 if mode.startswith("auto") else 256e6)
    for _ in range(REPEATS if many else 1):  # median of a few: this machine is shared and noisy
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return {"mode": mode, "size": size, "pixels": data.pixels, "seconds": round(seconds, 2),
            "mpix_per_s": round(data.pixels / 1e6 / seconds, 2), "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3)}


PLAN_MODES = ("tiled", "auto 1 GiB", "auto 3 GiB", "auto 8 GiB")  # tiled: the fixed tile 2048 of earlier versions


def plan_tile(mode: str, shape: tuple[int, int]) -> int | None:
    """The tile of a mode: 'whole' -> None, 'auto B GiB' -> the planner's choice for budget B."""
    from gigapath_desktop.training.plan import step_tile

    return step_tile("auto", shape, float(mode.split()[1])) if mode.startswith("auto") else None


def run_plans(sizes: list[str]) -> list[dict]:
    """Each plan mode at each size, each in a process of its own (its peak RSS), in one run; the README table."""
    from gigapath_desktop.training.plan import GIB, plan_step

    prepare(sizes)
    rows = []
    for size in sizes:
        for mode in PLAN_MODES + ("pytorch",):
            row = peer_row(size) if mode == "pytorch" else run_one(mode, size)
            if mode.startswith("auto"):
                h, w = SIZES[size]
                row["plan"] = plan_step(h, w, float(mode.split()[1]) * GIB).describe().split(": ", 1)[1]
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} in one run on {machine()['cpus']} CPU cores; one step each "
             f"(median of {REPEATS} up to 64 MP); `tiled` is the fixed tile 2048 of earlier versions; `pytorch` is "
             "the peer, a plain PyTorch CPU whole-image step of the same U-Net (`benchmarks/torch_peer.py`).", "",
             "| region | plan | seconds | MP/s | peak RSS (GiB) | planned as |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['mode']} | {r.get('seconds', '–')} | {r.get('mpix_per_s', '–')} | "
                     f"{r.get('peak_rss_gib', r.get('error', '–'))} | {r.get('plan', 'tiles of 2048 px')} |")
    replace_readme_block("plans", "\n".join(lines))
    write_result("plans", {"rows": rows})
    return rows


PEER_BYTES_PER_PIXEL = 80  # the PyTorch whole-image step's peak, measured at 16 MP (1.16 GiB)


def peer_row(size: str) -> dict:
    """The PyTorch peer at `size` in a process of its own, when PyTorch is installed and the step fits here."""
    h, w = SIZES[size]
    row = {"mode": "pytorch", "size": size, "plan": "one tensor, autodiff (PyTorch)"}
    if h * w * PEER_BYTES_PER_PIXEL > MAX_RSS_GIB * 2**30:
        return {**row, "error": f"needs ~{h * w * PEER_BYTES_PER_PIXEL / 2**30:.0f} GiB"}
    out = subprocess.run([sys.executable, str(HERE / "torch_peer.py"), str(h), str(w)], capture_output=True, text=True)
    if out.returncode != 0:
        return {**row, "error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    return {**row, "pixels": h * w, "seconds": round(peer["seconds"], 2), "mpix_per_s": round(peer["mp_per_s"], 2),
            "peak_rss_gib": round(peer["peak_rss_gib"], 3)}


def calibrate(fold: int) -> dict:
    """Seconds per step of the 16 MP region with tiles of 1024 to 4032 px and as one tensor, in one process (time
    only; peak memory per input pixel comes from the 'tiled' and 'whole' rows), fitted to the planner's model:
    input pixels per second = rate * (2048 / input side) ** exponent, the one-tensor plan `whole_speedup` faster."""
    import keras
    import numpy as np

    from gigapath_desktop.model import build_unet
    from gigapath_desktop.training import region_step
    from gigapath_desktop.training.plan import CALIBRATIONS, estimate

    data = load("16 MP")
    keras.utils.set_random_seed(0)
    model = build_unet(block=fold)
    h, w = data.labels.shape
    rows = []
    for tile in (1024, 2048, 3072, 4032, None):
        region_step(model, data.image, data.labels, tile=tile)  # trace and warm up
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            region_step(model, data.image, data.labels, tile=tile)
            times.append(time.perf_counter() - start)
        plan = estimate(h, w, tile, fold=fold)
        side = (min(tile, max(h, w)) + 2 * CALIBRATIONS[fold].halo) if tile else plan.input_pixels ** 0.5
        rows.append({"tile": tile, "seconds": round(float(np.median(times)), 3), "input_side": round(side),
                     "input_mpix_per_s": round(plan.input_pixels / 1e6 / float(np.median(times)), 2)})
    tiled = [r for r in rows if r["tile"]]
    slope, intercept = np.polyfit(np.log([r["input_side"] / 2048 for r in tiled]),
                                  np.log([r["input_mpix_per_s"] for r in tiled]), 1)
    whole = rows[-1]
    at_side = np.exp(intercept) * (whole["input_side"] / 2048) ** slope
    return {"rows": rows, "tiled_rate": round(float(np.exp(intercept)) * 1e6), "size_exponent": round(-float(slope), 2),
            "whole_speedup": round(whole["input_mpix_per_s"] / float(at_side), 2)}


def naive_step(data, mode: str):  # -> Callable[[], None]
    """The usual whole-image approach, one tensor, 'same' padding, ~4.5k parameters, in two designs:
    `naive-fullres`, a conventional U-Net (3x3 convolutions from full resolution, pooling by 2; 4.3k parameters), and
    `naive-highstride`, large kernels with stride 4 from the first layer, like the 2023 gigapixel study's network
    (4.9k parameters)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import layers

    def conv(filters: int, kernel: int, **kw: object):  # noqa: ANN202
        return layers.Conv2D(filters, kernel, padding="same", activation="relu", **kw)

    inputs = keras.Input((None, None, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    if mode == "naive-fullres":
        e1 = conv(8, 3)(x)
        e2 = conv(8, 3)(layers.MaxPooling2D(2)(e1))
        e3 = conv(12, 3)(layers.MaxPooling2D(2)(e2))
        d2 = conv(8, 3)(layers.Concatenate()([layers.UpSampling2D(2)(e3), e2]))
        d1 = conv(8, 3)(layers.Concatenate()([layers.UpSampling2D(2)(d2), e1]))
        outputs = layers.Conv2D(1, 1)(d1)
    else:
        e1 = conv(8, 5, strides=4)(x)
        b = conv(8, 3)(conv(8, 5, strides=4)(e1))
        d2 = layers.Concatenate()([layers.Conv2DTranspose(8, 4, strides=4, padding="same", activation="relu")(b), e1])
        d1 = layers.Concatenate()([layers.Conv2DTranspose(4, 4, strides=4, padding="same", activation="relu")(d2), x])
        outputs = layers.Conv2D(1, 3, padding="same")(d1)
    model = keras.Model(inputs, outputs)
    print(f"{mode}: {model.count_params()} parameters", file=sys.stderr)
    image = tf.constant(np.asarray(data.image)[None], tf.float32)
    labels = tf.constant(np.asarray(data.labels)[None, ..., None], tf.float32)
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def train() -> None:
        with tf.GradientTape() as tape:
            z = model(image, training=True)
            p = tf.sigmoid(z)
            dice = (2 * tf.reduce_sum(p * labels) + 1) / (tf.reduce_sum(p) + tf.reduce_sum(labels) + 1)
            loss = 1 - dice + tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=z))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    return train


def predicted_skip(rows: list[dict], mode: str, size: str) -> dict | None:
    """Skip whole-image runs whose memory, extrapolated from the smaller run, would not fit."""
    if mode == "tiled":
        return None
    h, w = SIZES[size]
    done = [r for r in rows if r["mode"] == mode and "peak_rss_gib" in r]
    if not done:
        return None
    per_pixel = done[-1]["peak_rss_gib"] / done[-1]["pixels"]
    need = per_pixel * h * w
    if need <= MAX_RSS_GIB:
        return None
    return {"mode": mode, "size": size, "pixels": h * w, "skipped": f"needs ~{need:.0f} GiB (extrapolated)"}


def run_quality() -> dict:
    """Train on one 16 MP region, report Dice on another region of the same gigapixel slide."""
    out = subprocess.run([sys.executable, __file__, "--one", "quality", "16 MP"], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def quality() -> dict:
    from gigapath_desktop.model import build_unet
    from gigapath_desktop.training import TrainConfig, Trainer, region_sums
    import keras

    keras.utils.set_random_seed(0)
    train, val = load("16 MP"), load("quality-val")
    trainer = Trainer(build_unet(), [train], None, TrainConfig(steps=80, tile=TILE))
    start = time.perf_counter()
    history = trainer.run()
    dice = region_sums(trainer.model, val.image, val.labels, tile=TILE).dice
    return {"steps": len(history), "train_dice": round(history[-1].dice, 4), "val_dice": round(dice, 4),
            "train_region": "4000 x 4000 at (0, 0)", "val_region": "4000 x 4000 at (40000, 8000)",
            "seconds": round(time.perf_counter() - start, 1)}


# --- reporting -----------------------------------------------------------------------------------------------------
def summary(rows: list[dict]) -> dict:
    def get(mode: str, size: str) -> dict:
        return next((r for r in rows if r["mode"] == mode and r["size"] == size), {})

    tiled = [r for r in rows if r["mode"] == "tiled" and "peak_rss_gib" in r]
    rss = [r["peak_rss_gib"] for r in tiled]
    def speedup(naive: str) -> float | None:
        base = get(naive, "16 MP").get("mpix_per_s")
        return round(get("tiled", "16 MP")["mpix_per_s"] / base, 2) if base else None

    big = get("tiled", "1.024 GP")
    return {
        "tiled_rss_spread": round(max(rss) / min(rss) - 1, 3) if rss else None,
        "tiled_mpix_per_s_at_largest": tiled[-1]["mpix_per_s"] if tiled else None,
        "speedup_vs_naive_fullres_16mp": speedup("naive-fullres"),
        "speedup_vs_naive_highstride_16mp": speedup("naive-highstride"),
        "gigapixel_step_seconds": big.get("seconds"),
        "gigapixel_peak_rss_gib": big.get("peak_rss_gib"),
    }


def format_row(row: dict) -> str:
    if "seconds" in row:
        return (f"| {row['size']} | {row['mode']} | {row['seconds']:.1f} | {row['mpix_per_s']:.1f} | "
                f"{row['peak_rss_gib']:.2f} |")
    return f"| {row['size']} | {row['mode']} | – | – | {row.get('skipped') or row.get('error')} |"


def update_readme(rows: list[dict], quality: dict, summary: dict) -> None:
    m = machine()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {m['cpus']} CPU cores, {m['memory_gib']} GiB, {m['platform']} "
        f"(no GPU), tile {TILE} px; median of {REPEATS} steps up to 256 MP, one step at 1.024 GP. `tiled`: this engine; "
        "`whole`: the same model on the region as one tensor; `naive-fullres`: a conventional 4.3k-parameter U-Net "
        "(3x3 convolutions from full resolution) trained on the whole region in TensorFlow; `naive-highstride`: a "
        "4.9k-parameter U-Net with stride-4 large kernels from the first layer, likewise.",
        "",
        "| region | mode | s/step | MP/s | peak RSS (GiB) |",
        "|---|---|---|---|---|",
        *(format_row(r) for r in rows),
        "",
        f"Tiled peak RSS spread across sizes: {summary['tiled_rss_spread']:.1%}; tiled vs naive throughput at 16 MP: "
        f"{summary['speedup_vs_naive_fullres_16mp']}x the full-resolution baseline, "
        f"{summary['speedup_vs_naive_highstride_16mp']}x the high-stride one. Quality: after {quality.get('steps')} steps on one 16 MP region, "
        f"validation Dice on another region of the gigapixel slide = {quality.get('val_dice')} "
        f"(train Dice {quality.get('train_dice')}).",
    ]
    replace_readme_block("training", "\n".join(lines))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, marker in zip(MODES, "os^v"):
        done = [r for r in rows if r["mode"] == mode and "seconds" in r]
        if done:
            mp = [r["pixels"] / 1e6 for r in done]
            ax1.plot(mp, [r["mpix_per_s"] for r in done], marker=marker, label=mode)
            ax2.plot(mp, [r["peak_rss_gib"] for r in done], marker=marker, label=mode)
    for ax, label in ((ax1, "throughput (MP/s)"), (ax2, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("region size (megapixels)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("One training step on a whole region (2 CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    if sys.argv[1:3] == ["--one", "quality"]:
        print(json.dumps(quality()))
    else:
        main()
