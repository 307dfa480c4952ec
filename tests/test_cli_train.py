"""`gigapath-desktop train` as users run it, on the real demo slide."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CMU
from test_cli import run


def test_train_with_auto_labels_writes_the_three_files_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", str(CMU), "--region", "0,0,2220,1800", "--val-region", "0,1800,2220,1100", "--auto-labels",
            "--tile", "2240", "--checkpoint-every", "2"]
    first = run(*args, "--steps", "3", "--out", str(out), "--fold", "2")
    assert first.returncode == 0, first.stderr
    assert "decoding the training region (0, 0, 2220, 1800) of CMU-1-Small-Region.svs into the cache: 100%" in first.stdout
    detections = re.findall(r"detected (\d+) tissue polygon\(s\)", first.stdout)
    assert len(detections) == 1 and int(detections[0]) >= 1, "one detection for the training and validation regions"
    for name in ("model.keras", "config.json", "metrics.csv"):
        assert (out / name).is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["spec"]["train"] == [{"slide": str(CMU.resolve()), "labels": None, "mode": "dense",
                                        "regions": [[0, 0, 2220, 1800, 0]]}]
    assert config["model"]["halo"] > 0 and [c["name"] for c in config["classes"]] == ["Background", "Tissue"]
    from gigapath_desktop.model.info import read_info

    info = read_info(out / "model.keras")
    assert info.mpp is None and info.source_mpp == pytest.approx(0.499), "trained at level 0 of a 0.499 µm/px slide"
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert set(rows[0]) == {"step", "loss", "dice", "val_dice", "seconds", "mpix_per_s", "rss_bytes",
                            "learning_rate", "recoveries", "region"}
    assert rows[0]["region"] == "CMU-1-Small-Region.svs (0, 0, 2220, 1800) L0"
    assert config["training"]["augment"] is True and config["training"]["seed"] == 0
    assert config["training"]["fold"] == 2 and config["model"]["halo"] == 82, "the 2 x 2 fold's model"
    assert all(r["val_dice"] for r in rows)

    again = run(*args, "--steps", "4", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr
    for extra, said in ((["--region", "0,0,1000,1000"], "trained on other data (train[0].regions"),
                        (["--seed", "3"], "seed 0"),
                        (["--fold", "4"], "the run was started with fold 2; a resumed run keeps it (leave out --fold)"),
                        (["--no-augment"], "the run was started with augmentation; a resumed run keeps it (leave out "
                                           "--no-augment)"),
                        (["--steps", "2"], "at step 3 already")):  # the run's data and draws are its own
        refused = run(*args, *extra, "--out", str(out), "--resume")
        assert refused.returncode == 2 and said in refused.stderr.splitlines()[-1], refused.stderr[-600:]
    resumed = run(*args, "--steps", "5", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    with (out / "metrics.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3", "4", "5"]
    for state in (out / "checkpoints").glob("step-*/state.json"):  # damaged by hand: refused, not trained on
        state.write_text(state.read_text().replace('"step": ', '"step": "abc", "was": '))
    damaged = run(*args, "--steps", "6", "--out", str(out), "--resume")
    assert damaged.returncode == 2 and "step must be a whole number" in damaged.stderr.splitlines()[-1]


def test_bad_train_arguments_exit_nonzero_with_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    cases = {
        "outside the slide": ["train", str(CMU), "--region", "2000,0,1000,100", "--auto-labels", "--out", out + "1"],
        "no such file": ["train", str(CMU), "--region", "0,0,100,100", "--labels", str(tmp_path / "x.geojson"),
                         "--out", out + "2"],
        "not recognised as a slide": ["train", str(tmp_path / "broken.svs"), "--region", "0,0,10,10", "--auto-labels"],
        "--labels FILE.geojson or --auto-labels": ["train", str(CMU), "--region", "0,0,100,100"],
        "four integers": ["train", str(CMU), "--region", "0,0,100", "--auto-labels"],
        "positive number": ["train", str(CMU), "--region", "0,0,100,100", "--auto-labels", "--mpp", "nan"],
        "class names": ["train", str(CMU), "--region", "0,0,100,100", "--labels", "x.geojson", "--classes", "A,,B"],
        "the fold must be one of 2, 4": ["train", str(CMU), "--region", "0,0,100,100", "--auto-labels", "--fold", "3"],
        "holds no label areas": ["train", str(CMU), "--region", "0,0,100,100", "--labels", str(tmp_path / "e.geojson"),
                                 "--out", out + "3"],
    }
    (tmp_path / "broken.svs").write_bytes(CMU.read_bytes()[:5000])
    (tmp_path / "e.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    running = {message: subprocess.Popen([sys.executable, "-m", "gigapath_desktop", *args], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True) for message, args in cases.items()}
    for message, process in running.items():  # all at once: each spends most of its time importing TensorFlow
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, (message, stderr)
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and message in last, (message, stderr)
    assert not list(tmp_path.glob("run*")), "bad input leaves no run folder"


def test_a_region_of_nearly_all_tissue_is_warned_about(tmp_path: Path) -> None:
    result = run("train", str(CMU), "--region", "700,2500,1000,400", "--auto-labels", "--steps", "1",
                 "--tile", "512", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("warning:")]
    assert "% tissue" in line and "enlarge the region" in line


LONG_RUN = ["train", str(CMU), "--region", "0,0,1024,1024", "--auto-labels", "--tile", "512", "--steps", "1000"]


def _start_training(out: Path, *extra: str, rows: int = 3) -> subprocess.Popen[str]:
    """A real training process, returned once metrics.csv holds `rows` lines."""
    proc = subprocess.Popen([sys.executable, "-m", "gigapath_desktop", *LONG_RUN, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").is_file() or len((out / "metrics.csv").read_text().splitlines()) < rows:
        assert time.monotonic() < deadline and proc.poll() is None, "training did not get going"
        time.sleep(0.2)
    return proc


def _paused_training(out: Path, moment: str, *extra: str) -> subprocess.Popen[str]:
    """A real training process, returned once it waits at the test hook `moment` (GIGAPATH_PAUSE_AT)."""
    proc = subprocess.Popen([sys.executable, "-m", "gigapath_desktop", *LONG_RUN, "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GIGAPATH_PAUSE_AT": moment})
    assert proc.stderr is not None
    for line in proc.stderr:
        if f"paused at {moment.split('#')[0]}" in line:
            break
    return proc


def test_sigterm_during_training_keeps_a_checkpoint_like_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _paused_training(out, "step applied#3")  # the worst moment: step 3's update applied, its row not written
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted" in stderr and "Traceback" not in stderr, "128 + SIGTERM"
    latest = int((out / "checkpoints" / "latest").read_text().split("-")[1])
    steps = [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())]
    assert latest == 3 and steps == [1, 2, 3], "the step whose update was applied is recorded and checkpointed"
    assert (out / "model.keras").is_file(), "the weights of the last whole step, as the app's Stop keeps them"


def test_training_gives_the_stop_signals_back_to_the_handlers_it_found() -> None:
    """ray.init (several workers) replaces SIGTERM's handler while a run is prepared; afterwards SIGTERM must reach
    the CLI's handler again (ending in 'interrupted'), not Ray's, whatever came in between."""
    from gigapath_desktop.cli_training import _signals_stop_training

    def mine(signum: int, frame: object) -> None: ...

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _signals_stop_training(None) as begin:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init does, before training begins
            begin(type("Trainer", (), {"stop": lambda self: None})())
            assert signal.getsignal(signal.SIGTERM) is not mine, "routed to the stop request while training"
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_run_folder_in_use_is_refused_and_a_killed_holder_does_not_block_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _start_training(out, "--checkpoint-every", "1")
    for again in ([], ["--resume", "--steps", "2"]):  # in use, said first (not "already holds a run; pass --resume")
        second = run(*LONG_RUN, "--out", str(out), *again)
        assert second.returncode == 2 and "is in use by process" in second.stderr and str(holder.pid) in second.stderr
    holder.kill()  # kill -9: the lock dies with its process
    holder.wait()
    rows = len((out / "metrics.csv").read_text().splitlines()) - 1
    resumed = run(*LONG_RUN, "--out", str(out), "--resume", "--steps", str(rows + 1))
    assert resumed.returncode == 0, resumed.stderr
    steps = [r["step"] for r in csv.DictReader((out / "metrics.csv").open())]
    assert steps == [str(s) for s in range(1, len(steps) + 1)], "one history, no interleaved or lost rows"


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_in_its_folder(tmp_path: Path) -> None:
    """It could neither resume (no checkpoint) nor be run again (its config.json and metrics.csv were 'kept')."""
    out = tmp_path / "run"
    holder = _start_training(out, "--checkpoint-every", "100", rows=2)
    holder.kill()
    holder.wait()
    assert not (out / "checkpoints").exists() and (out / "config.json").is_file()
    again = run(*LONG_RUN[:-1], "2", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert len((out / "metrics.csv").read_text().splitlines()) == 3 and (out / "model.keras").is_file()


def test_labels_that_miss_the_region_or_name_other_classes_are_warned_about(tmp_path: Path) -> None:
    from gigapath_desktop.annotations import AnnotationClass, Annotation, write_geojson
    from shapely.geometry import box

    labels = write_geojson([Annotation(box(1500, 1500, 1600, 1600)),
                            Annotation(box(1600, 1500, 1700, 1600), cls=AnnotationClass("Tumor", (200, 0, 0)))],
                           tmp_path / "far.geojson")
    result = run("train", str(CMU), "--region", "0,0,600,600", "--labels", str(labels), "--steps", "1",
                 "--tile", "512", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("100.0 % background" in w and "enlarge the region" in w for w in warnings), result.stderr
    assert any("'Tumor'" in w and "counts them as tissue" in w for w in warnings), result.stderr


@pytest.mark.parametrize("moment", ["rename latest#1", "rename checkpoint#2"])
def test_a_kill_at_the_worst_moment_of_a_checkpoint_leaves_a_run_that_resumes(moment: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _paused_training(out, moment, "--checkpoint-every", "2")
    proc.kill()  # kill -9 where the writer waits
    proc.wait()
    resumed = run(*LONG_RUN, "--out", str(out), "--resume", "--steps", "5", "--checkpoint-every", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in csv.DictReader((out / "metrics.csv").open())] == ["1", "2", "3", "4", "5"]
    assert not list((out / "checkpoints").glob(".*partial*")), "the killed writer's leftovers are cleared"


def test_workers_a_step_cannot_use_are_warned_of(tmp_path: Path) -> None:
    """--workers 6 on a region of 4 tiles started 6 TensorFlow workers (5.2 GB), 2 of which never got a tile."""
    from gigapath_desktop.slides import Region
    from gigapath_desktop.training import TrainConfig
    from gigapath_desktop.training.events import WarningEvent
    from gigapath_desktop.training.job import TrainJob, prepare_trainer

    events: list = []
    job = TrainJob.one_slide(CMU, Region(0, 0, 1024, 1024), tmp_path / "run", TrainConfig(steps=1), workers=3)
    prepare_trainer(job, [events.append], None, None)
    (warning,) = [e.message for e in events if isinstance(e, WarningEvent) and "idle" in e.message]
    assert "a step of 1 tile(s) keeps 2 of the 3 workers idle" in warning
