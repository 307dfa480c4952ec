"""The exact step spread over Ray actors: the same per-tile passes as the local loop, on N workers (GPUs when the
cluster has them, one host or many).

Per step the driver sends each worker the weights (~4.6k floats), and the region as a reference: a region on disk
(`DiskArray`, or an augmented view of one) pickles as its path and augmentation, so each worker reads its own tiles
and no pixels travel; an in-memory array goes once through Ray's object store. Tiles are handed out one at a time
to whichever worker is free; the per-tile loss terms and gradients come back and the driver adds them up in plan
order, as the local loop does, so the result is the same. A stop or pause takes effect before the next tile is
handed out; a lost worker fails the step with one clear error and the weights of the last whole step are kept.
Ray's dashboard is not started (it is unauthenticated: CVE-2023-48022).
"""
from __future__ import annotations

import os
import socket
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import keras
import numpy as np

from gigapath_desktop.errors import Cancelled, TrainingError, WorkerLost
from gigapath_desktop.model.io import load_model, save_model
from gigapath_desktop.model.tiling import TilePlan

START_SECONDS = 300  # for the workers to be placed and load TensorFlow
REACH_SECONDS = 5  # for a TCP connection to a cluster's head
AUTH_HINT = ("a cluster with token authentication (on by default in recent Ray) also needs RAY_AUTH_MODE=token and "
             "the head's token here: ~/.ray/auth_token or RAY_AUTH_TOKEN (README: Several workers)")

try:
    import ray
except ImportError:  # pragma: no cover - the `remote` extra is not installed
    ray = None


