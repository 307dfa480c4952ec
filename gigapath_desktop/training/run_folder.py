"""A run folder's checks: that a new run may start in it, and that a resume continues the same run (its classes,
resolution, data, seed and augmentation, as its config.json and checkpoint record them)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.model.info import ModelInfo
from gigapath_desktop.training.checkpoints import has_checkpoint
from gigapath_desktop.training.config import RUN_FILES
from gigapath_desktop.training.spec import SpecItem, TrainSpec

if TYPE_CHECKING:
    from gigapath_desktop.training.job import TrainJob


def check_resumable(job: "TrainJob", saved: ModelInfo, wanted: ModelInfo) -> None:
    """A run continues only with the classes and resolution it started with (another µm/px would train the weights
    on another scale while the model file kept saying the first)."""
    if saved.classes.names != wanted.classes.names:
        raise GigaPathError(f"{job.out}: its model has the classes {', '.join(saved.classes.names)}, not "
                            f"{', '.join(wanted.classes.names)}")
    if saved.mpp != wanted.mpp:
        def say(mpp: float | None) -> str:
            return "the regions' own levels" if mpp is None else f"{mpp:g} µm/px"
        raise GigaPathError(f"{job.out}: the run trains at {say(saved.mpp)}, not {say(wanted.mpp)}; resume it with "
                            f"the same --mpp")


def check_same_run(job: "TrainJob", inputs: dict[str, str | None]) -> None:
    """--resume continues the same run: on the data it trained on (its config.json says which), with its seed and
    augmentation (each step's augmentation is drawn from them) and model. Only the settings `resume_changes` names
    may differ; a seed, augmentation or fold given again must be the run's own."""
    recorded = _recorded(job)
    if not recorded:
        raise GigaPathError(f"{job.out}: its config.json is missing or unreadable, so the resume cannot be checked to "
                            f"be the same run (on the same data); start a new run in another --out")
    started_on = recorded.get("inputs")
    changed = [Path(p).name for p, key in inputs.items() if isinstance(started_on, dict) and p in started_on
               and started_on[p] != key]
    if changed:
        raise GigaPathError(f"{job.out}: {', '.join(changed)} changed since the run started (other content under the "
                            f"same name); resume it on the files it trained on, or start a new run in another --out")
    before, now = _without_colours(recorded.get("spec")), _without_colours(resolved(job.spec).as_json())
    if before is not None and before != now:
        raise GigaPathError(f"{job.out}: the run trained on other data ({_difference(before, now)}); resume it with "
                            f"the same slides, regions, labels and label mode, or start a new run in another --out")
    training = recorded.get("training", {})
    for name, option in (("seed", "--seed"), ("augment", "--no-augment"), ("fold", "--fold")):
        if name in job.resume_changes and name in training and training[name] != getattr(job.config, name):
            was = (f"with {name} {training[name]}" if name != "augment"
                   else "with augmentation" if training[name] else "without augmentation")
            raise GigaPathError(f"{job.out}: the run was started {was}; a resumed run keeps it (leave out {option})")


def _without_colours(spec: Any) -> Any:
    """A recorded spec with its classes by name only: a class recoloured in the project is still the same run's."""
    if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list):
        return spec
    return {**spec, "classes": [c.get("name") if isinstance(c, dict) else c for c in spec["classes"]]}


def _recorded(job: "TrainJob") -> dict[str, Any]:
    """The run's config.json ({} when it has none readable: the checkpoint's own settings then govern)."""
    try:
        recorded = json.loads((job.out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _difference(before: Any, now: Any, where: str = "") -> str:
    """Where two specs first differ, down to an item's field, e.g. 'train[0].regions: [[0, 0, 512, 512, 0]] ->
    [[256, 256, 256, 256, 0]]'."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in [*before, *(k for k in now if k not in before)]:
            if before.get(key) != now.get(key):
                return _difference(before.get(key), now.get(key), f"{where}.{key}" if where else key)
    items = isinstance(before, list) and isinstance(now, list) and all(isinstance(x, dict) for x in before + now)
    if items and len(before) == len(now):
        for i, (a, b) in enumerate(zip(before, now)):
            if a != b:
                return _difference(a, b, f"{where}[{i}]")
    return f"{where}: {json.dumps(before)} -> {json.dumps(now)}"


def check_out(job: "TrainJob") -> None:
    if job.out.exists() and not job.out.is_dir():
        raise GigaPathError(f"{job.out}: is a file; --out names a run folder")
    has_run = has_checkpoint(job.out)
    if job.resume and not has_run:
        raise GigaPathError(f"{job.out}: nothing to resume (no checkpoint there)")
    if not job.resume and has_run:
        raise GigaPathError(f"{job.out} already holds a run; pass --resume to continue it, or choose another --out")
    kept = [name for name in ("project.json", *RUN_FILES) if (job.out / name).exists()]
    if not job.resume and kept and not _stopped_before_a_checkpoint(job, kept):  # a project's folder, a user's
        raise GigaPathError(f"{job.out} holds {', '.join(kept)}, which a new run would write over; choose another "
                            f"--out")  # files, or a run whose checkpoints were deleted: never written over


def _stopped_before_a_checkpoint(job: "TrainJob", kept: list[str]) -> bool:
    """Whether `out` holds only what a run writes before its first checkpoint (its config.json, and metrics.csv of
    fewer steps than a checkpoint comes after; no model): a run that failed or was killed early, which a new run may
    start afresh in (it could neither resume nor be reused)."""
    recorded = _recorded(job)
    if not set(kept) <= {"config.json", "metrics.csv"} or recorded.get("started_at_step") != 0:
        return False
    try:
        every = recorded["training"]["checkpoint_every"]
        steps = len((job.out / "metrics.csv").read_text().splitlines()[1:]) if "metrics.csv" in kept else 0
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(every, int) and steps < every


def resolved(spec: TrainSpec) -> TrainSpec:
    """The spec with absolute paths, so config.json says exactly which files were read."""
    def item(i: SpecItem) -> SpecItem:
        return replace(i, slide=i.slide.resolve(), labels=None if i.labels is None else i.labels.resolve())
    return replace(spec, train=tuple(map(item, spec.train)), validation=tuple(map(item, spec.validation)))
