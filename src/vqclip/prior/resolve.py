"""A prior by name: the shipped toy priors, a file, or a registry checkpoint (MaskGIT's masked
transformers, aMUSEd's text-conditional one with its text encoder, or a taming transformer).

taming's Net2NetTransformer files in the registry (`vqgan_faceshq`, `vqgan_coco`, `vqgan_sflckr`)
hold the VQGAN and the transformer together: `--vqgan faceshq --prior faceshq` reads both parts
of the one file (downloaded once).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
        beside = [path.with_suffix(x) for x in (".yaml", ".yml")]
        if config is None and path.suffix in (".pth", ".pt") and not any(map(Path.is_file, beside)):
            # MaskGIT's own files carry no YAML
            return _load_registry_prior("maskgit", {"checkpoint": path})
        return load_prior(path, vqgan_config_for(path, config, flag="--prior-config"))
    if path.suffix or os.sep in text:
        raise ConfigError(f"prior: no such file: {path}")
    spec = get_spec(text)
    if spec.kind == "prior":
        return _load_registry_prior(spec.preset, ensure_files(spec))
    spec = get_spec(text, kind="vqgan")
    files = ensure_files(spec)
    return load_prior(files["checkpoint"], config or files["config"])


# A prompt's class is taken only when CLIP's zero-shot probability of it (over the 1000 classes)
# is at least this; below it the image draws with MaskGIT's "no class" token. Chosen from the
# spread of zero-shot probabilities (a clear class name takes most of the mass; a scene that
# names none spreads it over hundreds), not yet measured with the real weights.
IMAGENET_CLASS_THRESHOLD = 0.2


def _load_registry_prior(preset: str | None, files: Mapping[str, Path]):
    """A registry prior of format `preset` from its files (role -> path)."""
    if preset == "maskgit":
        from vqclip.prior.imagenet import ENSEMBLE, imagenet_class_names
        from vqclip.prior.maskgit import load_maskgit

        prior = load_maskgit(files["checkpoint"])
        prior.class_names = imagenet_class_names()
        prior.class_templates = ENSEMBLE
        prior.class_threshold = IMAGENET_CLASS_THRESHOLD
        return prior
    if preset == "amused":
        from vqclip.prior.amused import load_amused, scheduler_mask_token
        from vqclip.prior.amused_text import load_text_encoder, tokenizer_pad_token

        prior = load_amused(
            files["checkpoint"],
            config=files["config"],
            mask_token=scheduler_mask_token(files["scheduler"]),
        )
        prior.text_encoder = load_text_encoder(files["text_encoder"], files["text_encoder_config"])
        prior.pad_token = tokenizer_pad_token(files["tokenizer"])
        return prior
    raise ConfigError(f"registry prior format {preset!r} is not known to this vqclip")
