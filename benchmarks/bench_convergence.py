"""Convergence suite: does the default recipe learn on realistic slides, every case and every seed?

Each case is a realistic slide (`slides.realistic`: real H&E or DAPI texture cut from the test slides, stain and
scanner variation, holes, strands, fat, folds, pen, dust, bubbles, blur, JPEG) of 8192 x 4096 px with exact truth,
plus one case of real slides (train on the TCGA frozen section, validate on the CMU skin slide, labels from tissue
detection, checked by eye), plus two 3-class cases (background and two tissue textures, the CMU skin's and the
TCGA frozen section's): one with dense truth, one labelled only by STROKES brush strokes per class (sparse: the
rest of the training half is unlabelled), both validated on the dense truth of the other half (mean Dice over the
classes; per-class Dice in the JSON). Per case x seed: train with the defaults a user gets (`TrainConfig()`, 150 steps) on
the left half (16.8 MP), validate every 5 steps on the right half, and report the final validation Dice (of the
mask `predict` writes with its defaults, small holes filled; the model's own beside it), the steps to 0.97 and 0.99
(the model's own, along the way), seconds, and collapses (guard restarts). Each run is its own process.

Writes benchmarks/results/convergence.json and the table between the markers in README.md; keeps each run's final
model under benchmarks/out/convergence/models/. `--fold 2` trains models of another pixel fold than the default
(`TrainConfig.fold`) and writes convergence-fold2.json and the README's convergence-fold2 table instead.
    python benchmarks/bench_convergence.py [--cases "a;b"] [--seeds 0,1,2] [--fold F] [--rescore]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import RESULTS, machine, replace_readme_block, run_child, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT.parent / "shared" / "testdata" / "slides"
WORK = Path(__file__).resolve().parent / "out" / "convergence"
MODELS = WORK / "models"  # each run's final model
HE = (str(TESTDATA / "CMU-1-Small-Region.svs"), str(TESTDATA / "TCGA-CR-7395-01A-01-TS1-crop.svs"))
DAPI = (str(TESTDATA / "test3-DAPI-2-387.ndpi"),)
STEPS = 150
SYNTHETIC_MPP = 0.5  # µm/px of the synthetic slides (their texture is cut from CMU at 0.499 and TCGA at level 0)
VALIDATE_EVERY = 5


def cases() -> dict:
    from gigapath_desktop.slides.realistic import Case

    size = dict(width=8192, height=4096)
    return {
        "typical": Case("typical", **size, sources=HE),
        "sparse 5%": Case("sparse 5%", **size, tissue_fraction=0.05, island_scale=350, dust=200, pens=2, sources=HE),
        "dense 70%": Case("dense 70%", **size, tissue_fraction=0.7, lumens=8, fat=2, sources=HE),
        "thin strands": Case("thin strands", **size, tissue_fraction=0.12, island_scale=500, strands=8, sources=HE),
        "pale, strong stain shift": Case("pale, strong stain shift", **size, density=0.45, stain_jitter=0.5,
                                         sources=HE),
        "artefacts": Case("artefacts", **size, pens=3, bubbles=3, folds=2, dust=250, fibres=8, blur=3.0,
                          jpeg_quality=60, sources=HE),
        "frozen section": Case("frozen section", **size, tissue_fraction=0.5, stain_jitter=0.4, fat=0,
                               sources=HE[1:]),
        "fluorescence": Case("fluorescence", **size, modality="fluorescence", tissue_fraction=0.4, sources=DAPI),
        "real slides": None,
        "3 classes, dense": Case("3 classes, dense", **size, classes=3, tissue_fraction=0.45, sources=HE),
        "3 classes, sparse strokes": Case("3 classes, sparse strokes", **size, classes=3, tissue_fraction=0.45,
                                          sources=HE),
    }


STROKE_LABELLED = {"3 classes, sparse strokes"}  # trained on brush strokes; every other case on its dense truth
STROKES = 40  # per class, on the training half of a STROKE_LABELLED case (about a tenth of its pixels labelled)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", help="case names separated by ';' (names may hold commas; default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fold", type=int, default=default_fold(), help="the model's pixel fold (TrainConfig.fold)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs at a time (one TensorFlow process each; 2 on 2 cores was slower than 1)")
    parser.add_argument("--rescore", action="store_true",
                        help="score the kept models of these runs again (as `predict` writes their masks today)")
    args = parser.parse_args()
    names = args.cases.split(";") if args.cases else list(cases())
    jobs = [(name, int(seed), args.fold) for name in names for seed in args.seeds.split(",")]
    path = RESULTS / f"{results_name(args.fold)}.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    if args.rescore:
        before = {(r["case"], r["seed"]): r for r in runs}
        jobs = [(json.dumps(before[job[:2]]),) for job in jobs if job[:2] in before]
    with ThreadPoolExecutor(args.parallel) as pool:
        for result in pool.map(lambda job: run_child(__file__, *job), jobs):
            print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
            runs = [r for r in runs if (r["case"], r["seed"]) != (result["case"], result["seed"])] + [result]
            write_result(results_name(args.fold), {"steps": STEPS, "parallel": args.parallel, "runs": runs})
    update_readme(runs, args.parallel, args.fold)


def default_fold() -> int:
    from gigapath_desktop.training.config import TrainConfig

    return TrainConfig().fold


def results_name(fold: int) -> str:
    """The results file's and README table's name: runs of another fold than the default are kept apart."""
    return "convergence" if fold == default_fold() else f"convergence-fold{fold}"


def run(name: str, seed: int | None = None, fold: int | None = None) -> dict:
    """One case x seed trained and scored; `name` alone: a run's JSON, its kept model scored again."""
    if seed is None:
        result = json.loads(name)
        _, val = regions(result["case"], result["seed"])
        path = model_path(result["case"], result["seed"], result.get("fold", default_fold()))
        return {**result, **scores(result["case"], result["seed"], val, path)}
    train, val = regions(name, seed)
    return fit(name, seed, train, val, model_path(name, seed, fold), fold)


