"""vqclip: text to image with VQGAN+CLIP.

`vqclip.VQGANCLIP` is the pipeline (`vqclip.pipeline`), as diffusers users write it; it loads
on first use, so `import vqclip` (the command line reads the version before torch loads) stays
light.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vqclip")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["VQGANCLIP", "__version__"]


def __getattr__(name: str):
    if name == "VQGANCLIP":
        from vqclip.pipeline import VQGANCLIP

        return VQGANCLIP
    raise AttributeError(f"module 'vqclip' has no attribute {name!r}")
