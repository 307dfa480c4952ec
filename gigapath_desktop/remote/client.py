"""The job server's HTTP client (httpx): what `train --remote`, `predict --remote` and the app use.

Errors become one GigaPathError saying what the server said (or that it cannot be reached)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.outputs import atomic_path

TIMEOUT = httpx.Timeout(30.0, read=120.0)


class RemoteError(GigaPathError):
    """The server refused a request or could not be reached."""


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def slides(self) -> list[dict[str, Any]]:
        return self._call("GET", "/slides")

    def submit_train(self, **request: Any) -> dict[str, Any]:
        return self._call("POST", "/jobs/train", json=request)

    def submit_predict(self, **request: Any) -> dict[str, Any]:
        return self._call("POST", "/jobs/predict", json=request)

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/jobs")

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def resume(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/resume")

    def events(self, job_id: str, stop: Callable[[], bool] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs from the job's Server-Sent Events: ("step", a metrics.csv row) ..., ("end", job).
        `stop()` is checked at every line (the server sends a keep-alive line every few seconds)."""
        try:
            with self._http.stream("GET", f"/jobs/{job_id}/events", timeout=httpx.Timeout(30.0, read=60.0)) as r:
                _check(r, read=True)
                event = "message"
                for line in r.iter_lines():
                    if stop is not None and stop():
                        return
                    if line.startswith("event:"):
                        event = line.partition(":")[2].strip()
                    elif line.startswith("data:"):
                        yield event, json.loads(line.partition(":")[2])
                        event = "message"
        except httpx.HTTPError as exc:
            raise RemoteError(f"{self.url}: {exc}") from None

    def download(self, job_id: str, name: str, to: Path) -> Path:
        """Fetch a job's file (model.keras, metrics.csv, config.json, mask.tif, contours.geojson) to `to`."""
        try:
            with self._http.stream("GET", f"/jobs/{job_id}/files/{name}") as r:
                _check(r, read=True)
                with atomic_path(to) as tmp, tmp.open("wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
        except httpx.HTTPError as exc:
            raise RemoteError(f"{self.url}: {exc}") from None
        return to

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"{self.url}: {exc}") from None
        _check(response)
        return response.json()


def tile_entry(tile: int | str | None) -> dict[str, Any]:
    """A training request's tile: left out for "auto" (the server's default; servers before it took only pixels)."""
    return {} if tile == "auto" else {"tile": tile}


def read_token(path: str | os.PathLike[str] | None = None) -> str:
    """The bearer token: from `path`, else $GIGAPATH_TOKEN; one word (a file of more is refused, unshown)."""
    if path is None:
        token, source = os.environ.get("GIGAPATH_TOKEN", ""), "GIGAPATH_TOKEN"
        if not token:
            raise GigaPathError("no token: pass --token-file FILE or set GIGAPATH_TOKEN")
    else:
        source = f"{path}: the token file"
        try:
            token = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not text"
            raise GigaPathError(f"{path}: cannot read the token file ({why or exc})") from None
        if not token:
            raise GigaPathError(f"{source} is empty")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise GigaPathError(f"{source} must hold the token alone, one word on one line (its text is not shown)")
    return token


def _check(response: httpx.Response, read: bool = False) -> None:
    if response.status_code < 400:
        return
    if read:
        response.read()
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:300]
    raise RemoteError(f"the server said {response.status_code}: {detail}")
