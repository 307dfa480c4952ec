"""The command line as users run it: a real subprocess per call."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import CMU


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gigapath_desktop", *args], capture_output=True, text=True, cwd=cwd)


def test_info_and_detect_tissue(tmp_path: Path) -> None:
    info = run("info", str(CMU))
    assert info.returncode == 0 and "2220 x 2967" in info.stdout and "aperio" in info.stdout
    out = tmp_path / "tissue.geojson"
    detected = run("detect-tissue", str(CMU), "--out", str(out))
    assert detected.returncode == 0, detected.stderr
    features = json.loads(out.read_text())["features"]
    assert features and features[0]["properties"]["classification"]["name"] == "Tissue"


def test_make_slide(tmp_path: Path) -> None:
    result = run("make-slide", str(tmp_path / "s.tif"), "--width", "1200", "--height", "900", "--seed", "2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.tif").is_file() and (tmp_path / "s.mask.tif").is_file()
    assert not list(tmp_path.glob("*partial*"))
    assert "1200 x 900" in run("info", str(tmp_path / "s.tif")).stdout


def test_make_realistic_slide_with_truth_labels_that_rasterize_back_exactly(tmp_path: Path) -> None:
    from gigapath_desktop.annotations import rasterize, read_geojson
    from gigapath_desktop.slides import Region, open_slide

    result = run("make-slide", str(tmp_path / "r.tif"), "--width", "1500", "--height", "1000", "--realistic",
                 "--geojson", str(tmp_path / "truth.geojson"))
    assert result.returncode == 0, result.stderr
    with open_slide(tmp_path / "r.tif") as slide, open_slide(tmp_path / "r.mask.tif") as mask:
        assert slide.dimensions == (1500, 1000) and slide.mpp is None
        truth = mask.read_region(Region(0, 0, 1500, 1000))[..., 0] > 127
    labels = rasterize(read_geojson(tmp_path / "truth.geojson"), (0.0, 0.0), 1.0, (1000, 1500))
    assert 0.1 < truth.mean() < 0.7 and np.array_equal(labels.astype(bool), truth)


def test_parse_errors_are_one_line_naming_the_help(tmp_path: Path) -> None:
    for args, said in [(["train", "--steps", "nan"], "error: argument --steps: invalid int value: 'nan' (see "
                                                     "gigapath-desktop train --help)"),
                       (["project"], "(see gigapath-desktop project --help)"),
                       (["project", "train", "d", "--out", "r", "--steps", "x"],
                        "(see gigapath-desktop project train --help)"),
                       (["predict-batch", "--out", "o"], "--model (see gigapath-desktop predict-batch --help)"),
                       (["serve", "--port", "x"], "(see gigapath-desktop serve --help)"),
                       (["no-such-command"], "invalid choice")]:
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and said in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and not result.stdout and not list(tmp_path.iterdir())


def test_help_says_what_a_run_writes_and_labels() -> None:
    project_train = " ".join(run("project", "train", "--help").stdout.split())
    assert "spec.json" not in project_train and "config.json with the spec" in project_train
    assert "label annotations of the model's classes (Tissue for the tissue model" in " ".join(
        run("train", "--help").stdout.split())


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`info SLIDE | head -1`: the reader is gone; no error about it, no traceback."""
    assert run("project", "create", str(tmp_path / "p")).returncode == 0
    assert run("project", "add", str(tmp_path / "p"), str(CMU)).returncode == 0
    for args in (["info", str(CMU)], ["project", "list", str(tmp_path / "p")]):
        read, write = os.pipe()
        os.close(read)  # closed before the command writes a line
        try:
            result = subprocess.run([sys.executable, "-m", "gigapath_desktop", *args], stdout=write,
                                    stderr=subprocess.PIPE, text=True)
        finally:
            os.close(write)
        assert result.returncode in (1, 141) and result.stderr == "", result.stderr


