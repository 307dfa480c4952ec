"""Bad input of every kind ends in one `error:` line and exit code 2: no traceback, no partial or changed file.

The CLI runs in-process here (the same `main` a user's shell runs, minus the interpreter start-up), so the ~50 cases
take seconds; a few faults that need a real process (a full disk) run as subprocesses below.
"""
from __future__ import annotations

import csv
import json
import resource
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import CMU

SQUARE = [[[0, 0], [300, 0], [300, 300], [0, 300], [0, 0]]]


def _feature(coordinates: object = SQUARE, classification: object = None, **properties: object) -> dict:
    props = {"objectType": "annotation", **properties}
    if classification is not None:
        props["classification"] = classification
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coordinates}, "properties": props}


GEOJSON = {
    "rgb-strings.geojson": _feature(classification={"name": "Tissue", "color": ["r", "g", "b"]}),
    "colorRGB-word.geojson": _feature(classification={"name": "Tissue", "colorRGB": "red"}),
    "null-colour.geojson": _feature(classification={"name": "Tissue", "color": [None, 1, 2]}),
    "colour-300.geojson": _feature(classification={"name": "Tissue", "color": [300, 1, 2]}),
    "nan-coordinate.geojson": _feature([[[0, 0], [float("nan"), 0], [300, 300], [0, 0]]]),
    "huge-coordinate.geojson": _feature([[[0, 0], [1e300, 0], [1e300, 1e300], [0, 0]]]),
    "string-coordinate.geojson": _feature([[["a", 0], [1, 0], [1, 1], [0, 0]]]),
    "no-geometry.geojson": {"type": "Feature", "properties": {}},
    "type-list.geojson": {"type": "Feature", "geometry": {"type": ["Polygon"], "coordinates": SQUARE}},
    "int-overflow.geojson": _feature([[[0, 0], [10**400, 0], [1, 1], [0, 0]]]),
    "nameless-class.geojson": _feature(classification={"color": [1, 2, 3]}),
    "number.geojson": 5,
}
MODEL_INFO = {  # gigapath.json of a model, damaged
    "infinite-colour.keras": '{"classes": [{"name": "Background", "color": [Infinity, 0, 0]}, '
                             '{"name": "Tissue", "color": [1, 2, 3]}]}',
    "tiny-mpp.keras": '{"classes": [{"name": "Background", "color": [0, 0, 0]}, '
                      '{"name": "Tissue", "color": [1, 2, 3]}], "mpp": 1e-300}',
    "deep-info.keras": "[" * 100_000 + "]" * 100_000,
}


