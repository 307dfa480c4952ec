"""GigaPath Desktop: train and apply segmentation models on whole gigapixel slide regions."""
from __future__ import annotations

from gigapath_desktop.errors import (
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
