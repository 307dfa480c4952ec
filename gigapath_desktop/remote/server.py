"""The job server: `gigapath-desktop serve`. FastAPI on uvicorn; every endpoint but /health needs the bearer token.

Slides are named by their path under the slides root, confined with resolve() + is_relative_to (no `..`, absolute
paths or symlinks out of it); request bodies are bounded; a bad request gets a 4xx with a message. Training and
prediction run on the job runner's thread, so the server keeps answering while a job trains; live metrics stream
as Server-Sent Events with the fields of metrics.csv.
"""
from __future__ import annotations

import asyncio
import io
import json
import math
import secrets
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gigapath_desktop import __version__
from gigapath_desktop.annotations.tissue import MIN_AREA_UM2
from gigapath_desktop.annotations import Role
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.remote.runner import PREDICT_FILES, Runner
from gigapath_desktop.remote.store import LIVE, Job, JobStore
from gigapath_desktop.training.config import RUN_FILES, TrainConfig
from gigapath_desktop.training.metrics import read_metrics, typed

METRICS = "metrics.csv"
POLL_SECONDS = 0.5
KEEP_ALIVE_SECONDS = 5.0  # a comment line this often, so clients notice a dead connection and can stop reading


@dataclass
class ServerConfig:
    token: str
    slides_root: Path
    data_dir: Path
    workers: int = 1
    ray_address: str | None = None
    job_nice: int = 10
    max_body_bytes: int = 64 * 2**20  # GeoJSON labels of a whole slide fit; anything larger is refused (413)


class TrainRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # true is no step count, "7" no seed
    slide: str = Field(description="path under the slides root")
    region: list[int] = Field(min_length=4, max_length=4, description="x, y, width, height in level-0 pixels")
    level: int = 0
    val_region: list[int] | None = Field(None, min_length=4, max_length=4)
    labels: Any = Field(None, description="GeoJSON (FeatureCollection); none: automatic tissue detection")
    steps: int = TrainConfig.steps
    learning_rate: float = TrainConfig.learning_rate
    tile: int | Literal["auto"] | None = "auto"  # "auto": planned on the server, within its default memory budget
    seed: int = 0
    augment: bool = True
    checkpoint_every: int = 10
    fold: int = TrainConfig.fold


class PredictRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    slide: str
    model_job: str = Field(description="a finished training job whose model predicts")
    region: list[int] | None = Field(None, min_length=4, max_length=4)
    level: int = 0
    threshold: float = 0.5
    binary: bool = False
    min_hole_um2: float = MIN_AREA_UM2  # the tissue mask's clean-up, as `predict --min-hole / --min-object`
    min_object_um2: float = 0.0


