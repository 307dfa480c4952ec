"""`gigapath-desktop train` as users run it, on the real demo slide."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import CMU
from test_cli import run


def test_train_with_auto_labels_writes_the_three_files_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", str(CMU), "--region", "0,0,2220,1800", "--val-region", "0,1800,2220,1100", "--auto-labels",
            "--tile", "1024", "--checkpoint-every", "2"]
    first = run(*args, "--steps", "3", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "decoding the training region into the cache: 100%" in first.stdout
    for name in ("model.keras", "config.json", "metrics.csv"):
        assert (out / name).is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["region"] == {"x": 0, "y": 0, "width": 2220, "height": 1800, "level": 0}
    assert config["model"]["halo"] > 0 and config["labels"].startswith("auto")
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert set(rows[0]) == {"step", "loss", "dice", "val_dice", "seconds", "mpix_per_s", "rss_bytes",
                            "learning_rate", "recoveries"}
    assert config["training"]["augment"] is True and config["training"]["seed"] == 0
    assert all(r["val_dice"] for r in rows)

    again = run(*args, "--steps", "4", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run(*args, "--steps", "5", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    with (out / "metrics.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3", "4", "5"]


def test_bad_train_arguments_exit_nonzero_with_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    cases = {
        "outside the slide": ["train", str(CMU), "--region", "2000,0,1000,100", "--auto-labels", "--out", out],
        "no such file": ["train", str(CMU), "--region", "0,0,100,100", "--labels", str(tmp_path / "x.geojson"), "--out", out],
        "not recognised as a slide": ["train", str(tmp_path / "broken.svs"), "--region", "0,0,10,10", "--auto-labels"],
        "--labels FILE.geojson or --auto-labels": ["train", str(CMU), "--region", "0,0,100,100"],
        "four integers": ["train", str(CMU), "--region", "0,0,100", "--auto-labels"],
    }
    (tmp_path / "broken.svs").write_bytes(CMU.read_bytes()[:5000])
    for message, args in cases.items():
        result = run(*args)
        assert result.returncode == 2, (message, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and message in last, (message, result.stderr)
    assert not (tmp_path / "run").exists()


def test_a_region_of_nearly_all_tissue_is_warned_about(tmp_path: Path) -> None:
    result = run("train", str(CMU), "--region", "700,2500,1000,400", "--auto-labels", "--steps", "1",
                 "--tile", "512", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("warning:")]
    assert "% tissue" in line and "enlarge the region" in line


def test_sigterm_during_training_keeps_a_checkpoint_like_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gigapath_desktop", "train", str(CMU), "--region", "0,0,1024,1024",
                             "--auto-labels", "--tile", "512", "--steps", "1000", "--checkpoint-every", "1000",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").is_file() or len((out / "metrics.csv").read_text().splitlines()) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "training did not get going"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    latest = (out / "checkpoints" / "latest").read_text()
    assert int(latest.split("-")[1]) >= 2
