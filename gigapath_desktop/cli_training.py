"""The training run's command-line side, shared by `train` and `project train`: its options and the settings they
make, its step plans, and the run itself with a progress bar that Ctrl-C stops between tiles."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from tqdm import tqdm

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.signals import restore, route, stop_handlers, stopped_by

if TYPE_CHECKING:
    from gigapath_desktop.training.config import TrainConfig
    from gigapath_desktop.training.job import TrainJob
    from gigapath_desktop.training.trainer import Trainer


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options of a training run, shared by `train` and `project train`."""
    p.add_argument("--steps", type=int, help="total optimizer steps (default 150; with --resume: the run's own)")
    p.add_argument("--tile", type=_tile, help="'auto' (the default: the fastest exact plan that fits "
                                              "--memory-budget), an output tile side in pixels, or 0 = the whole "
                                              "region at once (with --resume: the run's own unless given)")
    p.add_argument("--memory-budget", type=float, metavar="GIB",
                   help="process memory the 'auto' plan may use, in GiB (default 3; with --resume: the run's own "
                        "unless given)")
    p.add_argument("--plan", action="store_true", help="print each region's step plan (tiles, peak memory, seconds "
                                                       "per step) and exit")
    p.add_argument("--lr", type=float,
                   help="peak Adam learning rate, after a 10-step warm-up, with cosine decay (default 0.02; "
                        "with --resume: the run's own unless given)")
    p.add_argument("--fold", type=int, help="pixels a side the model's first layer folds into channels: 4 (the "
                                            "default) or 2, finer detail (thin strands, small islands) at ~2x the "
                                            "time per step; a new run only")
    p.add_argument("--no-augment", action="store_true",
                   help="train on the region as it is (default: a random flip/rotation and colour change per step)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 10; with --resume: the "
                                                        "run's own unless given)")
    p.add_argument("--seed", type=int, help="seed of the initial weights and the augmentation (default 0; with "
                                            "--resume: the run's own)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--workers", type=int, default=1,
                   help="spread each step's tiles over N Ray workers (a local Ray; GPUs when present); the same step "
                        "as one worker on the same --tile")
    p.add_argument("--ray-address", help="run the workers on this Ray cluster (e.g. HEAD:6379) instead of a local Ray")


def _tile(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'auto' or a number of pixels, not {text!r}") from None


def run_settings(args: argparse.Namespace) -> tuple[Path, "TrainConfig", bool, tuple[str, ...], int, str | None]:
    """(out, config, resume, resume changes, workers, Ray address) of the training options."""
    from gigapath_desktop.training.config import TrainConfig

    options = {"steps": args.steps, "learning_rate": args.lr, "checkpoint_every": args.checkpoint_every, "tile": args.tile,
               "memory_budget": args.memory_budget, "fold": args.fold}
    given = {name: value for name, value in options.items() if value is not None}
    if "tile" in given:
        given["tile"] = given["tile"] or None  # 0: the whole region as one tile
    if args.seed is not None:
        given["seed"] = args.seed
    if args.no_augment:
        given["augment"] = False
    config = TrainConfig(**given)
    if args.out is not None and not args.out.strip():
        raise GigaPathError("--out is empty; name a run folder (or leave --out out: runs/<time>)")
    out = Path(args.out) if args.out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if not 1 <= args.workers <= 1024:
        raise GigaPathError(f"--workers must be between 1 and 1024, got {args.workers}")
    return out, config, args.resume, tuple(given), args.workers, args.ray_address


def print_plans(job: "TrainJob") -> int:
    """`--plan`: each region's step plan under the job's settings, without training."""
    from gigapath_desktop.training.job import job_plans

    if job.resume:
        raise GigaPathError("--plan shows a new run's plans; a resumed run keeps the tile and budget it started with")
    print(f"memory budget {job.config.memory_budget:g} GiB, tile {job.config.tile or 'whole region'}, "
          f"fold {job.config.fold}")
    for name, plan in job_plans(job):
        print(f"{name}: {plan.describe()}")
    return 0


def train_with_progress(job: "TrainJob", started: Callable[["Trainer"], None] | None = None) -> "Trainer":
    """Run a training job with a progress bar of its steps; warnings go to stderr. `started(trainer)`: called once
    training is about to begin (the run folder checked and locked)."""
    from gigapath_desktop.training.events import Event, LogEvent, StepEvent, WarningEvent
    from gigapath_desktop.training.job import run_train_job

    with tqdm(total=job.config.steps, unit="step", desc="train", disable=None) as bar:
        def show(event: Event) -> None:
            if isinstance(event, StepEvent):
                bar.total, bar.n = event.total_steps, event.step
                val = "-" if event.val_dice is None else f"{event.val_dice:.4f}"
                bar.set_postfix_str(f"loss {event.loss:.4f} dice {event.dice:.4f} val {val} {event.mpix_per_s:.1f} MP/s")
            elif isinstance(event, LogEvent):
                bar.write(event.message)
            elif isinstance(event, WarningEvent):
                bar.write(f"warning: {event.message}", file=sys.stderr)

        with _signals_stop_training(started) as begin:
            return run_train_job(job, [show], begin)


@contextlib.contextmanager
def _signals_stop_training(started: Callable[["Trainer"], None] | None) -> Iterator[Callable[["Trainer"], None]]:
    """Once training begins, Ctrl-C / SIGTERM stop it at the next tile (or after a whole-region step) instead of
    raising wherever the step happens to be: a step cut between its optimizer update and its bookkeeping would
    checkpoint weights, step and history that disagree (a resumed run then lost a metrics row). The weights of the
    last whole step are kept (checkpoint and model.keras), then KeyboardInterrupt as before ("interrupted"; exit
    130, or 143 after SIGTERM). A second Ctrl-C leaves at once; SIGTERMs (a server's shutdown, then its exit) only
    repeat the request. A signal the shell told the process to ignore stays ignored."""
    trainers: list["Trainer"] = []
    stopped: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if stopped and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stopped.append(signum)
        trainers[0].stop()

    previous = stop_handlers() if threading.current_thread() is threading.main_thread() else None

    def begin(trainer: "Trainer") -> None:
        trainers.append(trainer)
        if previous is not None:
            route(previous, stop)
        if started is not None:
            started(trainer)

    try:
        yield begin
    finally:  # back to the handlers of the start, whatever came between (ray.init replaces SIGTERM's)
        if previous is not None:
            restore(previous)
    if stopped and trainers[0].step < trainers[0].config.steps:  # (a signal during the final save: the run is whole)
        raise stopped_by(stopped[0])