def create_app(config: ServerConfig) -> FastAPI:
    root = config.slides_root.resolve()
    store = JobStore(config.data_dir / "jobs.sqlite")
    interrupted = store.mark_interrupted()
    runner = Runner(store, config.data_dir, root, config.workers, config.ray_address, config.job_nice)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        runner.close()

    app = FastAPI(title="GigaPath Desktop job server", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)  # (no unauthenticated schema or docs)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)  # type: ignore[arg-type]
    app.state.store, app.state.runner, app.state.interrupted = store, runner, interrupted

    def authorised(authorization: str | None = Header(None)) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), config.token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    def slide_path(relative: str) -> Path:
        """The slide `relative` names under the root; 400 for anything that leads out of it (.., absolute, links)."""
        if not relative or "\0" in relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise HTTPException(400, f"{relative!r}: slides are named by their path under the slides root")
        candidate = (root / relative).resolve()
        if not candidate.is_relative_to(root):
            raise HTTPException(400, f"{relative!r}: slides are named by their path under the slides root")
        if not candidate.is_file():
            raise HTTPException(404, f"{relative!r}: no such slide")
        return candidate

    def job_of(job_id: str) -> Job:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    api = APIRouter(dependencies=[Depends(authorised)])

    @api.get("/slides")
    def slides() -> list[dict[str, Any]]:
        from gigapath_desktop.slides import SLIDE_SUFFIXES, open_slide

        found = []
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in SLIDE_SUFFIXES and p.is_file()
                           and p.resolve().is_relative_to(root)):  # (links out of the root are not the root's)
            name = str(path.relative_to(root))
            entry: dict[str, Any] = {"path": name}
            try:
                with open_slide(path) as slide:
                    entry.update(dimensions=list(slide.dimensions), mpp=slide.mpp, identity=slide.fingerprint)
            except GigaPathError as exc:
                entry["error"] = str(exc).replace(str(path), name)
            found.append(entry)
        return found

    @api.get("/slides/thumbnail")
    def thumbnail(path: str, size: int = Query(256, ge=16, le=2048)) -> Response:
        from PIL import Image

        from gigapath_desktop.slides import open_slide

        slide = slide_path(path)
        try:
            with open_slide(slide) as opened:
                rgb = opened.thumbnail(size)
        except GigaPathError as exc:
            raise HTTPException(422, str(exc).replace(str(slide), path)) from None
        png = io.BytesIO()
        Image.fromarray(rgb).save(png, "PNG")
        return Response(png.getvalue(), media_type="image/png")

    @api.post("/jobs/train", status_code=201)
    def submit_train(request: TrainRequest) -> dict[str, Any]:
        from gigapath_desktop.annotations import write_geojson
        from gigapath_desktop.annotations.geojson import from_geojson

        slide = slide_path(request.slide)
        training = {"steps": request.steps, "learning_rate": request.learning_rate, "tile": request.tile,
                    "seed": request.seed, "augment": request.augment, "checkpoint_every": request.checkpoint_every,
                    "fold": request.fold}
        try:
            TrainConfig(**training)
            labels = None if request.labels is None else from_geojson(request.labels)
        except GigaPathError as exc:
            raise HTTPException(422, str(exc)) from None
        _check_regions(slide, request.slide, [r for r in (request.region, request.val_region) if r], request.level)
        if labels is not None and not any(a.role is Role.LABEL for a in labels):
            raise HTTPException(422, "labels: the GeoJSON holds no label areas (polygons of a class) to learn from; "
                                "send some, or no labels for automatic tissue detection")
        params = {"slide": str(slide.relative_to(root)), "region": request.region, "level": request.level,
                  "val_region": request.val_region, "training": training, "labels": labels is not None}
        job = store.add("train", params)
        runner.folder(job.id).mkdir(parents=True)
        if labels is not None:
            write_geojson(labels, runner.folder(job.id) / "labels.geojson")
        runner.submit(job)
        return job.as_dict()

    @api.post("/jobs/predict", status_code=201)
    def submit_predict(request: PredictRequest) -> dict[str, Any]:
        slide = slide_path(request.slide)
        _check_regions(slide, request.slide, [request.region], request.level)  # now, not after the jobs before it
        source = job_of(request.model_job)
        model = runner.run_dir(source) / "model.keras"
        if source.kind != "train" or source.state != "finished" or not model.is_file():
            raise HTTPException(409, f"job {request.model_job} has no finished model")
        if not 0 < request.threshold < 1:
            raise HTTPException(422, "threshold must lie in (0, 1)")
        if not (0 <= request.min_hole_um2 < math.inf and 0 <= request.min_object_um2 < math.inf):
            raise HTTPException(422, "min_hole_um2 and min_object_um2 must be areas of 0 µm² or more")
        params = request.model_dump() | {"slide": str(slide.relative_to(root))}
        job = store.add("predict", params)
        runner.folder(job.id).mkdir(parents=True)
        runner.submit(job)
        return job.as_dict()

    @api.get("/jobs")
    def jobs() -> list[dict[str, Any]]:
        return [job.as_dict() for job in store.all()]

    @api.get("/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return job_of(job_id).as_dict()

    @api.post("/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        job = job_of(job_id)
        if job.state in LIVE:
            runner.cancel(job_id)
        return job_of(job_id).as_dict()

    @api.post("/jobs/{job_id}/resume")
    def resume(job_id: str) -> dict[str, Any]:
        job = job_of(job_id)
        if job.state != "interrupted":
            raise HTTPException(409, f"job {job_id} is {job.state}; only interrupted jobs resume")
        runner.resume(job)
        return job_of(job_id).as_dict()

    @api.get("/jobs/{job_id}/files/{name}")
    def download(job_id: str, name: str) -> Response:
        job = job_of(job_id)
        if name not in (RUN_FILES if job.kind == "train" else PREDICT_FILES):
            raise HTTPException(404, f"a {job.kind} job has no file {name!r}")
        path = runner.run_dir(job) / name
        if not path.is_file():
            raise HTTPException(404, f"{name} is not there (yet)")
        attachment = {"Content-Disposition": f'attachment; filename="{name}"'}
        if name == METRICS:  # grows while the job trains: sent as read at one moment, its length as declared
            return Response(path.read_bytes(), media_type="text/csv", headers=attachment)
        if name == "config.json":  # the run's record, its slide and labels named as the client knows them
            record = _scrubbed(json.loads(path.read_text()), lambda text: runner.public(job_id, text))
            return Response(json.dumps(record, indent=1), media_type="application/json", headers=attachment)
        return FileResponse(path, filename=name)

    @api.get("/jobs/{job_id}/events")
    def events(job_id: str) -> StreamingResponse:
        job = job_of(job_id)
        metrics = runner.run_dir(job) / METRICS
        return StreamingResponse(_stream(store, job_id, metrics), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    app.include_router(api)

    @app.exception_handler(GigaPathError)
    async def gigapath_error(request: Any, exc: GigaPathError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Any, exc: RequestValidationError) -> JSONResponse:
        """What is wrong with each field, without echoing the input (a NaN in it cannot be sent back as JSON)."""
        said = [f"{'.'.join(str(part) for part in error['loc'][1:]) or error['loc'][0]}: {error['msg']}"
                for error in exc.errors()]
        return JSONResponse({"detail": "; ".join(said)}, status_code=422)

    return app


def serve(app: FastAPI, listening: socket.socket) -> None:
    """Run `app` on the bound socket until Ctrl-C or SIGTERM, which stop the running job at once: the streams
    that follow it end with it, so the server can stop (instead of waiting for the job to finish)."""
    runner: Runner = app.state.runner

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            runner.close()
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30)).run(sockets=[listening])


def _check_regions(slide: Path, name: str, regions: list[list[int] | None], level: int) -> None:
    """422 unless `slide` opens and every region (None: the whole slide) lies on it at `level`; said with the
    slide's `name` (its path under the root: the server's folders are not the client's business)."""
    from gigapath_desktop.slides import Region, open_slide

    try:
        with open_slide(slide) as opened:
            for region in regions:
                opened.check_region(Region(*(region or (0, 0, *opened.dimensions)), level))
    except GigaPathError as exc:
        raise HTTPException(422, str(exc).replace(str(slide), name)) from None


def _scrubbed(value: Any, public: Callable[[str], str]) -> Any:
    """`value` (parsed JSON) with `public` applied to every string, keys too."""
    if isinstance(value, dict):
        return {public(k): _scrubbed(v, public) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, public) for v in value]
    return public(value) if isinstance(value, str) else value