def _with_info(model: Path, out: Path, info: str) -> None:
    """A copy of the `model` archive whose gigapath.json is `info`."""
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(out, "w") as copy:
        for entry in source.infolist():
            copy.writestr(entry, info if entry.filename == "gigapath.json" else source.read(entry))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of good and bad inputs, shared by every case (each case checks it is left exactly as it was)."""
    import keras
    from keras import layers

    from gigapath_desktop.model import build_unet, save_model
    from gigapath_desktop.slides.synthetic import make_slide

    folder = tmp_path_factory.mktemp("bad-inputs")
    make_slide(folder / "slide.tif", 700, 500, seed=1)
    save_model(build_unet(), folder / "model.keras")
    damaged = build_unet()
    damaged.set_weights([np.full_like(w, np.nan) for w in damaged.get_weights()])
    save_model(damaged, folder / "nan-weights.keras")
    for name, channels, out, activation in [("four-outputs", 3, 4, "sigmoid"), ("logits", 3, 1, None),
                                           ("grey-input", 1, 1, "sigmoid")]:
        image = keras.Input((None, None, channels), dtype="uint8")
        x = layers.Rescaling(1 / 255)(image)
        save_model(keras.Model(image, layers.Conv2D(out, 1, activation=activation)(x)), folder / f"{name}.keras")
    for name, info in MODEL_INFO.items():
        _with_info(folder / "model.keras", folder / name, info)
    (folder / "notes.txt").write_text("not a slide, not a model")
    (folder / "truncated.svs").write_bytes(CMU.read_bytes()[:5000])
    (folder / "a-folder").mkdir()
    (folder / "link.geojson").symlink_to(folder / "notes.txt")
    (folder / "old-run").mkdir()  # a run whose checkpoints were deleted to save space
    (folder / "old-run" / "metrics.csv").write_text("step,loss\n1,0.5\n")
    for name, data in GEOJSON.items():
        (folder / name).write_text(json.dumps(data))
    (folder / "deep.geojson").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "not-json.geojson").write_text("{ this is not json")
    (folder / "bigint.geojson").write_text('{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                                           f'[[[{"9" * 5000}, 0], [1, 0], [1, 1], [0, 0]]]}}}}')
    (folder / "labels.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [_feature()]}))
    (folder / "misspelt.json").write_text(json.dumps({"train": [{"slide": "slide.tif", "labels": "labels.geojson",
                                                                 "mod": "sparse", "regions": [[0, 0, 256, 256]]}]}))
    return folder


def _cases() -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, with {w} for the inputs folder; a phrase the error line must hold)."""
    slide, model = "{w}/slide.tif", "{w}/model.keras"
    predict = ["predict", slide, "--model", model]
    train = ["train", slide, "--region", "0,0,400,300", "--steps", "1", "--out", "{w}/run"]
    cases = {
        "info: missing slide": (["info", "{w}/nope.svs"], "no such file"),
        "info: text file": (["info", "{w}/notes.txt"], "notes.txt"),
        "info: truncated slide": (["info", "{w}/truncated.svs"], "truncated.svs"),
        "info: a folder": (["info", "{w}/a-folder"], "a-folder: is a folder, not a slide file"),
        "make-slide: out not a TIFF": (["make-slide", "{w}/x.png", "--width", "5", "--height", "5"],
                                       "OUT must end in .tif or .tiff"),
        "make-slide: zero width": (["make-slide", "{w}/new.tif", "--width", "0", "--height", "5"], "positive"),
        "make-slide: absurd size": (["make-slide", "{w}/new.tif", "--width", "99999999", "--height", "5"], "at most"),
        "make-slide: mpp nan": (["make-slide", "{w}/new.tif", "--width", "5", "--height", "5", "--mpp", "nan"], "--mpp"),
        "make-slide: mpp 0": (["make-slide", "{w}/new.tif", "--width", "5", "--height", "5", "--mpp", "0"], "--mpp"),
        "make-slide: mpp -1": (["make-slide", "{w}/new.tif", "--width", "5", "--height", "5", "--mpp", "-1"], "--mpp"),
        "make-slide: mpp 1e-300": (["make-slide", "{w}/new.tif", "--width", "5", "--height", "5", "--mpp", "1e-300"],
                                   "--mpp"),
        "make-slide: negative seed": (["make-slide", "{w}/new.tif", "--width", "5", "--height", "5", "--seed", "-1"],
                                      "--seed"),
        "make-slide: missing folder": (["make-slide", "{w}/no/new.tif", "--width", "5", "--height", "5"],
                                       "does not exist"),
        "make-slide: out is a folder": (["make-slide", "{w}/a-folder", "--width", "5", "--height", "5"], "is a folder"),
        "make-slide: realistic too big": (["make-slide", "{w}/new.tif", "--width", "20000", "--height", "20000",
                                           "--realistic"], "100 MP"),
        "make-slide: geojson over the slide": (["make-slide", "{w}/new.tif", "--width", "5", "--height", "5",
                                                "--geojson", "{w}/new.tif"], "--geojson must end in .geojson"),
        "predict: probabilities named .png": ([*predict, "--out", "{w}/m.tif", "--probabilities", "{w}/p.png"],
                                              "--probabilities must end in .tif or .tiff"),
        "detect-tissue: out named .tif": (["detect-tissue", slide, "--out", "{w}/slide2.tif"], "must end in .geojson"),
        "detect-tissue: out is the slide": (["detect-tissue", slide, "--out", slide], "input"),
        "detect-tissue: missing folder": (["detect-tissue", slide, "--out", "{w}/no/t.geojson"], "does not exist"),
        "detect-tissue: out is a folder": (["detect-tissue", slide, "--out", "{w}/a-folder"], "is a folder"),
        "detect-tissue: out is a link": (["detect-tissue", slide, "--out", "{w}/link.geojson"], "is a link"),
        "detect-tissue: out is a device": (["detect-tissue", slide, "--out", "/dev/null"], "or a device"),
        "predict: out is the slide": ([*predict, "--out", slide], "input"),
        "predict: out is the model": ([*predict, "--out", model], "--out must end in .tif or .tiff"),
        "predict: geojson in a missing folder": ([*predict, "--out", "{w}/m.tif", "--geojson", "{w}/no/m.geojson"],
                                                 "does not exist"),
        "predict: probabilities are the out": ([*predict, "--out", "{w}/m.tif", "--probabilities", "{w}/m.tif"],
                                                "different files"),
        "predict: slide-mpp nan": ([*predict, "--out", "{w}/m.tif", "--slide-mpp", "nan"], "--slide-mpp"),
        "predict: slide-mpp 1e-300": ([*predict, "--out", "{w}/m.tif", "--slide-mpp", "1e-300"], "--slide-mpp"),
        "predict: slide is a folder": (["predict", "{w}/a-folder", "--model", model, "--out", "{w}/m.tif"],
                                       "is a folder"),
        "predict: remote probabilities": ([*predict, "--out", "{w}/m.tif", "--probabilities", "{w}/p.tif", "--remote",
                                           "http://127.0.0.1:9"], "--probabilities"),
        "predict: downsample nan": ([*predict, "--out", "{w}/m.tif", "--downsample", "nan"], "--downsample"),
        "predict: threshold nan": ([*predict, "--out", "{w}/m.tif", "--threshold", "nan"], "--threshold"),
        "predict: threshold 1.5": ([*predict, "--out", "{w}/m.tif", "--threshold", "1.5"], "--threshold"),
        "predict: tiny tile": ([*predict, "--out", "{w}/m.tif", "--tile", "8"], "error: --tile must lie in [64, 16384], got 8"),
        "predict: huge tile": ([*predict, "--out", "{w}/m.tif", "--tile", "100000"], "--tile must lie in [64, 16384]"),
        "predict: threshold and downsample": ([*predict, "--out", "{w}/m.tif", "--threshold", "1.5", "--downsample",
                                               "0"], "--threshold must lie in [1/255, 1), got 1.5; --downsample must "
                                                     "lie in [1, 1e6], got 0"),
        "predict: out not a TIFF": ([*predict, "--out", "{w}/m.png"], "--out must end in .tif or .tiff"),
        "predict: region outside": ([*predict, "--out", "{w}/m.tif", "--region", "600,0,500,100"], "outside"),
        "predict: region words": ([*predict, "--out", "{w}/m.tif", "--region", "a,b,c,d"], "four integers"),
        "predict: level 99": ([*predict, "--out", "{w}/m.tif", "--level", "99"], "level"),
        "predict: missing model": (["predict", slide, "--model", "{w}/nope.keras", "--out", "{w}/m.tif"], "no such"),
        "predict: model is text": (["predict", slide, "--model", "{w}/notes.txt", "--out", "{w}/m.tif"], "not a .keras"),
        "predict: four output channels": (["predict", slide, "--model", "{w}/four-outputs.keras", "--out", "{w}/m.tif"],
                                          "4 output channels"),
        "predict: raw logits": (["predict", slide, "--model", "{w}/logits.keras", "--out", "{w}/m.tif"], "sigmoid"),
        "predict: NaN weights": (["predict", slide, "--model", "{w}/nan-weights.keras", "--out", "{w}/m.tif"],
                                 "non-finite"),
        "predict: grey input": (["predict", slide, "--model", "{w}/grey-input.keras", "--out", "{w}/m.tif"], "RGB"),
        "predict: infinite class colour": (["predict", slide, "--model", "{w}/infinite-colour.keras", "--out",
                                            "{w}/m.tif"], "class list is damaged"),
        "predict: model at 1e-300 µm/px": (["predict", slide, "--model", "{w}/tiny-mpp.keras", "--out", "{w}/m.tif"],
                                           "resolution"),
        "predict: model info nested 100k deep": (["predict", slide, "--model", "{w}/deep-info.keras", "--out",
                                                  "{w}/m.tif"], "nested too deeply"),
        "predict: remote region words": ([*predict, "--out", "{w}/m.tif", "--region", "a,b,c,d", "--remote",
                                          "http://127.0.0.1:9"], "four integers"),
        "predict: remote token file of several words": ([*predict, "--out", "{w}/m.tif", "--remote", "http://127.0.0.1:9",
                                                         "--token-file", "{w}/notes.txt"], "(its text is not shown)"),
        "serve: token file of several words": (["serve", "--token-file", "{w}/notes.txt", "--slides-root", "{w}",
                                                "--data-dir", "{w}/data"], "one word on one line"),
        "serve: 2000 workers": (["serve", "--token-file", "{w}/notes.txt", "--slides-root", "{w}", "--data-dir",
                                 "{w}/data", "--workers", "2000"], "--workers must be between 1 and 1024"),
        "train: remote resume": ([*train, "--auto-labels", "--resume", "--remote", "http://127.0.0.1:9"],
                                 "--resume does not apply with --remote"),
        "train: remote workers": ([*train, "--auto-labels", "--workers", "2", "--remote", "http://127.0.0.1:9"],
                                  "--workers does not apply with --remote"),
        "train: remote run under a file": (["train", slide, "--region", "0,0,400,300", "--auto-labels", "--out",
                                            "{w}/notes.txt/run", "--remote", "http://127.0.0.1:9"],
                                           "cannot create the run folder"),
        "predict: remote tile": ([*predict, "--out", "{w}/m.tif", "--tile", "1024", "--remote", "http://127.0.0.1:9"],
                                 "--tile does not apply with --remote"),
        "train: ray address of nobody": ([*train, "--auto-labels", "--ray-address", "127.0.0.1:9"],
                                         "cannot reach Ray at 127.0.0.1:9"),
        "serve: job-nice 30": (["serve", "--token-file", "{w}/notes.txt", "--slides-root", "{w}", "--data-dir",
                                "{w}/data", "--job-nice", "30"], "--job-nice"),
        "train: lr nan": ([*train, "--auto-labels", "--lr", "nan"], "finite"),
        "train: lr inf": ([*train, "--auto-labels", "--lr", "inf"], "finite"),
        "train: lr 5": ([*train, "--auto-labels", "--lr", "5"], "learning rate"),
        "train: slide-mpp 0": ([*train, "--auto-labels", "--slide-mpp", "0"], "slide_mpp"),
        "train: mpp 1e-300": ([*train, "--auto-labels", "--mpp", "1e-300"], "'mpp'"),
        "train: mpp 0.01, 50x finer than the slide": ([*train, "--auto-labels", "--mpp", "0.01"], "at most 4x"),
        "train: slide is a folder": (["train", "{w}/a-folder", *train[2:], "--auto-labels"], "is a folder"),
        "train: negative seed": ([*train, "--auto-labels", "--seed", "-1"], "seed"),
        "train: a seed past 2**32": ([*train, "--auto-labels", "--seed", "9" * 23], "seed must lie in"),
        "train: steps that never end": ([*train[:-4], "--steps", "9" * 20, "--auto-labels", "--out", "{w}/run"],
                                        "at most 10,000,000"),
        "train: a 5000-digit number in the labels": ([*train, "--labels", "{w}/bigint.geojson"], "not valid JSON"),
        "train: zero steps": ([*train[:-4], "--steps", "0", "--auto-labels", "--out", "{w}/run"], "steps"),
        "train: tiny tile": ([*train, "--auto-labels", "--tile", "3"], "tile"),
        "train: out is a file": ([*train[:-2], "--auto-labels", "--out", "{w}/notes.txt"], "is a file"),
        "train: an empty out": ([*train[:-2], "--auto-labels", "--out", ""], "--out is empty"),
        "train: demo with a slide": (["train", "--demo", slide, "--steps", "1", "--out", "{w}/run"],
                                     "give no slide"),
        "predict: downsample inf": ([*predict, "--out", "{w}/m.tif", "--png", "{w}/m.png", "--downsample", "inf"],
                                    "--downsample must lie in [1, 1e6]"),
        "predict-batch: an empty out": (["predict-batch", slide, "--model", model, "--out", " "], "--out is empty"),
        "train: out holds a run's files": ([*train[:-2], "--auto-labels", "--out", "{w}/old-run"],
                                           "holds metrics.csv, which a new run would write over"),
        "train: resume nothing": ([*train, "--auto-labels", "--resume"], "nothing to resume"),
        "train: labels missing": ([*train, "--labels", "{w}/nope.geojson"], "no such file"),
        "train: labels a folder": ([*train, "--labels", "{w}/a-folder"], "is a folder"),
        "train: labels not JSON": ([*train, "--labels", "{w}/not-json.geojson"], "not valid JSON"),
        "train: labels nested 100k deep": ([*train, "--labels", "{w}/deep.geojson"], "nested too deeply"),
        "train: spec nested 100k deep": (["train", "--spec", "{w}/deep.geojson"], "nested too deeply"),
        "train: spec item key misspelt": (["train", "--spec", "{w}/misspelt.json"], "['mod']"),
        "train: spec with a level": (["train", "--spec", "{w}/misspelt.json", "--level", "1"], "give none of them"),
    }
    for name in GEOJSON:
        cases[f"train: labels {name}"] = ([*train, "--labels", f"{{w}}/{name}"], name)
    return cases


