"""Helpers shared by the benchmark scripts: peak RSS, machine description, result files."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_bytes() -> int:
    """Peak resident set size of this process. On Linux VmHWM, since ru_maxrss survives exec: a measurement process
    started by a big parent would report the parent's size at the fork as its own peak."""
    if sys.platform == "linux":
        return high_water_mark("self") or 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # bytes on macOS


def high_water_mark(pid: int | str) -> int | None:
    """Linux: the peak resident size of process `pid` ("self": this one), the kernel's VmHWM; None where the kernel
    gives none (not Linux, or a process that has just exited: a zombie's status holds no memory lines)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return None
    return next((int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                 if line.startswith("VmHWM:")), None)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path


def replace_readme_block(name: str, block: str) -> None:
    """Put `block` between the `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` markers of README.md."""
    readme = RESULTS.parent.parent / "README.md"
    text = readme.read_text()
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    if begin in text:
        readme.write_text(text[: text.index(begin)] + f"{begin}\n{block}\n{end}" + text[text.index(end) + len(end) :])


def write_readme_table(name: str, summary: str, header: list[str], rows: list[list[object]]) -> None:
    """A summary line and a Markdown table (one list of cells per row) between README.md's NAME markers."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    replace_readme_block(name, "\n".join([summary, "", *lines]))


def run_child(script: str, *args: object) -> dict[str, Any]:
    """Run `script --run ARGS...` in a fresh process (its memory and TensorFlow state its own) and return the JSON
    object it prints last; a failed run stops the benchmark with its stderr."""
    out = subprocess.run([sys.executable, script, "--run", *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{Path(script).name} {' '.join(map(str, args))} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