async def _stream(store: JobStore, job_id: str, metrics: Path) -> AsyncIterator[str]:
    """Each metrics.csv row as an SSE `step` event as it is written, then one `end` event with the job's state.

    A resumed run rewrites the file from its checkpoint: rows sent already and unchanged are not sent again, and
    steps redone after the checkpoint are (a client keeps the last row of each step)."""
    sent: dict[object, dict] = {}  # step -> the row sent for it
    quiet, seen = 0.0, None
    while True:
        job = store.get(job_id)
        version = _version(metrics)  # read again only when written since (many followers poll the same file)
        for row in await asyncio.to_thread(_rows, metrics) if version != seen else []:
            if sent.get(row["step"]) != row:
                yield f"event: step\ndata: {json.dumps(row)}\n\n"
                sent[row["step"]], quiet = row, 0.0
        seen = version
        if job is None or job.state not in LIVE:
            yield f"event: end\ndata: {json.dumps(job.as_dict() if job else {})}\n\n"
            return
        if quiet >= KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(POLL_SECONDS)
        quiet += POLL_SECONDS


def _version(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _rows(metrics: Path) -> list[dict[str, int | float | None]]:
    try:
        return [typed(row) for row in read_metrics(metrics)]
    except OSError:  # (not written yet)
        return []


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by Content-Length or as they stream in."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await JSONResponse({"detail": f"request body over {self.limit} bytes"}, 413)(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)
