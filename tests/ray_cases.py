"""The exact step on Ray workers (a real local Ray with 2 CPU actors) equals the in-process step.

Run by test_ray.py in a pytest process of its own: Ray's node processes then live and die with that process only."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import ray

from gigapath_desktop.errors import Cancelled, TrainingError, WorkerLost
from gigapath_desktop.model import build_unet
from gigapath_desktop.slides import ArrayCache, Region, open_slide
from gigapath_desktop.slides.synthetic import mask_path_for
from gigapath_desktop.training.augment import Augmentation
from gigapath_desktop.training.data import RegionData
from gigapath_desktop.training.gradients import region_gradients, region_sums



def _wait_for_a_ray_head(timeout: float = 60.0) -> None:
    """Until `ray start` has recorded its head as this machine's latest (where a plain ray.init() would join it)."""
    from ray._private.services import get_ray_address_from_environment

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get_ray_address_from_environment("auto", None):
                return
        except ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError("the other Ray did not start")


def _worst(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(a, b))


def _losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_train_with_two_workers_writes_the_same_losses_as_one(synthetic_slide: Path, tmp_path: Path) -> None:
    """(First in this file: it starts Ray itself, as the command does, before the shared workers exist.) Another
    Ray running on the machine (a user's `ray start`) is left alone: joining it failed ("num_cpus must not be
    provided")."""
    from gigapath_desktop.cli import main

    common = ["train", str(synthetic_slide), "--region", "0,0,1024,768", "--auto-labels", "--steps", "3",
              "--tile", "256", "--seed", "2"]
    other = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--num-cpus", "1",
                              "--port", "0", "--disable-usage-stats", "--block"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_a_ray_head()
        for workers in (1, 2):
            assert main(common + ["--out", str(tmp_path / f"w{workers}"), "--workers", str(workers)]) == 0
        assert ray.cluster_resources()["CPU"] >= 2, "a Ray of its own, not the other one's 1 CPU"
    finally:
        os.killpg(other.pid, signal.SIGTERM)
        other.wait(timeout=60)
    one, two = _losses(tmp_path / "w1"), _losses(tmp_path / "w2")
    assert len(one) == len(two) == 3
    np.testing.assert_allclose(two, one, rtol=1e-6, atol=0)
    assert "2 Ray worker(s)" in (tmp_path / "w2" / "config.json").read_text()


def test_new_workers_get_the_model_an_earlier_executor_had(region: RegionData) -> None:
    """(Before the shared workers exist: they would hold both CPUs of the local Ray.)"""
    from gigapath_desktop.training.ray_executor import RayExecutor

    model = build_unet()
    first = RayExecutor(2)
    expected = region_sums(model, region.image, region.labels, tile=256, executor=first).loss()
    first.close()
    second = RayExecutor(2)
    assert region_sums(model, region.image, region.labels, tile=256, executor=second).loss() == expected
    second.close()


@pytest.fixture(scope="module")
def executor():  # noqa: ANN201
    from gigapath_desktop.training.ray_executor import RayExecutor

    workers = RayExecutor(2)
    yield workers
    workers.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def region(synthetic_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> RegionData:
    """A region on disk (the cache's DiskArrays), so workers read their own tiles."""
    cache = ArrayCache(tmp_path_factory.mktemp("cache"))
    area = Region(0, 0, 900, 700)
    with open_slide(synthetic_slide) as slide, open_slide(mask_path_for(synthetic_slide)) as mask:
        truth = (mask.read_region(area)[..., 0] > 127).astype(np.uint8)
        image = cache.get_or_build("image", (700, 900, 3), np.uint8, lambda out: out.__setitem__(
            (slice(None), slice(None)), slide.read_region(area)))
    labels = cache.get_or_build("labels", (700, 900), np.uint8, lambda out: out.__setitem__(
        (slice(None), slice(None)), truth))
    return RegionData(image, labels)


# float32: workers and the local process round their reductions differently (this file alone showed 1.4e-5 of a
# tensor's largest gradient, at HEAD before the ink change too), while float64 agrees to 1e-12
@pytest.mark.parametrize("dtype, bound", [("float64", 1e-12), ("float32", 5e-5)])
def test_a_step_on_two_workers_equals_the_local_step(executor, region: RegionData, dtype: str, bound: float) -> None:  # noqa: ANN001
    keras.utils.set_random_seed(5)
    model = build_unet()
    augmented = Augmentation.draw(seed=1, step=3, ink=1.0).apply(region)  # workers apply it themselves, ink too
    local = region_gradients(model, augmented.image, augmented.labels, tile=256, dtype=dtype)
    done: list[int] = []
    remote = region_gradients(model, augmented.image, augmented.labels, tile=256, dtype=dtype, executor=executor,
                              progress=lambda d, total: done.append(total))
    assert len(done) == done[0] and done[0] >= 2 * 9, "every tile of both passes was reported"
    assert abs(remote[0] - local[0]) <= bound * abs(local[0]) and abs(remote[1] - local[1]) <= bound
    assert _worst(remote[2], local[2]) <= bound
    model.set_weights([w * 0.9 for w in model.get_weights()])  # the next step's weights reach the workers
    assert region_sums(model, region.image, region.labels, tile=256, executor=executor).loss() == pytest.approx(
        region_sums(model, region.image, region.labels, tile=256).loss(), rel=1e-6)


def test_a_stop_takes_effect_between_tiles(executor, region: RegionData) -> None:  # noqa: ANN001
    model = build_unet()
    calls = []
    with pytest.raises(Cancelled):
        region_sums(model, region.image, region.labels, tile=128, executor=executor,
                    cancel=lambda: calls.append(1) or len(calls) > 3)
    assert len(calls) == 4


def test_a_lost_worker_fails_the_step_with_one_clear_error(region: RegionData) -> None:
    from gigapath_desktop.training.ray_executor import RayExecutor

    executor = RayExecutor(2)
    ray.kill(executor.workers[0])
    with pytest.raises(WorkerLost, match="worker was lost"):  # (the command exits 75: a server's job resumes)
        region_gradients(build_unet(), region.image, region.labels, tile=256, executor=executor)
    executor.close()


def test_more_workers_than_cpus_is_said_at_once(region: RegionData) -> None:
    """They waited 5 minutes for workers that could not be placed (and a local Ray was given as many CPUs as asked
    for: 6 TensorFlow workers on 2 cores, 5 GB)."""
    from gigapath_desktop.training.ray_executor import RayExecutor

    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(TrainingError, match=f"{cpus + 1} workers need {cpus + 1} CPUs; the Ray here has {cpus}"):
        RayExecutor(cpus + 1)