def _check_reachable(address: str) -> None:
    """A TCP connection to the head within seconds: ray.init retried a wrong or dead address for 10+ minutes."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not (host and port.isdigit()):
        raise TrainingError(f"--ray-address {address!r}: give the head as HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise TrainingError(f"cannot reach Ray at {address}: {exc.strerror or exc or 'timed out'}") from None


class TileWorker:
    """One Ray actor: a copy of the model (compiled engine cached on it) and the per-tile passes."""

    def __init__(self) -> None:
        self.models: dict[str, keras.Model] = {}

    def prepare(self, key: str, model_bytes: bytes | None, weights: list[np.ndarray]) -> None:
        if model_bytes is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.keras"
                path.write_bytes(model_bytes)
                self.models[key] = load_model(path)
        self.models[key].set_weights(weights)

    def sums(self, key: str, dtype: str, plan: TilePlan, region: tuple, tile: Any) -> list[float]:
        from gigapath_desktop.training.gradients import tile_sums

        return tile_sums(self.models[key], dtype, plan, *region, tile)

    def grads(self, key: str, dtype: str, plan: TilePlan, region: tuple, tile: Any,
              coefficients: np.ndarray) -> list[np.ndarray]:
        from gigapath_desktop.training.gradients import tile_grads

        return tile_grads(self.models[key], dtype, plan, *region, tile, coefficients)


class RayExecutor:
    """Run tile passes on `workers` Ray actors: a local Ray started here, or the cluster at `address`."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        if ray is None:
            raise TrainingError("training on several workers needs Ray: pip install 'gigapath-desktop[remote]'")
        if workers < 1:
            raise TrainingError(f"--workers must be at least 1, got {workers}")
        if not ray.is_initialized():
            if address:
                _check_reachable(address)
                os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "10")  # (a port that is not Ray's)
            try:
                # "local": a Ray of its own, even where another one runs on this machine (a plain init would join
                # that one, whose CPUs it may not ask for); as many CPUs as the machine has (each worker is a
                # TensorFlow process: more of them than cores only costs memory)
                ray.init(address=address or "local", num_cpus=None if address else os.cpu_count() or 1,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                hint = f"; {AUTH_HINT}" if address and "RAY_AUTH_MODE" not in os.environ else ""
                raise TrainingError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}{hint}") \
                    from None
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        if workers > cpus:
            raise TrainingError(f"{workers} workers need {workers} CPUs; the Ray {'cluster' if address else 'here'} "
                                f"has {cpus:g}: ask for fewer --workers{', or add nodes' if address else ''}")
        actor = ray.remote(num_cpus=1, num_gpus=1 if gpus >= workers else 0)(TileWorker)
        self.workers = [actor.remote() for _ in range(workers)]
        self._started = False
        self._models: dict[int, tuple[weakref.ref, str]] = {}  # the models the workers hold, by id
        self.device = f"{workers} Ray worker(s)" + (f" with {workers} GPU(s)" if gpus >= workers else " on CPU")

    def sums(self, model: keras.Model, dtype: str, plan: TilePlan, image: Any, labels: Any,
             cancel: Callable[[], bool] | None, progress: Callable[[], None]) -> Iterator[list[float]]:
        return self._run("sums", model, dtype, plan, image, labels, (), cancel, progress)

    def grads(self, model: keras.Model, dtype: str, plan: TilePlan, image: Any, labels: Any,
              coefficients: np.ndarray, cancel: Callable[[], bool] | None,
              progress: Callable[[], None]) -> Iterator[list[np.ndarray]]:
        return self._run("grads", model, dtype, plan, image, labels, (coefficients,), cancel, progress)

    def close(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []

    def _run(self, method: str, model: keras.Model, dtype: str, plan: TilePlan, image: Any, labels: Any,
             extra: tuple, cancel: Callable[[], bool] | None, progress: Callable[[], None]) -> Iterator[Any]:
        pending: dict[Any, tuple[int, Any]] = {}
        try:
            return iter(self._dispatch(method, model, dtype, plan, image, labels, extra, cancel, progress, pending))
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"a training worker was lost ({type(exc).__name__}); the weights of the last whole "
                             "step are kept: resume the run once the workers are back (train --resume; a server's "
                             "job: resume it)") from None
        except ray.exceptions.RayTaskError as exc:
            raise TrainingError(f"a training worker failed: {exc.cause}") from None
        finally:
            if pending:
                ray.wait(list(pending), num_returns=len(pending))  # let in-flight tiles end before the next pass

    def _dispatch(self, method: str, model: keras.Model, dtype: str, plan: TilePlan, image: Any, labels: Any,
                  extra: tuple, cancel: Callable[[], bool] | None, progress: Callable[[], None],
                  pending: dict[Any, tuple[int, Any]]) -> list[Any]:
        """Hand tiles to free workers one at a time; the results, in plan order."""
        key = self._broadcast(model)
        region, plan_ref = ray.put((image, labels)), ray.put(plan)
        tiles = list(plan.tiles())
        results: list[Any] = [None] * len(tiles)
        free, start = list(self.workers), 0
        while start < len(tiles) or pending:
            while free and start < len(tiles):
                if cancel is not None and cancel():
                    raise Cancelled("stopped between tiles")
                worker = free.pop()
                pending[getattr(worker, method).remote(key, dtype, plan_ref, region, tiles[start], *extra)] = (start, worker)
                start += 1
            (done,), _ = ray.wait(list(pending), num_returns=1)
            index, worker = pending.pop(done)
            results[index] = ray.get(done)
            free.append(worker)
            progress()
        return results

    def _broadcast(self, model: keras.Model) -> str:
        """Send the model once per worker, then only its weights each pass (in call order, before any tile)."""
        known = self._models.get(id(model))
        model_bytes = None
        if known is not None and known[0]() is model:
            key = known[1]
        else:  # new to these workers (an id can come back for another model: the weak reference tells)
            key = f"model-{uuid.uuid4()}"
            self._models[id(model)] = (weakref.ref(model), key)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.keras"
                save_model(model, path)
                model_bytes = path.read_bytes()
        weights = ray.put(model.get_weights())
        calls = [worker.prepare.remote(key, model_bytes, weights) for worker in self.workers]
        try:
            ray.get(calls, timeout=None if self._started else START_SECONDS)
        except ray.exceptions.GetTimeoutError:
            free = ray.available_resources().get("CPU", 0)
            raise TrainingError(f"the {len(self.workers)} Ray worker(s) did not start within {START_SECONDS} s "
                                f"(the cluster has {free:g} CPU(s) free)") from None
        self._started = True
        return key
