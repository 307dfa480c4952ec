"""Slide access: one small interface over OpenSlide and plain images, plus the on-disk region cache."""
from gigapath_desktop.slides.cache import ArrayCache, cached_region, default_cache_dir
from gigapath_desktop.slides.slide import SLIDE_SUFFIXES, Region, Slide, SlideSource, identity, open_slide

__all__ = ["SLIDE_SUFFIXES", "ArrayCache", "Region", "Slide", "SlideSource", "cached_region", "default_cache_dir",
           "identity", "open_slide"]