def fit(name: str, seed: int, train: object, val: object, path: Path, fold: int) -> dict:
    """Train the case's model with the defaults on `train`, validating on `val` along the way; keep it at `path`
    (for error maps and re-scoring without re-training) and score it."""
    import keras
    import numpy as np

    from gigapath_desktop.annotations import UNLABELLED
    from gigapath_desktop.model import build_unet
    from gigapath_desktop.training import StepEvent, TrainConfig, Trainer, WarningEvent

    case = cases()[name]
    keras.utils.set_random_seed(seed)
    config = TrainConfig(steps=STEPS, seed=seed, validate_every=VALIDATE_EVERY, fold=fold)  # tile "auto", as users get
    events: list = []
    model = build_unet(classes=case.classes if case else 2, block=config.fold)
    trainer = Trainer(model, [train], val, config, listeners=[events.append])
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    curve = [(e.step, e.val_dice) for e in events if isinstance(e, StepEvent) and e.val_dice is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.model.save(path)

    def first(target: float) -> int | None:
        return next((step for step, dice in curve if dice >= target), None)

    return {"case": name, "seed": seed, "fold": config.fold, **scores(name, seed, val, path),
            "steps_to_0.97": first(0.97),
            "steps_to_0.99": first(0.99), "seconds": round(seconds, 1), "collapses": trainer.recoveries,
            "guard": [e.message for e in events if isinstance(e, WarningEvent) and "restarted" in e.message],
            "train_pixels": train.pixels, "val_pixels": val.pixels,
            "labelled_fraction": round(float(np.mean(np.asarray(train.labels) != UNLABELLED)), 3),
            "curve": [(s, round(d, 4)) for s, d in curve]}


def model_path(name: str, seed: int, fold: int) -> Path:
    suffix = "" if fold == default_fold() else f"-fold{fold}"
    return MODELS / f"{slug(name)}-{seed}{suffix}.keras"


def scores(name: str, seed: int, val: object, path: Path) -> dict:
    """The kept model's validation Dice: `model_dice` of its own output at 0.5 (per class in `class_dice`), and
    `val_dice` of the mask `predict` writes with its defaults (small holes filled; the synthetic slides record no
    µm/px, so they are given SYNTHETIC_MPP as a user would give `--slide-mpp`)."""
    import tempfile

    import numpy as np
    import tifffile

    from gigapath_desktop.inference import PredictJob, run_predict_job
    from gigapath_desktop.model import load_model
    from gigapath_desktop.training.gradients import region_sums

    case = cases()[name]
    model = load_model(path)
    terms = region_sums(model, val.image, val.labels, tile=2048)
    shipped = terms.dice
    if case is None or case.classes == 2:
        slide, region = validation_region(name, seed)
        with tempfile.TemporaryDirectory() as folder:
            job = PredictJob(slide, path, Path(folder) / "mask.tif", region=region, binary=True,
                             slide_mpp=None if case is None else SYNTHETIC_MPP)
            run_predict_job(job, model=model)
            mask = tifffile.imread(job.out, key=0)[region.y : region.y + region.height, region.x : region.x + region.width]
        truth = np.asarray(val.labels) == 1
        shipped = 2 * np.count_nonzero((mask > 0) & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))
    return {"val_dice": round(float(shipped), 4), "model_dice": round(terms.dice, 4),
            "class_dice": [round(d, 4) for d in terms.class_dice.tolist()]}


def regions(name: str, seed: int) -> tuple:
    """(training, validation) regions of a case and seed."""
    return real_regions() if cases()[name] is None else synthetic_regions(name, seed)


def validation_region(name: str, seed: int) -> tuple:
    """(slide, region) validated on: the right half of the case's slide, or the whole CMU slide."""
    from gigapath_desktop.slides import Region, open_slide

    case = cases()[name]
    if case is None:
        with open_slide(HE[0]) as slide:
            return Path(HE[0]), Region(0, 0, *slide.dimensions)
    half = case.width // 2
    return WORK / f"{slug(name)}-{seed}.tif", Region(half, 0, case.width - half, case.height)