CASES = _cases()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _main(args: list[str]) -> int:
    """The CLI in-process, leaving this process's SIGTERM handler as it was."""
    from gigapath_desktop.cli import main

    previous = signal.getsignal(signal.SIGTERM)
    try:
        return main(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_error_line(name: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args, phrase = CASES[name]
    before = _snapshot(work)
    code = _main([a.replace("{w}", str(work)) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert phrase in lines[0] and "Traceback" not in err, err
    assert _snapshot(work) == before, "a file was created, changed or removed"


def test_a_hole_or_speck_limit_past_the_region_is_every_hole_and_speck(work: Path, tmp_path: Path) -> None:
    """1e308 µm² is more mask pixels than a float holds (it overflowed); it means what any area past the region's
    does: every hole is filled, every speck removed (1e6 µm² is past the 700 x 500 px slide's 87 500 µm²)."""
    from gigapath_desktop.slides import Region, open_slide

    masks = []
    for area in ("1e308", "1e6"):
        out = tmp_path / f"{area}.tif"
        assert _main(["predict", str(work / "slide.tif"), "--model", str(work / "model.keras"), "--out", str(out),
                      "--slide-mpp", "0.5", "--min-hole", area, "--min-object", area]) == 0
        with open_slide(out) as mask:
            masks.append(mask.read_region(Region(0, 0, *mask.dimensions)))
    np.testing.assert_array_equal(*masks)


def test_a_batch_names_a_failed_slide_once(work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The error line and the summary's row name the slide already; the message does not repeat it."""
    (tmp_path / "empty.svs").write_bytes(b"")
    code = _main(["predict-batch", str(tmp_path / "empty.svs"), "--model", str(work / "model.keras"), "--out",
                  str(tmp_path / "out")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and lines[0].count("empty.svs") == 1, lines
    with (tmp_path / "out" / "summary.csv").open(encoding="utf-8") as f:
        (row,) = csv.DictReader(f)
    assert row["error"].startswith("not recognised as a slide"), row


def _limit_file_size(limit: int) -> None:
    """In the child: files may not grow past `limit` bytes, and writing more fails (EFBIG, as on a full disk)
    instead of killing the process."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.parametrize("command, limit", [
    (["make-slide", "{w}/kept.tif", "--width", "3000", "--height", "2000"], 65536),
    (["detect-tissue", str(CMU), "--out", "{w}/kept.geojson"], 2048),
])
def test_a_full_disk_is_one_error_line_and_changes_nothing(command: list[str], limit: int, tmp_path: Path) -> None:
    for name in ("kept.tif", "kept.geojson"):  # what a user had under the output's name must survive
        (tmp_path / name).write_text("the user's own file")
    before = _snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-m", "gigapath_desktop", *[a.replace("{w}", str(tmp_path)) for a in command]],
                            capture_output=True, text=True, preexec_fn=lambda: _limit_file_size(limit))
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "cannot write" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(tmp_path) == before


def test_a_full_disk_while_predicting_stops_the_reads_before_the_slide_closes(work: Path, synthetic_slide: Path,
                                                                             tmp_path: Path) -> None:
    """Tiles are read ahead on threads; a write failing mid-run used to close the slide under them (OpenSlide's
    'tc->outstanding == 0' abort, or a segfault, in three runs of four, instead of the error line). A real full disk:
    a 256 KiB tmpfs, mounted in a mount namespace of its own (unshare), so root is not needed. (A file-size limit
    does not do: the mask's scratch array is made at full size up front, so it fails before any tile is read.)"""
    disk = tmp_path / "disk"
    disk.mkdir()
    command = [sys.executable, "-m", "gigapath_desktop", "predict", str(synthetic_slide), "--model",
               str(work / "model.keras"), "--tile", "512", "--out", str(disk / "m.tif")]
    script = f"mount -t tmpfs -o size=256k tmpfs {shlex.quote(str(disk))} && exec {shlex.join(command)}"
    private = _private_mounts()
    for _ in range(4):
        result = subprocess.run([*private, "sh", "-c", script], capture_output=True, text=True)
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(lines) == 1 and "No space left" in lines[0], result.stderr[-2000:]
        assert list(disk.iterdir()) == [], "nothing is left in the outer folder either"


def _private_mounts() -> list[str]:
    """The unshare command that gives a child a mount namespace of its own: as a mapped root user (no privileges
    needed where user namespaces are allowed), else as root. A machine that allows neither cannot make a small
    full disk without touching the host's mounts, so the test above says so and stops there."""
    for command in (["unshare", "--mount", "--map-root-user"], ["unshare", "--mount"]):
        try:
            if subprocess.run([*command, "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True).returncode == 0:
                return command
        except FileNotFoundError:
            break
    pytest.skip("this machine lets no process mount a private tmpfs (unshare/user namespaces not permitted)")
