"""Models loaded once per worker and shared by the jobs that name them."""

from __future__ import annotations

from collections.abc import Callable

from vqclip.generate.config import GenerateConfig


def _load_by_name(config: GenerateConfig) -> tuple:
    from vqclip.weights.resolve import load_models

    return load_models(config.vqgan, config.clip, config.vqgan_config)


class ModelCache:
    """(vqgan, [clips]) per model names, loaded once by `loader` (by registry name or path
    unless given: tests and embedders hand in their own).

    A run casts the decoder and CLIP to its compute dtype and moves them to its device, in
    place, so the key holds the device and precision as well as the names."""

    def __init__(self, loader: Callable[[GenerateConfig], tuple] | None = None) -> None:
        self.loader = loader or _load_by_name
        self._models: dict[tuple, tuple] = {}

    def get(self, config: GenerateConfig) -> tuple:
        key = (config.vqgan, config.vqgan_config, config.clip, config.device, config.precision)
        if key not in self._models:
            self._models[key] = self.loader(config)
        return self._models[key]
