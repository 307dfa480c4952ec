"""The Keras U-Net, its tiling geometry, and the tiling plan shared by training and prediction."""
from gigapath_desktop.model.geometry import Geometry, model_geometry
from gigapath_desktop.model.io import load_model, save_model
from gigapath_desktop.model.unet import build_unet, logits_model, with_dtype

__all__ = ["Geometry", "build_unet", "load_model", "logits_model", "model_geometry", "save_model", "with_dtype"]
