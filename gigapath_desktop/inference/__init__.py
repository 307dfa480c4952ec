"""Tiled prediction and mask export (pyramidal TIFF, PNG preview, GeoJSON contours)."""
from gigapath_desktop.model import build_unet  # noqa: F401  (imports TensorFlow quietly first)
from gigapath_desktop.inference.job import PredictJob, PredictResult, run_predict_job
from gigapath_desktop.inference.predictor import predict_array, predict_bands
from gigapath_desktop.slides import SlideSource

__all__ = ["PredictJob", "PredictResult", "SlideSource", "predict_array", "predict_bands", "run_predict_job"]