def slug(name: str) -> str:
    return name.replace(" ", "-").replace(",", "").replace("%", "")


def synthetic_regions(name: str, seed: int) -> tuple:
    """The case's slide for this seed (made once), left half to train, right half to validate."""
    from gigapath_desktop.slides import Region
    from gigapath_desktop.slides.realistic import make_realistic_slide

    case = cases()[name]
    slide, val_region = validation_region(name, seed)
    if not slide.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        make_realistic_slide(slide, case, seed=seed)
    train = truth_region(slide, Region(0, 0, val_region.x, case.height), case.classes)
    if name in STROKE_LABELLED:
        train = strokes_only(train, seed)
    return train, truth_region(slide, val_region, case.classes)


def truth_region(slide_path: Path, region: object, classes: int = 2) -> object:
    """The region with its exact truth: tissue {0, 1}, or class indices for more classes."""
    import numpy as np

    from gigapath_desktop.slides import open_slide
    from gigapath_desktop.slides.synthetic import mask_path_for
    from gigapath_desktop.training import RegionData

    with open_slide(slide_path) as slide, open_slide(mask_path_for(slide_path)) as mask:
        truth = mask.read_region(region)[..., 0]
        labels = (truth > 127).astype(np.uint8) if classes == 2 else truth.copy()
        return RegionData(slide.read_region(region), labels, name=f"{slide_path.name} {region.as_tuple()}")


def strokes_only(region: object, seed: int, per_class: int = STROKES) -> object:
    """The region labelled as a user with a brush would: `per_class` short strokes inside each class, the rest
    unlabelled."""
    import numpy as np

    from gigapath_desktop.annotations import UNLABELLED, ClassMap, rasterize
    from gigapath_desktop.slides.strokes import truth_strokes
    from gigapath_desktop.training import RegionData

    names = ["Background", "Class 1", "Class 2"]
    strokes = truth_strokes(np.asarray(region.labels), names, per_class, np.random.default_rng(seed))
    labels = rasterize(strokes, (0.0, 0.0), 1.0, region.labels.shape, values=ClassMap.named(names).values(strokes),
                       fill=UNLABELLED)
    return RegionData(region.image, labels, name=region.name)


def real_regions() -> tuple:
    """TCGA frozen section (train) and CMU skin (validate), whole level 0, labels by the detector's defaults, as a
    user's `--auto-labels` gets them. Checked by eye they follow the tissue, keep CMU's loose fragments and leave its
    empty cavities out (TCGA records no µm/px, so its labels keep the detector's 0.05 %-of-the-view rule)."""
    from gigapath_desktop.annotations import detect_tissue
    from gigapath_desktop.slides import Region, open_slide
    from gigapath_desktop.training import load_region

    regions = []
    for path in (HE[1], HE[0]):
        with open_slide(path) as slide:
            w, h = slide.dimensions
            regions.append(load_region(slide, Region(0, 0, w, h), detect_tissue(slide)))
    return tuple(regions)


def update_readme(runs: list[dict], parallel: int, fold: int) -> None:
    m = machine()
    rows = ["| case | seeds | final val Dice (each seed) | the model's own | steps to 0.97 | steps to 0.99 | s/run | "
            "collapses (guard restarts) |", "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["case"] for r in runs):
        mine = sorted((r for r in runs if r["case"] == name), key=lambda r: r["seed"])
        dice = ", ".join(f"{r['val_dice']:.4f}" for r in mine)
        own = ", ".join(f"{r['model_dice']:.4f}" for r in mine)
        to = lambda key: ", ".join("–" if r[key] is None else str(r[key]) for r in mine)  # noqa: E731
        rows.append(f"| {name} | {len(mine)} | {dice} | {own} | {to('steps_to_0.97')} | {to('steps_to_0.99')} | "
                    f"{statistics.mean(r['seconds'] for r in mine):.0f} | {sum(r['collapses'] for r in mine)} |")
    all_dice = [r["val_dice"] for r in runs]
    sharing = f" ({parallel} runs at a time, sharing the machine)" if parallel > 1 else ""
    settings = "the defaults (`TrainConfig()`, " if fold == default_fold() else f"the defaults but fold {fold} ("
    summary = (f"Measured {time.strftime('%Y-%m-%d')} on {m['cpus']} CPU cores{sharing} with {settings}"
               f"{STEPS} steps, validation every {VALIDATE_EVERY}; the final Dice is that of the mask `predict` writes "
               f"with its defaults, the model's own output at 0.5 beside it): {len(runs)} runs, minimum validation Dice "
               f"{min(all_dice):.4f}, median {statistics.median(all_dice):.4f}, "
               f"{sum(d >= 0.97 for d in all_dice)}/{len(runs)} at >= 0.97, "
               f"{sum(r['collapses'] for r in runs)} guard restarts.")
    block = "\n".join([summary, "", *rows])
    replace_readme_block(results_name(fold), block)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        print(json.dumps(run(sys.argv[2], *map(int, sys.argv[3:]))))
    else:
        main()
