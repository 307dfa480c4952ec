"""`gigapath-desktop serve` started for real in a process of its own, for the server and app tests."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "s3cret-token-for-tests-0123456789"


class Server:
    """`gigapath-desktop serve` in a process of its own, on a free port."""

    def __init__(self, root: Path, data: Path, token_file: Path) -> None:
        self.root, self.data, self.token_file = root, data, token_file
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = data.parent / f"serve-{self.port}.log"  # a file: a pipe nobody reads would block the server

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def start(self) -> "Server":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gigapath_desktop", "serve", "--port", str(self.port), "--token-file",
                 str(self.token_file), "--slides-root", str(self.root), "--data-dir", str(self.data),
                 "--job-nice", "0"],  # niced jobs crawl beside the other test worker
                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
            assert self.proc.poll() is None, self.log()[-2000:]
        raise AssertionError("the server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
