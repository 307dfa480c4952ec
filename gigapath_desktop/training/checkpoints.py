"""A run's checkpoints on disk: run/checkpoints/step-N/ folders and a `latest` pointer, written so that a kill at
any moment leaves a loadable run."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from gigapath_desktop.annotations import ClassMap
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.model.info import ModelInfo, read_info
from gigapath_desktop.model.io import save_model
from gigapath_desktop.outputs import atomic_path, pause_point, remove

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


def write_checkpoint(run_dir: Path, model: keras.Model, arrays: dict[str, Sequence[np.ndarray]], state: dict) -> Path:
    """Write run_dir/checkpoints/step-N/ (model.keras, NAME.npz for each list of `arrays`, e.g. the optimizer's
    state, and state.json; N = state["step"]) and point checkpoints/latest at it.

    Nothing is ever overwritten: the folder is written under a temporary name and renamed to a new name (a second
    save of the same step, e.g. after a guard restart, gets `step-N.1`), then `latest` is replaced atomically and
    only then are the oldest folders pruned."""
    root = run_dir / CHECKPOINTS
    final = root / f"step-{state['step']:06d}"
    for again in range(1, 10**6):
        if not final.exists():
            break
        final = root / f"step-{state['step']:06d}.{again}"
    for orphan in root.glob(".*.partial-*"):  # left by a killed run; the run folder is ours (locked) now
        remove(orphan)
    with atomic_path(final) as tmp:  # the whole folder appears at once
        tmp.mkdir(parents=True)
        save_model(model, tmp / "model.keras")
        for name, values in arrays.items():
            np.savez(tmp / f"{name}.npz", *values)
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        pause_point("rename checkpoint")
    with atomic_path(root / "latest") as latest:
        latest.write_text(final.name)
    for old in checkpoint_folders(root)[KEEP_CHECKPOINTS:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_arrays(folder: Path, name: str) -> list[np.ndarray] | None:
    """The list of arrays `write_checkpoint` saved as NAME.npz in `folder`; None when it has none (an older run)."""
    if not (folder / f"{name}.npz").exists():
        return None
    with np.load(folder / f"{name}.npz") as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def read_state(folder: Path) -> dict:
    """A checkpoint's state.json, checked where a damaged one (hand-edited, half-restored) would otherwise fail
    mid-run or train on with NaN: a ValueError here makes the resume try the older checkpoint instead."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("state.json is nested too deeply") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) \
            or not isinstance(state.get("history"), list):
        raise ValueError("state.json lacks the run's settings or history")
    for name in ("step", "recoveries", "lr_restart", "average_updates"):
        value = state.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"state.json: {name} must be a whole number >= 0, got {value!r}")
    scale = state.get("lr_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError(f"state.json: lr_scale must lie in (0, 1], got {scale!r}")
    return state


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run to resume (a `latest` pointer or any checkpoint folder)."""
    root = run_dir / CHECKPOINTS
    return (root / "latest").exists() or bool(checkpoint_folders(root))


def checkpoint_info(run_dir: Path) -> ModelInfo | None:
    """The classes and µm/px of the run's newest readable checkpoint, read from its model file without loading it
    (so a resume that cannot continue is refused before its regions are decoded); None if none can be read."""
    for folder in checkpoint_folders(run_dir / CHECKPOINTS):
        try:
            return read_info(folder / "model.keras") or ModelInfo(ClassMap.tissue())
        except (OSError, zipfile.BadZipFile, GigaPathError):
            continue
    return None


def resume_order(run_dir: Path) -> list[Path]:
    """The checkpoint folders to try resuming from: the one `latest` names first (when readable), then the others,
    newest first."""
    root = run_dir / CHECKPOINTS
    try:
        latest = [root / (root / "latest").read_text().strip()]
    except OSError:
        latest = []
    return list(dict.fromkeys(latest + checkpoint_folders(root)))


def checkpoint_folders(root: Path) -> list[Path]:
    """Checkpoint folders, newest first."""
    return sorted(root.glob("step-*"), reverse=True)
