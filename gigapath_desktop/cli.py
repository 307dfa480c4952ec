"""`gigapath-desktop` command line: one subcommand per job; bad input ends in a one-line message and exit code 2."""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from tqdm import tqdm

from gigapath_desktop import __version__
from gigapath_desktop.annotations.tissue import MIN_AREA_UM2
from gigapath_desktop.cli_training import add_training_options, print_plans, run_settings, train_with_progress
from gigapath_desktop.errors import EXIT_RESUMABLE, GigaPathError, WorkerLost, os_error_text
from gigapath_desktop.mpp import check_option
from gigapath_desktop.outputs import check_output
from gigapath_desktop.project.commands import add_project_commands
from gigapath_desktop.remote.commands import add_commands, add_remote_options
from gigapath_desktop.signals import Terminated, stopped_by
from gigapath_desktop.tf_quiet import quiet_tensorflow_import

if TYPE_CHECKING:
    from gigapath_desktop.training.job import TrainJob

Command = Callable[[argparse.Namespace], int]
EXIT_WITH_PARENT = "GIGAPATH_EXIT_WITH_PARENT"  # a pid: when that process is gone, stop as on SIGTERM (server jobs)
MAX_SIDE = 1 << 20  # px: a slide side beyond any scanner's


class Parser(argparse.ArgumentParser):
    """argparse's parser with the CLI's one-line errors: a usage block before the message buries it. Subparsers
    (and theirs) are made of the parent's class, so every command gets it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    quiet_tensorflow_import()  # before a command loads TensorFlow
    parser = _parser()
    args = parser.parse_args(argv)
    command: Command = getattr(args, "command", cmd_gui)
    if command is not cmd_gui:  # the app handles its own shutdown
        signal.signal(signal.SIGTERM, _interrupt)
        if os.environ.get(EXIT_WITH_PARENT, "").isdigit():
            _exit_with(int(os.environ[EXIT_WITH_PARENT]))
    try:
        code = command(args)
        sys.stdout.flush()  # here, so a closed pipe (`| head -1`) is met below rather than at exit
        return code
    except BrokenPipeError:  # the reader has gone: nothing to say, and nobody to say it to (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except GigaPathError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RESUMABLE if isinstance(exc, WorkerLost) else 2
    except OSError as exc:  # a file system refusal the checks could not foresee (disk full, permissions, ...)
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def _exit_with(parent: int) -> None:
    """Stop (as on SIGTERM: a checkpoint is kept) once `parent` is gone, e.g. a job server killed with -9."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends a command like Ctrl-C: training keeps a checkpoint of its last whole step, outputs are removed."""
    raise stopped_by(signum)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gigapath-desktop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser("gui", help="open the desktop app (the default)")
    p.add_argument("slide", nargs="?", help="slide to open (default: the one the app closed with, else the bundled demo slide)")
    p.set_defaults(command=cmd_gui)

    p = sub.add_parser("info", help="print a slide's levels, resolution and properties")
    p.add_argument("slide")
    p.set_defaults(command=cmd_info)

    p = sub.add_parser("make-slide", help="write a synthetic pyramidal H&E-like TIFF and its tissue mask")
    p.add_argument("out", help="output .tif (the mask goes to OUT.mask.tif)")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mpp", type=float, default=0.5, help="microns per level-0 pixel written in the TIFF")
    p.add_argument("--realistic", action="store_true",
                   help="real H&E texture (from the demo slide), stain variation, holes, fat, folds, pen, dust, "
                        "bubbles and JPEG, built in memory (up to ~100 MP); no resolution recorded")
    p.add_argument("--geojson", help="also write the truth as QuPath GeoJSON label annotations (up to 200 MP)")
    p.set_defaults(command=cmd_make_slide)

    p = sub.add_parser("train", help="train the U-Net on a whole slide region (exact gradients, bounded memory)")
    p.add_argument("slide", nargs="?", help="slide file (omit with --demo or --spec)")
    p.add_argument("--demo", action="store_true", help="train on the bundled demo slide with detected tissue labels")
    p.add_argument("--spec", help="a training spec (JSON): regions of many slides with their labels, classes, "
                                  "mode; see the README")
    p.add_argument("--region", action="append",
                   help="X,Y,W,H in level-0 pixels; repeat for several regions (one per step, in a shuffled order)")
    p.add_argument("--level", type=int, default=0, help="pyramid level to train at (default 0)")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", help="GeoJSON label annotations of the model's classes (Tissue for the tissue "
                                         "model; QuPath or this app)")
    labels.add_argument("--auto-labels", action="store_true", help="label tissue by automatic detection")
    p.add_argument("--classes", help="train a K-class model: class names in label order, comma-separated, the first "
                                     "being what unlabelled area is in dense mode (e.g. Background,Tumor,Stroma); "
                                     "default: the tissue model (Background, Tissue; other label classes count as tissue)")
    p.add_argument("--mpp", type=float, help="train at this many µm per pixel (regions are read from the best pyramid "
                                             "level and area-resampled; prediction then reads any slide at it)")
    p.add_argument("--slide-mpp", type=float, help="the slide's own µm per level-0 pixel, for a slide that records "
                                                   "none (else --mpp falls back to its level, with a warning)")
    p.add_argument("--sparse", action="store_true",
                   help="pixels no label annotation covers are ignored (a few strokes per class are enough) instead "
                        "of being the first class")
    p.add_argument("--val-region", help="X,Y,W,H (level-0 pixels) to report validation Dice on")
    p.add_argument("--out", help="run folder for model.keras, config.json, metrics.csv (default runs/<time>)")
    add_training_options(p)
    add_remote_options(p)
    p.set_defaults(command=cmd_train)

    p = sub.add_parser("predict", help="predict a tissue mask and export it (pyramidal TIFF, PNG, GeoJSON)")
    p.add_argument("slide")
    p.add_argument("--model", required=True, help="a trained model, e.g. RUN_DIR/model.keras (with --remote: the "
                                                   "id of a finished training job on the server)")
    p.add_argument("--region", help="X,Y,W,H in level-0 pixels (default: the whole slide)")
    p.add_argument("--level", type=int, default=0, help="pyramid level to predict at (default 0; a model trained at "
                                                         "a µm/px reads a slide that records one at that µm/px)")
    p.add_argument("--out", required=True, help="output pyramidal TIFF mask")
    p.add_argument("--png", help="also write a PNG preview (the slide with the mask overlaid)")
    p.add_argument("--geojson", help="also write the mask's contours as QuPath GeoJSON")
    p.add_argument("--probabilities", help="also write each class's probability (x 255, one channel per class) as a "
                                           "pyramidal TIFF")
    p.add_argument("--slide-mpp", type=float, help="the slide's own µm per level-0 pixel, for a slide that records "
                                                   "none (a model trained at a µm/px then reads it at that scale)")
    add_predict_options(p)
    add_remote_options(p)
    p.set_defaults(command=cmd_predict)

    p = sub.add_parser("detect-tissue", help="detect tissue and write it as QuPath GeoJSON label annotations")
    p.add_argument("slide")
    p.add_argument("--out", required=True, help="output .geojson")
    p.set_defaults(command=cmd_detect_tissue)
    p = sub.add_parser("self-test", help="check this install: demo slide, OpenSlide, TensorFlow, a step, a prediction")
    p.set_defaults(command=cmd_self_test)
    add_project_commands(sub)
    add_commands(sub)
    return parser


