"""A pipeline object in the shape diffusers users know: `from_pretrained`, then call it.

    from vqclip import VQGANCLIP

    pipe = VQGANCLIP.from_pretrained("toy")          # a pair name, a VQGAN name or files
    images = pipe("a red circle", steps=50, seed=7)  # a list of PIL images

It is a thin facade over `Run`: the models are loaded once and every call builds a
`GenerateConfig` (so every option is available by its name, validated as everywhere else) and
consumes `Run.iterate()`. `pipe.run(...)` hands out the `Run` itself, for a caller that wants
the step iterator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from vqclip.errors import ConfigError
from vqclip.generate.config import SEED_LIMIT, GenerateConfig, build_config
from vqclip.generate.run import Run, Step
from vqclip.jobs.models import ModelCache
from vqclip.jobs.threads import use_threads, with_threads
from vqclip.output import to_uint8
from vqclip.prior.options import no_prior


class VQGANCLIP:
    """A VQGAN and its CLIP model(s), loaded once, turned into images by calling the object.
    `settings` are the defaults of every call (a model pair's own, e.g. the toy pair's size)."""

    def __init__(self, vqgan, clips: Sequence, settings: dict[str, Any]) -> None:
        self.vqgan = vqgan
        self.clips = list(clips)
        self.settings = dict(settings)
        self.last_config: GenerateConfig | None = None  # the last call's, seed and size resolved
        self.priors = ModelCache(loader=lambda _config: (self.vqgan, self.clips))

    @property
    def steps(self) -> int:
        """The optimiser steps of a call given no `steps=`: the pair's (or `from_pretrained`'s
        `iterations=`), else the declared default."""
        return int(self.settings.get("iterations", GenerateConfig.iterations))

    @classmethod
    def from_pretrained(
        cls,
        name: str = "default",
        *,
        clip: str | Sequence[str] | None = None,
        vqgan_config: str | None = None,
        **settings: Any,
    ) -> VQGANCLIP:
        """`name`: a model pair (`default`, `toy`, ... as `vqclip models list` shows), or a
        VQGAN by registry name or checkpoint path, with `clip` (names or paths; default
        ViT-B/32) and `vqgan_config` (the YAML of a taming .ckpt). `settings`: option names
        and values every call starts from (e.g. `device="cuda"`, `precision="fp32"`)."""
        from vqclip.weights.registry import PAIRS
        from vqclip.weights.resolve import load_models

        if not isinstance(name, str):
            raise ConfigError(f"from_pretrained({name!r}): give a pair name, a VQGAN name or path")
        if name in PAIRS:
            if clip is not None or vqgan_config is not None:
                raise ConfigError(
                    f"{name!r} is a model pair, which names its own VQGAN and CLIP; give a "
                    "VQGAN name or path to choose clip= and vqgan_config="
                )
            given = {"model": name}
        else:
            clips = [clip] if isinstance(clip, str) else list(clip or ["clip_vit_b32_openai"])
            given = {"vqgan": name, "clip": clips, "vqgan_config": vqgan_config}
        # The pair's settings (or the declared defaults) with `settings` on top; the prompt
        # only makes the config whole, the models are what is kept.
        config = build_config({**given, **settings, "prompt": "x"})
        pinned = config.to_dict()
        keep = {k: pinned[k] for k in _kept(given, settings, pinned)}
        vqgan, clips = load_models(config.vqgan, config.clip, config.vqgan_config)
        return cls(vqgan, clips, keep)

    def run(
        self,
        prompt: str | Sequence[str],
        *,
        steps: int | None = None,
        size: int | tuple[int, int] | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> Run:
        """A `Run` of `prompt` (one string, or a list: one image each), ready to iterate.
        `seed` fixes the image; else one is drawn from `generator` (diffusers' habit: the
        same generator state gives the same image), else at random. `options`: any option
        of `GenerateConfig` by name (`cutn=64`, `optimiser="adamw"`, `init_image=...`)."""
        if seed is not None and generator is not None:
            raise ConfigError("give seed or generator, not both")
        if generator is not None:
            seed = int(torch.randint(SEED_LIMIT - 1, (), generator=generator))
        settings = self.settings
        if no_prior(options.get("prior", settings.get("prior"))):
            # prior=None (or "none") alone gives the plain loop, as --prior none does: the
            # pair's prior options go with its prior
            settings = {k: v for k, v in settings.items() if not k.startswith("prior")}
        given: dict[str, Any] = {**settings, **options}
        given["prompts"] = [prompt] if isinstance(prompt, str) else list(prompt)
        if steps is not None:
            given["iterations"] = steps
        if size is not None:
            given["size"] = (size, size) if isinstance(size, int) else tuple(size)
        if seed is not None:
            given["seed"] = seed
        config = GenerateConfig.from_dict(given)
        if config.threads is None:  # recorded as the process runs it: on a CPU it makes the image
            config = config.replace(threads=torch.get_num_threads())
        else:
            use_threads(with_threads(config).threads)
        extensions = self.priors.extensions(config)
        return Run(config, vqgan=self.vqgan, clips=self.clips, extensions=extensions)

    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        steps: int | None = None,
        size: int | tuple[int, int] | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[Step, Run], None] | None = None,
        **options: Any,
    ) -> list[Image.Image]:
        """The images of `prompt` after `steps` optimiser steps, one per prompt; `callback`
        (step, run) after every step (progress bars, previews: `run.image()`)."""
        run = self.run(prompt, steps=steps, size=size, seed=seed, generator=generator, **options)
        for step in run.iterate():
            if callback is not None:
                callback(step, run)
        self.last_config = run.config
        return to_pil(run.image())


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> B PIL images."""
    return [Image.fromarray(to_uint8(image)) for image in images]


def _kept(given: dict, settings: dict, pinned: dict) -> list[str]:
    """The options a pipeline fixes for its calls: the models, and what the pair or the
    caller set; the rest keep their declared defaults, resolved per call."""
    from vqclip.weights.registry import PAIRS

    names = ["vqgan", "vqgan_config", "clip", *settings]
    if "model" in given:
        names += [k for k, _ in PAIRS[given["model"]].defaults]
    return [n for n in dict.fromkeys(names) if n in pinned]
