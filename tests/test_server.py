"""The job server for real: `gigapath-desktop serve` under uvicorn on 127.0.0.1, a real HTTP client (httpx)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import tifffile

from gigapath_desktop.annotations import TISSUE, Annotation, Role, mask_to_polygons, to_geojson
from gigapath_desktop.remote.client import Client, RemoteError
from server_helpers import TOKEN, Server
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.synthetic import mask_path_for

SIZE = (768, 512)  # the training region, level-0 px


@pytest.fixture(scope="module")
def setup(synthetic_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("server")
    root = base / "slides"
    (root / "sub").mkdir(parents=True)
    os.link(synthetic_slide, root / "sub" / "slide.tif")
    (root / "escape.svs").symlink_to(synthetic_slide)  # a link inside the root to a file outside it
    (root / "notes.svs").write_text("not a slide")
    token = base / "token"
    token.write_text(TOKEN + "\n")
    with open_slide(mask_path_for(synthetic_slide)) as mask:
        truth = mask.read_region(Region(0, 0, 2 * SIZE[0], SIZE[1]))[..., 0] > 127
    labels = to_geojson([Annotation(p, cls=TISSUE, role=Role.LABEL) for p in mask_to_polygons(truth)])
    return {"root": root, "token": token, "labels": labels, "truth": truth, "base": base}


@pytest.fixture(scope="module")
def server(setup: dict):  # noqa: ANN201
    running = Server(setup["root"], setup["base"] / "data", setup["token"]).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Server):  # noqa: ANN201
    with Client(server.url, TOKEN) as c:
        yield c


def _train(client: Client, setup: dict, steps: int, **extra: object) -> dict:
    return client.submit_train(slide="sub/slide.tif", region=[0, 0, *SIZE], val_region=[SIZE[0], 0, *SIZE],
                               labels=setup["labels"], steps=steps, tile=SIZE[0], **extra)


def _follow(client: Client, job_id: str) -> tuple[list[dict], dict]:
    steps, end = [], {}
    for event, data in client.events(job_id):
        if event == "step":
            steps.append(data)
        elif event == "end":
            end = data
    return steps, end


def test_train_stream_download_predict(client: Client, setup: dict, tmp_path: Path) -> None:
    from gigapath_desktop.inference import predict_array
    from gigapath_desktop.model import load_model, model_geometry
    from gigapath_desktop.slides import SlideSource

    job = _train(client, setup, steps=25, fold=2)
    assert job["state"] == "queued" and client.health()["ok"]
    with ThreadPoolExecutor(20) as pool:  # a bounded load test while the job trains
        answers = list(pool.map(lambda _: httpx.get(f"{client.url}/jobs/{job['id']}", timeout=30,
                                                    headers={"Authorization": f"Bearer {TOKEN}"}).status_code,
                                range(200)))
    assert answers == [200] * 200
    steps, end = _follow(client, job["id"])
    assert end["state"] == "finished", end
    assert [row["step"] for row in steps] == list(range(1, 26)), "every step streamed once, in order"
    assert isinstance(steps[-1]["loss"], float) and steps[-1]["val_dice"] is not None
    model = client.download(job["id"], "model.keras", tmp_path / "model.keras")
    assert model_geometry(load_model(model)).block == 2, "trained with the fold asked for"
    with open_slide(setup["root"] / "sub" / "slide.tif") as slide:
        held_out = Region(SIZE[0], 0, *SIZE)
        probability = predict_array(load_model(model), SlideSource(slide, held_out), 512)
    truth = setup["truth"][:, SIZE[0]:]
    hard = probability > 0.5
    dice = 2 * (hard & truth).sum() / (hard.sum() + truth.sum())
    assert dice > 0.8, f"the downloaded model predicts the held-out half (Dice {dice:.3f})"

    predicted = client.submit_predict(slide="sub/slide.tif", model_job=job["id"], region=[SIZE[0], 0, *SIZE],
                                      min_hole_um2=400, min_object_um2=50)
    assert _follow(client, predicted["id"])[1]["state"] == "finished"
    with open_slide(client.download(predicted["id"], "mask.tif", tmp_path / "mask.tif")) as mask:
        assert mask.dimensions[0] >= 2 * SIZE[0]
    with tifffile.TiffFile(tmp_path / "mask.tif") as tif:  # the clean-up asked for is the one applied
        about = json.loads(tif.pages[0].description)
        assert (about["min_hole_um2"], about["min_object_um2"]) == (400, 50)
    with pytest.raises(RemoteError, match="422"):
        client.submit_predict(slide="sub/slide.tif", model_job=job["id"], min_hole_um2=-1)


def test_every_endpoint_but_health_needs_the_token(server: Server, setup: dict) -> None:
    from gigapath_desktop.remote.server import ServerConfig, create_app

    app = create_app(ServerConfig(TOKEN, setup["root"], setup["base"] / "routes"))
    flat = [r for route in app.routes for r in getattr(getattr(route, "original_router", None), "routes", [route])]
    routes = [(method, route.path.replace("{job_id}", "x").replace("{name}", "model.keras"))
              for route in flat for method in getattr(route, "methods", ())]
    assert len(routes) >= 11
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status = httpx.request(method, server.url + path, headers=headers, timeout=10).status_code
            assert status == (200 if path == "/health" else 401), (method, path, headers)


@pytest.mark.parametrize("slide, status", [("../slides/sub/slide.tif", 400), ("/etc/passwd", 400),
                                           ("escape.svs", 400), ("sub/../../token", 400), ("nothing.svs", 404)])
def test_slide_paths_stay_under_the_root(client: Client, setup: dict, slide: str, status: int) -> None:
    with pytest.raises(RemoteError, match=f"said {status}"):
        client.submit_train(slide=slide, region=[0, 0, 256, 256])
    with pytest.raises(RemoteError, match=f"said {status}"):
        client._call("GET", "/slides/thumbnail", params={"path": slide})


def test_bad_requests_get_a_4xx_with_a_message(client: Client, server: Server) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    cases = [
        (b"{not json", 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 9e9, 10]}).encode(), 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "labels": {"type": "FeatureCollection",
                     "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0],
                     [1e300, 1], [2, 2], [0, 0]]]}}]}}).encode(), 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "labels": [1, 2]}).encode(), 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "learning_rate": 5}).encode(), 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "fold": 3}).encode(), 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 99999, 256]}).encode(), 422),
        (b"x" * (64 * 2**20 + 1), 413),
        (b'{"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "steps": NaN}', 422),  # (no input echoed back)
        (b'{"slide": "sub/slide.tif", "region": [0, 0, NaN, 256], "extra": Infinity}', 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "steps": True}).encode(), 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "seed": "7"}).encode(), 422),
        (json.dumps({"slide": "sub/slide.tif", "region": [0, 0, 256, 256], "labels": to_geojson([])}).encode(), 422),
        (json.dumps({"slide": "a\0b", "region": [0, 0, 256, 256]}).encode(), 400),
    ]
    predict = [  # refused when sent, not after the jobs queued before them (the model is checked after them)
        {"slide": "sub/slide.tif", "model_job": "nope", "region": [0, 0, -5, 99999999]},
        {"slide": "sub/slide.tif", "model_job": "nope", "level": 7},
        {"slide": "sub/slide.tif", "model_job": "nope", "level": float("nan")},
        {"slide": "notes.svs", "model_job": "nope"},
    ]
    for path, body, status in [("train", *case) for case in cases] + [("predict", json.dumps(p).encode(), 422)
                                                                        for p in predict]:
        response = httpx.post(f"{server.url}/jobs/{path}", content=body, headers=headers, timeout=60)
        assert response.status_code == status, (body[:80], response.text[:300])
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail and str(server.root) not in detail, detail
    assert httpx.get(f"{server.url}/jobs/nope", headers=headers).status_code == 404
    assert httpx.get(f"{server.url}/slides/thumbnail", params={"path": "a\0b"}, headers=headers).status_code == 400


def test_the_slide_list_holds_the_roots_slides_and_says_which_do_not_open(client: Client, setup: dict) -> None:
    listed = {entry["path"]: entry for entry in client.slides()}
    assert set(listed) == {"sub/slide.tif", "notes.svs"}, "a link out of the root is not listed"
    assert listed["sub/slide.tif"]["dimensions"] and listed["notes.svs"]["error"].startswith("notes.svs")


def test_a_queued_job_is_cancelled_when_asked_not_when_its_turn_comes(client: Client, setup: dict) -> None:
    running = _train(client, setup, steps=2000)
    queued = _train(client, setup, steps=2)
    assert client.cancel(queued["id"])["state"] == "cancelled"
    steps, end = _follow(client, queued["id"])
    assert (steps, end["message"]) == ([], "cancelled before it started")
    client.cancel(running["id"])
    assert _follow(client, running["id"])[1]["state"] == "cancelled"
    assert client.job(queued["id"])["state"] == "cancelled"


def test_one_server_a_data_folder_and_a_stop_ends_a_followed_job_at_once(setup: dict, tmp_path: Path) -> None:
    def serve(port: int, data: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gigapath_desktop", "serve", "--port", str(port), "--token-file",
                               str(setup["token"]), "--slides-root", str(setup["root"]), "--data-dir", str(data)],
                              capture_output=True, text=True, timeout=120)

    first = Server(setup["root"], tmp_path / "data", setup["token"]).start()
    try:
        with Client(first.url, TOKEN) as c:
            job = _train(c, setup, steps=5000, checkpoint_every=1000)
            events = c.events(job["id"])
            next(data for event, data in events if event == "step")
            for port, data, said in ((first.port + 1, tmp_path / "data", "in use by"),
                                     (first.port, tmp_path / "other", "cannot listen on")):
                refused = serve(port, data)
                assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [refused.stderr.strip()]
                assert refused.stderr.startswith("error:") and said in refused.stderr, refused.stderr
            assert c.job(job["id"])["state"] == "running", "the refused servers left the live job alone"
            with ThreadPoolExecutor(1) as pool:  # a client still follows the job while the server is told to stop
                following = pool.submit(lambda: list(events))
                first.proc.terminate()
                first.proc.wait(60)  # (before: until the job's 5000 steps were done)
                event, end = following.result(60)[-1]
                assert event == "end" and end["state"] == "interrupted", "the follower is told how the job ended"
    finally:
        first.stop()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "jobs.sqlite").write_text("not a database")
    refused = serve(first.port, tmp_path / "broken")
    assert refused.returncode == 2 and "not a job database" in refused.stderr and "Traceback" not in refused.stderr
    second = Server(setup["root"], tmp_path / "data", setup["token"]).start()
    try:
        with Client(second.url, TOKEN) as c:
            assert c.job(job["id"])["state"] == "interrupted"
    finally:
        second.stop()


def test_a_killed_server_marks_the_job_interrupted_and_it_resumes(setup: dict, tmp_path: Path) -> None:
    first = Server(setup["root"], tmp_path / "data", setup["token"]).start()
    try:
        with Client(first.url, TOKEN) as c:
            done = _train(c, setup, steps=2)
            assert _follow(c, done["id"])[1]["state"] == "finished"
            job = _train(c, setup, steps=16, checkpoint_every=2)
            for event, data in c.events(job["id"]):
                if event == "step" and data["step"] >= 5:
                    break
    finally:
        first.kill()
    second = Server(setup["root"], tmp_path / "data", setup["token"]).start()
    try:
        with Client(second.url, TOKEN) as c:
            assert c.job(done["id"])["state"] == "finished", "finished jobs are intact"
            assert c.job(job["id"])["state"] == "interrupted"
            with pytest.raises(RemoteError, match="409"):  # a stopped run's model.keras is not a finished model
                c.submit_predict(slide="sub/slide.tif", model_job=job["id"], region=[0, 0, 256, 256])
            c.resume(job["id"])
            steps, end = _follow(c, job["id"])
            assert end["state"] == "finished", end
            sent = [row["step"] for row in steps]
            assert sorted(set(sent)) == list(range(1, 17)) and sent[-1] == 16, "every step, the redone ones again"
            config = json.loads(c.download(job["id"], "config.json", tmp_path / "config.json").read_text())
            assert config["started_at_step"] >= 4, "resumed from its checkpoint, not from the start"
            text = json.dumps(config)
            assert "sub/slide.tif" in text and str(setup["root"]) not in text and str(tmp_path / "data") not in text, \
                "the run's record names the slide as the client does, not by the server's folders"
            with pytest.raises(RemoteError, match="409"):
                c.resume(done["id"])
    finally:
        second.stop()


def test_train_and_predict_remote_from_the_command_line(server: Server, setup: dict, tmp_path: Path) -> None:
    labels = tmp_path / "labels.geojson"
    labels.write_text(json.dumps(setup["labels"]))
    common = [sys.executable, "-m", "gigapath_desktop"]
    remote = ["--remote", server.url, "--token-file", str(setup["token"])]
    out = subprocess.run(common + ["train", "sub/slide.tif", "--region", f"0,0,{SIZE[0]},{SIZE[1]}", "--labels",
                                   str(labels), "--steps", "2", "--tile", str(SIZE[0]), "--out", str(tmp_path / "run"), *remote],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"model.keras", "metrics.csv", "config.json"}
    job_id = out.stdout.split()[1]
    listed = subprocess.run(common + ["jobs", *remote], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and f"{job_id}  train    finished" in listed.stdout, listed.stdout + listed.stderr
    again = subprocess.run(common + ["jobs", job_id, "--download", str(tmp_path / "again"), *remote],
                           capture_output=True, text=True, timeout=120)  # the way back to a job the client lost
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "again" / "model.keras").read_bytes() == (tmp_path / "run" / "model.keras").read_bytes()
    refused = subprocess.run(common + ["jobs", job_id, "--resume", *remote], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "only interrupted jobs resume" in refused.stderr.splitlines()[-1]
    out = subprocess.run(common + ["predict", "sub/slide.tif", "--model", job_id, "--region", "0,0,512,512",
                                   "--out", str(tmp_path / "mask.tif"), *remote], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with open_slide(tmp_path / "mask.tif") as mask:
        assert mask.level_count >= 1
    wrong = subprocess.run(common + ["predict", "sub/slide.tif", "--model", job_id, "--out", str(tmp_path / "m2.tif"),
                                     "--remote", server.url], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "GIGAPATH_TOKEN": "wrong"})
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1].startswith("error: the server said 401")


def test_a_finished_jobs_warnings_reach_the_client(capsys: pytest.CaptureFixture[str]) -> None:
    """The server kept only the command's last line: a remote predict on a slide without µm/px said nothing of the
    clean-up it could not do."""
    from gigapath_desktop.errors import GigaPathError
    from gigapath_desktop.remote.commands import _check_finished

    _check_finished("j1", {"state": "finished", "message": "warning: s.svs records no µm/px\nwrote mask.tif"})
    assert capsys.readouterr().err == "warning: s.svs records no µm/px\n"
    with pytest.raises(GigaPathError, match="job j2 failed: no such slide"):
        _check_finished("j2", {"state": "failed", "message": "no such slide"})
