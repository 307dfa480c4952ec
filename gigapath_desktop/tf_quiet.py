"""TensorFlow's first import without the harmless lines its C++ prints to stderr before its logging starts.

TensorFlow's Linux CUDA wheel without a GPU prints "WARNING: All log messages before absl::InitializeLog() ..." and
"Unable to register cuDNN / cuBLAS factory" from static initialisers, out of TF_CPP_MIN_LOG_LEVEL's reach; yet bad
input must end in one `error:` line. So while `tensorflow` first executes, file descriptor 2 goes to a temporary file,
and all of it but those lines goes back to stderr afterwards, an import error's too. Only on the main thread (fd 2 is
the whole process's; the app loads TensorFlow on a thread while its window runs) and at the package's
TF_CPP_MIN_LOG_LEVEL=3 (who lowers it sees everything). A crash inside the import, not an exception, loses its lines.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import threading
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Iterator, Sequence

NOISE = re.compile(rb"All log messages before absl::InitializeLog\(\) is called"
                   rb"|Unable to register cu\w+ factory: Attempting to register factory for plugin"
                   rb"|computation placer already registered")


def quiet_tensorflow_import() -> None:
    """Make TensorFlow's first import (wherever it happens, on the main thread) quiet; a no-op once it is loaded."""
    if ("tensorflow" not in sys.modules and os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"
            and not any(isinstance(finder, _Finder) for finder in sys.meta_path)):
        sys.meta_path.insert(0, _Finder())


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path = [finder for finder in sys.meta_path if finder is not self]  # (not in place: being iterated)
        if threading.current_thread() is not threading.main_thread():
            return None
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # TensorFlow sees its own loader
        with _without_noise():
            self.loader.exec_module(module)


@contextlib.contextmanager
def _without_noise() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block; then all of it but NOISE back to stderr."""
    try:
        held, saved = tempfile.TemporaryFile(), os.dup(2)
    except OSError:  # no temporary folder, or no stderr at all: nothing is held back
        yield
        return
    with held, open(saved, "wb") as stderr:  # (closes `saved`)
        _flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            held.seek(0)
            stderr.write(b"".join(line for line in held if not NOISE.search(line)))


def _flush() -> None:
    """Python's buffered stderr reaches the descriptor it was written for."""
    if sys.stderr is not None:
        sys.stderr.flush()
