"""The optional extras some tests need. A test that needs a missing one skips with a reason that
names it (`pytest -rs` lists them), so the README's test command passes with whatever extras are
installed; CI installs them all and runs everything."""

import importlib.util

import pytest


def _reason(extra: str, what: str) -> str:
    return f"needs the [{extra}] extra ({what}): pip install -e '.[{extra}]'"


def require(module: str, extra: str):
    """At a test module's top: skip the module unless `module` (from `extra`) imports."""
    return pytest.importorskip(module, reason=_reason(extra, module))


needs_video = pytest.mark.skipif(
    importlib.util.find_spec("imageio_ffmpeg") is None, reason=_reason("video", "imageio-ffmpeg")
)