PREDICT_TILE, PREVIEW_DOWNSAMPLE = 2048, 32.0


def add_predict_options(p: argparse.ArgumentParser) -> None:
    """The options of a prediction, shared by `predict` and `predict-batch` (checked by `check_predict_options`)."""
    p.add_argument("--downsample", type=float, default=PREVIEW_DOWNSAMPLE, help="PNG preview downsample (default 32)")
    p.add_argument("--threshold", type=float, default=0.5, help="tissue at or above this probability (default 0.5)")
    p.add_argument("--binary", action="store_true", help="write 0/255 at the threshold instead of probabilities")
    p.add_argument("--tile", type=int, default=PREDICT_TILE,
                   help="side in pixels of the squares the model predicts at a time (memory; the result is the same; "
                        "default 2048, at most 16384)")
    p.add_argument("--min-hole", type=float, default=MIN_AREA_UM2, metavar="UM2",
                   help=f"tissue models: gaps inside tissue under this area become tissue (default {MIN_AREA_UM2:g} "
                        "µm², as the tissue detector draws labels; 0 keeps every hole)")
    p.add_argument("--min-object", type=float, default=0.0, metavar="UM2",
                   help="tissue models: specks under this area become background (default 0: kept)")


def check_predict_options(args: argparse.Namespace) -> None:
    wrong = [f"{option} must {rule}, got {value:g}" for option, value, ok, rule in [
        ("--threshold", args.threshold, 1 / 255 <= args.threshold < 1, "lie in [1/255, 1)"),  # NaN fails every test
        ("--downsample", args.downsample, 1 <= args.downsample <= 1e6, "lie in [1, 1e6]"),
        ("--tile", args.tile, 64 <= args.tile <= 16384, "lie in [64, 16384]"),
    ] if not ok]
    if wrong:
        raise GigaPathError("; ".join(wrong))
    if not (0 <= args.min_hole < math.inf and 0 <= args.min_object < math.inf):
        raise GigaPathError(f"--min-hole and --min-object must be areas of 0 µm² or more, got {args.min_hole:g} and "
                            f"{args.min_object:g}")


