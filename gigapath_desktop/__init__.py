"""GigaPath Desktop: train and apply segmentation models on whole gigapixel slide regions."""
from __future__ import annotations

import os

# Set before any submodule imports TensorFlow: its start-up chatter (CUDA probes on machines without CUDA, oneDNN
# fall-back notes) stays out of the CLI and logs, where failures reach users as exceptions anyway; and its oneDNN
# kernels, which TensorFlow turns on by default only on some Intel CPUs, run everywhere (x86 and arm64 Linux): the
# training step measured 1.4x faster with them on an AMD EPYC (benchmarks/bench_training.py --plans). The lines its C++
# prints before its logging starts, which no level silences, the CLI keeps off stderr (tf_quiet.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from gigapath_desktop.errors import (  # noqa: E402
    AnnotationError,
    Cancelled,
    GigaPathError,
    ModelError,
    SlideError,
    TissueDetectionError,
    TrainingError,
)

__version__ = "0.1.0"

__all__ = [
    "AnnotationError",
    "Cancelled",
    "GigaPathError",
    "ModelError",
    "SlideError",
    "TissueDetectionError",
    "TrainingError",
    "__version__",
]
