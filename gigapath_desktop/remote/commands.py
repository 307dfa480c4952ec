"""The command-line side of the remote backend: `serve`, and `train` / `predict` with `--remote URL`."""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from gigapath_desktop.errors import GigaPathError

if TYPE_CHECKING:
    from gigapath_desktop.training.job import TrainJob


def add_commands(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the job server (train and predict for remote clients)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token-file", required=True, help="file holding the bearer token clients must send")
    p.add_argument("--slides-root", required=True, help="folder whose slides clients may use (nothing outside it)")
    p.add_argument("--data-dir", required=True, help="folder for jobs.sqlite and the jobs' runs and masks")
    p.add_argument("--workers", type=int, default=1, help="Ray workers for each training step (default 1: none)")
    p.add_argument("--ray-address", help="run the workers on this Ray cluster")
    p.add_argument("--job-nice", type=int, default=10, help="added to the server's niceness for its job processes, "
                   "0-19 (default 10: the server and other work on the machine come first; 0: none)")
    p.set_defaults(command=cmd_serve)
    p = sub.add_parser("jobs", help="a job server's jobs: list them, or follow, resume, cancel or download one")
    p.add_argument("job", nargs="?", help="the job's id (default: list every job)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--follow", action="store_true", help="show its steps until it ends")
    what.add_argument("--resume", action="store_true", help="resume an interrupted job, then follow it")
    what.add_argument("--cancel", action="store_true", help="stop it on the server")
    what.add_argument("--download", metavar="OUT", help="a finished job's results: a train job's run into the empty "
                                                        "folder OUT, a predict job's mask to OUT (.tif)")
    add_remote_options(p)
    p.set_defaults(command=cmd_jobs)


def add_remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL", help="run on the job server at URL (SLIDE: its path under the "
                                                   "server's slides root); results are downloaded")
    p.add_argument("--token-file", help="the server's bearer token (default: $GIGAPATH_TOKEN)")


def cmd_serve(args: argparse.Namespace) -> int:
    from gigapath_desktop.locks import FolderLock
    from gigapath_desktop.remote.client import read_token
    from gigapath_desktop.remote.server import ServerConfig, create_app, serve

    for bad, message in ((not 0 < args.port < 65536, "--port must lie in 1-65535"),
                         (not 1 <= args.workers <= 1024, f"--workers must be between 1 and 1024, got {args.workers}"),
                         (not 0 <= args.job_nice <= 19, "--job-nice must lie in 0-19")):
        if bad:
            raise GigaPathError(message)
    token = read_token(args.token_file)
    root, data = Path(args.slides_root), Path(args.data_dir)
    if not root.is_dir():
        raise GigaPathError(f"{root}: the slides root must be a folder")
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GigaPathError(f"{data}: cannot create the data folder ({exc.strerror})") from None
    with FolderLock(data):  # one server a data folder: another would mark this one's live jobs interrupted
        listening = _listen(args.host, args.port)
        app = create_app(ServerConfig(token, root, data, args.workers, args.ray_address, args.job_nice))
        print(f"serving {root} on http://{args.host}:{args.port} (jobs in {data})", flush=True)
        serve(app, listening)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """The way back to a job after the client lost it (a closed terminal, a server restarted mid-job)."""
    if not args.remote:
        raise GigaPathError("jobs needs the server: --remote URL")
    if not args.job and (args.follow or args.resume or args.cancel or args.download):
        raise GigaPathError("name the job: jobs ID --remote URL (jobs --remote URL lists them)")
    with _client(args) as client:
        if not args.job:
            for job in client.jobs():
                print(f"{job['id']}  {job['kind']:<7}  {job['state']:<11}  {job['params'].get('slide', '')}  "
                      f"{str(job['message']).splitlines()[-1] if job['message'] else ''}")
            return 0
        job = client.job(args.job)
        if args.cancel:
            job = client.cancel(args.job)
        elif args.resume or args.follow:
            if args.resume:
                client.resume(args.job)
            job = _follow(client, args.job, job["params"].get("training", {}).get("steps"), own=args.resume)
            _check_finished(args.job, job)
        elif args.download:
            _check_finished(args.job, job)
            for name, to in _downloads(job, Path(args.download)):
                client.download(args.job, name, to)
            print(f"job {args.job}: wrote {args.download}")
            return 0
    print(f"job {job['id']} ({job['kind']}): {job['state']}" + (f": {job['message']}" if job["message"] else ""))
    return 0


def _downloads(job: dict[str, Any], out: Path) -> list[tuple[str, Path]]:
    """(file on the server, where it goes) for a finished job's results; `out` checked first."""
    from gigapath_desktop.outputs import check_output

    if job["kind"] == "predict":
        return [("mask.tif", Path(check_output(out)))]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GigaPathError(f"{out}: not an empty folder; choose another folder for the downloaded run")
    _check_creatable(out)
    out.mkdir(parents=True, exist_ok=True)
    return [(name, out / name) for name in ("model.keras", "metrics.csv", "config.json")]


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port before anything else starts, so a port in use or a host that does not resolve
    is one error line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listening = socket.socket(family, kind, proto)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError as exc:
        raise GigaPathError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return listening


def train_remote(args: argparse.Namespace, job: "TrainJob") -> int:
    from gigapath_desktop.annotations import read_geojson, to_geojson
    from gigapath_desktop.remote.client import tile_entry

    _refuse_local_options(args, [("--resume", args.resume), ("--demo", args.demo),
                                 ("--workers", args.workers != 1), ("--ray-address", args.ray_address)],
                          "the server's own workers train it (serve --workers); a remote run starts afresh")
    if job.out.exists() and (not job.out.is_dir() or any(job.out.iterdir())):
        raise GigaPathError(f"{job.out}: not an empty folder; choose another --out for the downloaded run")
    _check_creatable(job.out)  # said now, not after the job has trained
    spec = job.spec
    item = spec.train[0]
    if (args.spec or len(spec.train) != 1 or len(item.regions) != 1 or spec.classes or item.sparse or spec.mpp
            or item.slide_mpp or len(spec.validation) > 1 or any(v.slide != item.slide for v in spec.validation)):
        raise GigaPathError("--remote trains the tissue model on one region of one slide (dense labels, the slide's "
                            "own levels); train specs, several regions, classes, sparse labels, --mpp or --slide-mpp run locally")
    if args.memory_budget is not None or args.plan:
        raise GigaPathError("--memory-budget and --plan apply to local training; the server plans its steps in its "
                            "own memory")
    region = item.regions[0]
    val_region = spec.validation[0].regions[0] if spec.validation else None
    labels = to_geojson(read_geojson(item.labels)) if item.labels else None
    c = job.config
    request = {"slide": str(item.slide), "region": list(region.as_tuple()), "level": region.level,
               "val_region": list(val_region.as_tuple()) if val_region else None, "labels": labels,
               "steps": c.steps, "learning_rate": c.learning_rate, "seed": c.seed, "augment": c.augment,
               "checkpoint_every": c.checkpoint_every, "fold": c.fold, **tile_entry(c.tile)}
    with _client(args) as client:
        submitted = client.submit_train(**request)
        print(f"job {submitted['id']} on {args.remote}", flush=True)
        end = _follow(client, submitted["id"], c.steps)
        _check_finished(submitted["id"], end)
        job.out.mkdir(parents=True, exist_ok=True)
        for name in ("model.keras", "metrics.csv", "config.json"):
            client.download(submitted["id"], name, job.out / name)
    print(f"job {submitted['id']}: wrote {job.out / 'model.keras'}, config.json and metrics.csv")
    return 0


def predict_remote(args: argparse.Namespace) -> int:
    from gigapath_desktop.cli import PREDICT_TILE, PREVIEW_DOWNSAMPLE
    from gigapath_desktop.outputs import check_output
    from gigapath_desktop.slides import Region

    _refuse_local_options(args, [("--png", args.png), ("--probabilities", args.probabilities),
                                 ("--slide-mpp", args.slide_mpp), ("--tile", args.tile != PREDICT_TILE),
                                 ("--downsample", args.downsample != PREVIEW_DOWNSAMPLE)],
                          "remote predictions return the mask and its --geojson contours, tiled by the server; "
                          "predict here with the downloaded model for the rest")
    out = check_output(args.out)
    contours = check_output(args.geojson) if args.geojson else None
    if contours is not None and Path(contours).resolve() == Path(out).resolve():
        raise GigaPathError("the mask and GeoJSON outputs must be different files")
    region = list(Region.parse(args.region, args.level).as_tuple()) if args.region else None
    with _client(args) as client:
        submitted = client.submit_predict(slide=args.slide, model_job=args.model, region=region, level=args.level,
                                          threshold=args.threshold, binary=args.binary, min_hole_um2=args.min_hole,
                                          min_object_um2=args.min_object)
        print(f"job {submitted['id']} on {args.remote}", flush=True)
        end = _follow(client, submitted["id"], None)
        _check_finished(submitted["id"], end)
        client.download(submitted["id"], "mask.tif", Path(out))
        if contours:
            client.download(submitted["id"], "contours.geojson", Path(contours))
    print(f"job {submitted['id']}: wrote {', '.join(str(p) for p in (out, contours) if p)}")
    return 0


def _check_finished(job_id: str, end: dict[str, Any]) -> None:
    """The job's warnings on stderr once it finished; its one error line otherwise."""
    if end.get("state") == "interrupted":
        raise GigaPathError(f"job {job_id} interrupted: {end.get('message')} (`jobs {job_id} --remote URL --resume`)")
    if end.get("state") != "finished":
        raise GigaPathError(f"job {job_id} {end.get('state')}: {end.get('message')}")
    for line in str(end.get("message", "")).splitlines():
        if line.startswith("warning:"):
            print(line, file=sys.stderr)


def _check_creatable(folder: Path) -> None:
    """That `folder` can be made: its nearest existing ancestor is a folder this user may write in."""
    ancestor = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if ancestor != folder.absolute() and not (ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK)):
        raise GigaPathError(f"{folder}: cannot create the run folder ({ancestor} is not a folder one may write in)")