NAMES = {"tif": ((".tif", ".tiff"), "a pyramidal TIFF"), "png": ((".png",), "a PNG image"),
         "geojson": ((".geojson", ".json"), "GeoJSON")}


def check_name(option: str, path: str | None, kind: str, note: str = "") -> None:
    """A file written under another kind's extension (a TIFF as m.png, GeoJSON over a.tif) fools every program that
    trusts the name, and may replace a file of that kind."""
    suffixes, what = NAMES[kind]
    if path is not None and not path.lower().endswith(suffixes):
        raise GigaPathError(f"{option} must end in {' or '.join(suffixes)} ({what} is written there{note}), got {path}")


def cmd_gui(args: argparse.Namespace) -> int:
    from gigapath_desktop.ui.display import display_problem

    problem = display_problem()
    if problem:
        raise GigaPathError(problem)
    from gigapath_desktop.ui.app import run_app

    return run_app(getattr(args, "slide", None))


def cmd_self_test(args: argparse.Namespace) -> int:
    from gigapath_desktop.selftest import self_test

    self_test()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from gigapath_desktop.slides import open_slide

    with open_slide(args.slide) as slide:
        print(f"file:        {slide.path}")
        print(f"format:      {slide.vendor}")
        print(f"mpp:         {slide.mpp or 'not recorded'}")
        for level, (dims, ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples)):
            print(f"level {level}:     {dims[0]} x {dims[1]}  (downsample {ds:g})")
        print(f"associated:  {', '.join(slide.associated_image_names) or 'none'}")
    return 0


def cmd_make_slide(args: argparse.Namespace) -> int:
    from gigapath_desktop.slides.realistic import Case, make_realistic_slide
    from gigapath_desktop.slides.synthetic import make_slide, mask_path_for

    if not (0 < args.width <= MAX_SIDE and 0 < args.height <= MAX_SIDE):
        raise GigaPathError(f"--width and --height must be positive and at most {MAX_SIDE}, got {args.width} x {args.height}")
    check_option("--mpp", args.mpp)
    if args.seed < 0:  # as `train --seed`; numpy's generators take none
        raise GigaPathError(f"--seed must be >= 0, got {args.seed}")
    limit = 100e6 if args.realistic else 200e6 if args.geojson else None
    if limit and args.width * args.height > limit:
        raise GigaPathError(f"--realistic and --geojson take slides of up to {limit / 1e6:.0f} MP")
    out = check_output(args.out)
    check_name("OUT", args.out, "tif")
    check_name("--geojson", args.geojson, "geojson")
    check_output(mask_path_for(out))
    if args.geojson:
        check_output(args.geojson, inputs=(out, mask_path_for(out)))
    if args.realistic:
        image, mask = make_realistic_slide(out, Case("cli", width=args.width, height=args.height), args.seed)
    else:
        with tqdm(total=None, unit="tile", desc="make-slide", disable=None) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            image, mask = make_slide(out, args.width, args.height, seed=args.seed, mpp=args.mpp,
                                     progress=progress)
    written = [image, mask]
    if args.geojson:
        written.append(_write_truth_geojson(mask, Path(args.geojson)))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _write_truth_geojson(mask_path: Path, out: Path) -> Path:
    from gigapath_desktop.annotations import TISSUE, Annotation, Kind, Role, mask_to_polygons, write_geojson
    from gigapath_desktop.slides import Region, open_slide

    with open_slide(mask_path) as mask:
        w, h = mask.dimensions
        truth = mask.read_region(Region(0, 0, w, h))[..., 0] > 127
    polygons = mask_to_polygons(truth)
    return write_geojson([Annotation(p, cls=TISSUE, role=Role.LABEL, kind=Kind.POLYGON, name="truth")
                          for p in polygons], out)


