"""Annotations: model, QuPath GeoJSON, rasterization, mask tracing and tissue detection."""
from gigapath_desktop.annotations.classes import ClassMap
from gigapath_desktop.annotations.contours import mask_to_polygons
from gigapath_desktop.annotations.geojson import from_geojson, read_geojson, to_geojson, write_geojson
from gigapath_desktop.annotations.model import (
    BACKGROUND,
    DEFAULT_CLASSES,
    REGION,
    TISSUE,
    Annotation,
    AnnotationClass,
    AnnotationSet,
    Kind,
    Role,
)
from gigapath_desktop.annotations.raster import UNLABELLED, other_classes, rasterize
from gigapath_desktop.annotations.tissue import Modality, detect_tissue, tissue_mask

__all__ = [
    "BACKGROUND",
    "DEFAULT_CLASSES",
    "REGION",
    "TISSUE",
    "UNLABELLED",
    "Annotation",
    "AnnotationClass",
    "AnnotationSet",
    "ClassMap",
    "Kind",
    "Modality",
    "Role",
    "detect_tissue",
    "from_geojson",
    "mask_to_polygons",
    "other_classes",
    "rasterize",
    "read_geojson",
    "tissue_mask",
    "to_geojson",
    "write_geojson",
]
