"""The engine imports from two threads at once: the app loads TensorFlow on a thread while the user may already
export or predict on the window's thread (a circular import made both fail: "cannot import name 'load_model' from
partially initialized module")."""
from __future__ import annotations

import subprocess
import sys

RACE = """
import threading
failures = []
def load(statement):
    try:
        exec(statement)
    except Exception as exc:
        failures.append(repr(exc))
engine = threading.Thread(target=load, args=("from gigapath_desktop.training.trainer import device_name",))
engine.start()
load("from gigapath_desktop.inference import run_predict_job")
engine.join()
print(failures)
"""


def test_the_engine_imports_from_two_threads_at_once() -> None:
    result = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