def cmd_train(args: argparse.Namespace) -> int:
    job = _train_job(args)
    if args.remote:
        from gigapath_desktop.remote.commands import train_remote

        return train_remote(args, job)
    if args.plan:
        return print_plans(job)
    trainer = train_with_progress(job)
    print(f"step {trainer.step}: wrote {job.out / 'model.keras'}, config.json and metrics.csv")
    return 0


def _train_job(args: argparse.Namespace) -> "TrainJob":
    """Turn `train` arguments into a TrainJob, with one-line errors for what is missing."""
    from gigapath_desktop.resources import demo_slide
    from gigapath_desktop.slides import Region
    from gigapath_desktop.training.spec import TrainSpec

    if args.spec:
        if (args.slide or args.region or args.labels or args.auto_labels or args.val_region or args.demo
                or args.classes or args.sparse or args.mpp or args.slide_mpp is not None or args.level):
            raise GigaPathError("--spec names the slides, regions (with their levels), labels, classes and modes; "
                                "give none of them on the command line")
        spec = TrainSpec.read(args.spec)
    elif args.demo:
        if args.slide or args.region or args.labels or args.auto_labels or args.classes:
            raise GigaPathError("--demo trains on the bundled demo slide; give no slide, regions or labels with it")
        region, val_region = Region(0, 0, 2220, 1984), Region(0, 1984, 2220, 983)
        spec = TrainSpec.one_slide(demo_slide(), (region,), None, val_region, slide_mpp=args.slide_mpp)
    else:
        if not args.slide or not args.region:
            raise GigaPathError("train needs SLIDE and --region X,Y,W,H (or --spec, or --demo)")
        if not args.labels and not args.auto_labels:
            raise GigaPathError("train needs --labels FILE.geojson or --auto-labels")
        regions = tuple(Region.parse(text, args.level) for text in args.region)
        val_region = Region.parse(args.val_region, args.level) if args.val_region else None
        classes = tuple(name.strip() for name in args.classes.split(",")) if args.classes else None
        labels = Path(args.labels) if args.labels else None
        spec = TrainSpec.one_slide(Path(args.slide), regions, labels, val_region, classes, args.sparse, args.mpp,
                                   args.slide_mpp)
    settings = run_settings(args)
    from gigapath_desktop.training.job import TrainJob  # TensorFlow: after the checks above, which need none

    return TrainJob(spec, *settings)


def cmd_predict(args: argparse.Namespace) -> int:
    from gigapath_desktop.slides import Region

    check_predict_options(args)
    check_name("--out", args.out, "tif", "; a PNG preview is --png")
    for option, kind in (("--png", "png"), ("--geojson", "geojson"), ("--probabilities", "tif")):
        check_name(option, getattr(args, option[2:]), kind)
    check_option("--slide-mpp", args.slide_mpp)
    if args.remote:
        from gigapath_desktop.remote.commands import predict_remote

        return predict_remote(args)
    from gigapath_desktop.inference import PredictJob, run_predict_job  # TensorFlow: after the checks above
    job = PredictJob(
        slide=Path(args.slide), model=Path(args.model), out=Path(args.out),
        region=Region.parse(args.region, args.level) if args.region else None, level=args.level,
        png=Path(args.png) if args.png else None, downsample=args.downsample,
        geojson=Path(args.geojson) if args.geojson else None, threshold=args.threshold, binary=args.binary,
        tile=args.tile, probabilities=Path(args.probabilities) if args.probabilities else None,
        slide_mpp=args.slide_mpp, min_hole_um2=args.min_hole, min_object_um2=args.min_object,
    )
    with tqdm(total=None, unit="tile", desc="predict", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        def say(phase: str) -> None:  # the phases after the tiles have no count: their name and the time
            bar.set_description(phase)
            bar.refresh()

        result = run_predict_job(job, progress, say=say)
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    written = ", ".join(str(p) for p in (result.out, result.png, result.geojson, result.probabilities) if p)
    print(f"predicted {result.pixels / 1e6:.1f} MP in {result.seconds:.1f} s; wrote {written}")
    return 0


def cmd_detect_tissue(args: argparse.Namespace) -> int:
    from gigapath_desktop.annotations import detect_tissue, write_geojson
    from gigapath_desktop.slides import open_slide

    out = check_output(args.out, inputs=(args.slide,))
    check_name("--out", args.out, "geojson")
    with open_slide(args.slide) as slide:
        annotations = detect_tissue(slide)
    write_geojson(annotations, out)
    print(f"wrote {len(annotations)} tissue polygons to {args.out}")
    return 0
