"""Pretrained weights: the registry of known models, the cache, downloads, and loading by name.

Importing this package does not import torch; the loaders import the model modules when called.
"""

from vqclip.weights.cache import cache_root, cached_paths, is_cached, is_converted
from vqclip.weights.download import Retry, ensure_files
from vqclip.weights.registry import (
    REGISTRY,
    FileSpec,
    Host,
    WeightSpec,
    find_spec,
    get_spec,
    list_specs,
)
from vqclip.weights.resolve import convert, load_clip_by_name, load_vqgan_by_name

__all__ = [
    "REGISTRY",
    "FileSpec",
    "Host",
    "Retry",
    "WeightSpec",
    "cache_root",
    "cached_paths",
    "convert",
    "ensure_files",
    "find_spec",
    "get_spec",
    "is_cached",
    "is_converted",
    "list_specs",
    "load_clip_by_name",
    "load_vqgan_by_name",
]
