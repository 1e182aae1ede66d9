"""vqclip: text to image with VQGAN+CLIP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vqclip")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