def _refuse_local_options(args: argparse.Namespace, given: list[tuple[str, Any]], why: str) -> None:
    """One error line naming the options a --remote run would otherwise ignore."""
    named = [option for option, value in given if value]
    if named:
        raise GigaPathError(f"{', '.join(named)} do{'es' * (len(named) == 1)} not apply with --remote: {why}")


def _client(args: argparse.Namespace) -> Any:
    from gigapath_desktop.remote.client import Client, read_token

    return Client(args.remote, read_token(args.token_file))


def _follow(client: Any, job_id: str, steps: int | None, own: bool = True) -> dict[str, Any]:
    """Show the job's streamed steps until it ends; a Ctrl-C cancels it on the server when it is this command's
    `own` (a job followed again by `jobs ID --follow` keeps running)."""
    end: dict[str, Any] = {}
    try:
        with tqdm(total=steps, unit="step", desc="remote", disable=None) as bar:
            for event, data in client.events(job_id):
                if event == "step":
                    bar.n = int(data["step"])
                    bar.set_postfix_str(f"loss {float(data['loss']):.4f} dice {float(data['dice']):.4f}")
                    bar.refresh()
                elif event == "end":
                    end = data
    except KeyboardInterrupt:
        if own:
            client.cancel(job_id)
        print(f"job {job_id} {'cancelled on the server' if own else 'keeps running on the server'}", file=sys.stderr)
        raise
    except GigaPathError as exc:  # the connection, not the job, ended: say the way back to it
        raise GigaPathError(f"{exc}; job {job_id} is kept on the server: `jobs {job_id} --remote URL` says how it "
                            "is, --follow picks it up again, --resume once it reads interrupted") from None
    if not end:
        raise GigaPathError(f"the server closed the connection before job {job_id} ended; `jobs {job_id} --remote URL "
                            "--follow` picks it up again")
    return end
