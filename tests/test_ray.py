"""The Ray cases (tests/ray_cases.py) in a pytest process of their own: a local Ray's head processes belong to the
process that starts them, and in a long shared test process they were seen to receive a SIGTERM mid-test."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_the_ray_cases_pass_in_a_process_of_their_own() -> None:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "ray_cases.py")],
                         capture_output=True, text=True, timeout=900, cwd=HERE.parent)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "7 passed" in out.stdout