def test_bad_input_is_one_line_and_nonzero(tmp_path: Path) -> None:
    missing = run("info", str(tmp_path / "nope.svs"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "no such file" in missing.stderr
    bad = run("make-slide", str(tmp_path / "x.tif"), "--width", "0", "--height", "5")
    assert bad.returncode == 2 and "positive" in bad.stderr
    for mpp in ("0", "nan", "-1"):
        bad = run("make-slide", str(tmp_path / "x.tif"), "--width", "5", "--height", "5", "--mpp", mpp)
        assert bad.returncode == 2 and "--mpp" in bad.stderr and not list(tmp_path.iterdir())


def test_an_error_after_tensorflow_loaded_is_still_the_only_line(tmp_path: Path) -> None:
    """TensorFlow's start-up lines from C++ (a CUDA wheel without a GPU: "Unable to register cuDNN factory", ...)
    come before its logging starts, where TF_CPP_MIN_LOG_LEVEL cannot silence them; they stay off stderr."""
    args = ["train", str(CMU), "--region", "0,0,100,100", "--labels", str(tmp_path / "nope.geojson"), "--out",
            str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as users run it (conftest sets 2)
    result = subprocess.run([sys.executable, "-m", "gigapath_desktop", *args], capture_output=True, text=True, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "no such file" in lines[0]


def test_tensorflow_import_keeps_every_other_line_and_its_errors(tmp_path: Path) -> None:
    """Only the known start-up lines go: the rest of what the import writes stays, and an import error surfaces."""
    (tmp_path / "tensorflow").mkdir()  # a stand-in that writes as TensorFlow's C++ does, to file descriptor 2
    (tmp_path / "tensorflow" / "__init__.py").write_text(textwrap.dedent(r'''
        import os, sys
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"E0000 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register factory for "
                    b"plugin cuDNN when one has already been registered\nfrom C++\n")
        print("from Python", file=sys.stderr)
        raise ImportError("libcudart.so.12: cannot open shared object file")
    '''))
    code = "from gigapath_desktop.tf_quiet import quiet_tensorflow_import; quiet_tensorflow_import(); import tensorflow"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and lines[:2] == ["from C++", "from Python"], result.stderr
    assert lines[-1] == "ImportError: libcudart.so.12: cannot open shared object file", result.stderr


def test_the_app_says_what_is_missing_instead_of_aborting(tmp_path: Path) -> None:
    import ctypes.util
    import os
    import subprocess as sp

    from gigapath_desktop.ui.display import XCB_LIBRARIES

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    headless = sp.run([sys.executable, "-m", "gigapath_desktop", "gui"], capture_output=True, text=True, env=env)
    assert headless.returncode == 2 and headless.stderr.startswith("error: no display found"), headless.stderr
    missing = [pkg for lib, pkg in XCB_LIBRARIES.items() if ctypes.util.find_library(lib) is None]
    with_display = sp.run([sys.executable, "-m", "gigapath_desktop", "gui"], capture_output=True, text=True,
                          env={**env, "DISPLAY": ":4242", "QT_QPA_PLATFORM": "xcb"}, timeout=60)
    if missing:  # this machine lacks some: they are named with the command that installs them
        assert with_display.returncode == 2 and f"sudo apt install {' '.join(missing)}" in with_display.stderr
    else:  # all present: the check lets Qt try (and Qt fails on the absent X server :4242, not on a library)
        assert "sudo apt install" not in with_display.stderr


def test_the_window_module_loads_without_tensorflow() -> None:
    code = "import sys, gigapath_desktop.ui.main_window; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.split() == ["False", "False"], result.stderr


def test_library_warnings_do_not_precede_the_error_line(tmp_path: Path) -> None:
    """A damaged TIFF header (PIL: "Corrupt EXIF data") and NaN coordinates (shapely: "invalid value encountered")
    end in the one `error:` line alone, in a real process where Python prints library warnings."""
    (tmp_path / "header.tif").write_bytes(b"II*\x00\x08\x00\x00\x00")
    nan = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                             "coordinates": [[[0, 0], [1, "NaN"], [1, 1], [0, 0]]]}}
    (tmp_path / "nan.geojson").write_text(json.dumps(nan).replace('"NaN"', "NaN"))
    assert run("project", "create", str(tmp_path / "p")).returncode == 0
    assert run("project", "add", str(tmp_path / "p"), str(CMU)).returncode == 0
    for args in (["info", str(tmp_path / "header.tif")],
                 ["project", "import", str(tmp_path / "p"), str(tmp_path / "nan.geojson"), "--slide", CMU.name]):
        done = run(*args)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error:"), done.stderr
