"""The project's exception types: one base so callers (CLI, GUI, server) catch it in one place."""
from __future__ import annotations


class GigaPathError(Exception):
    """Base of every error this package raises on bad input; its message is meant for the user."""


class SlideError(GigaPathError):
    """A slide file is missing, corrupt, truncated or unsupported, or a region lies outside it."""


class AnnotationError(GigaPathError):
    """Annotation data (GeoJSON or geometry) is invalid."""


class TissueDetectionError(GigaPathError):
    """Tissue cannot be told apart from background on this slide."""


class ModelError(GigaPathError):
    """A model file is missing or not a model this package can run."""


class TrainingError(GigaPathError):
    """Training cannot go on (for example the loss became NaN)."""


class WorkerLost(TrainingError):
    """A training worker died mid-step: the run keeps the last whole step and resumes once workers are back (the
    command exits with EXIT_RESUMABLE, so a job server marks the job interrupted, not failed)."""


EXIT_RESUMABLE = 75  # (EX_TEMPFAIL: try again later)


class Cancelled(GigaPathError):
    """Long work was stopped on request (a stop flag was set); partial output was removed."""


def os_error_text(exc: OSError) -> str:
    """A file system refusal the checks could not foresee (disk full, permissions, a vanished share), in one line."""
    return f"{exc.filename or 'file system'}: {exc.strerror or exc}"
