"""The training engine: exact tiled whole-region gradients, the Trainer, its events and metrics.

Names load on first use (PEP 562), so the TensorFlow-free parts (settings, events, metrics) import in
milliseconds: the app opens its window before TensorFlow has loaded.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Event": "events", "LogEvent": "events", "StepEvent": "events", "TileEvent": "events", "WarningEvent": "events",
    "TrainConfig": "config", "MetricsWriter": "metrics", "read_metrics": "metrics",
    "RegionData": "data", "load_region": "data",
    "LossTerms": "gradients", "region_gradients": "gradients", "region_sums": "gradients",
    "region_step": "gradients", "reference_step": "gradients",
    "Trainer": "trainer", "device_name": "trainer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
