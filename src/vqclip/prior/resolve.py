"""A prior by name: the shipped toy prior, a file, or a registry transformer checkpoint.

taming's Net2NetTransformer files in the registry (`vqgan_faceshq`, `vqgan_coco`, `vqgan_sflckr`)
hold the VQGAN and the transformer together: `--vqgan faceshq --prior faceshq` reads both parts
of the one file (downloaded once).
"""

from __future__ import annotations

import os
from pathlib import Path

from vqclip.errors import ConfigError
from vqclip.prior.io import TokenPrior, load_prior


def load_prior_by_name(
    name_or_path: str | os.PathLike, config: str | os.PathLike | None = None
) -> TokenPrior:
    """Load a prior from a packaged name, a path (a taming .ckpt finds its YAML as a VQGAN's
    does, or takes `config`), or a registry name whose checkpoint is a taming transformer."""
    from vqclip.weights.download import ensure_files
    from vqclip.weights.registry import PACKAGED, PACKAGED_DIR, get_spec
    from vqclip.weights.resolve import vqgan_config_for

    text = str(name_or_path)
    if text in PACKAGED:
        return load_prior(PACKAGED_DIR / PACKAGED[text])
    path = Path(text).expanduser()
    if path.is_file():
        return load_prior(path, vqgan_config_for(path, config))
    if path.suffix or os.sep in text:
        raise ConfigError(f"prior: no such file: {path}")
    spec = get_spec(text, kind="vqgan")
    files = ensure_files(spec)
    return load_prior(files["checkpoint"], config or files["config"])
