"""The training engine: exact tiled whole-region gradients, the Trainer, its events and metrics."""
from gigapath_desktop.model import build_unet  # noqa: F401  (imports TensorFlow quietly first)
from gigapath_desktop.training.data import RegionData, load_region
from gigapath_desktop.training.events import Event, LogEvent, StepEvent, TileEvent, WarningEvent
from gigapath_desktop.training.gradients import LossTerms, region_gradients, region_sums
from gigapath_desktop.training.metrics import MetricsWriter, read_metrics
from gigapath_desktop.training.config import TrainConfig
from gigapath_desktop.training.trainer import Trainer, device_name

__all__ = [
    "Event",
    "LogEvent",
    "LossTerms",
    "MetricsWriter",
    "RegionData",
    "StepEvent",
    "TileEvent",
    "TrainConfig",
    "WarningEvent",
    "Trainer",
    "device_name",
    "load_region",
    "read_metrics",
    "region_gradients",
    "region_sums",
]
