"""Models loaded once per worker and shared by the jobs that name them: the VQGAN and CLIPs,
and the token priors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vqclip.generate.config import GenerateConfig


def _load_by_name(config: GenerateConfig) -> tuple:
    from vqclip.weights.resolve import load_models

    return load_models(config.vqgan, config.clip, config.vqgan_config)


def _load_prior(name: str, config: str | None) -> Any:
    from vqclip.prior.resolve import load_prior_by_name

    return load_prior_by_name(name, config)


class ModelCache:
    """(vqgan, [clips]) per model names, loaded once by `loader` (by registry name or path
    unless given: tests and embedders hand in their own), and priors per name and config file,
    loaded once by `prior_loader`.

    A run casts the decoder and CLIP to its compute dtype and moves them to its device, in
    place, so the key holds the device and precision as well as the names; a prior is moved to
    the run's device the same way."""

    def __init__(
        self,
        loader: Callable[[GenerateConfig], tuple] | None = None,
        prior_loader: Callable[[str, str | None], Any] | None = None,
    ) -> None:
        self.loader = loader or _load_by_name
        self.prior_loader = prior_loader or _load_prior
        self._models: dict[tuple, tuple] = {}
        self._priors: dict[tuple, Any] = {}

    def get(self, config: GenerateConfig) -> tuple:
        key = (config.vqgan, config.vqgan_config, config.clip, config.device, config.precision)
        if key not in self._models:
            self._models[key] = self.loader(config)
        return self._models[key]

    def prior(self, name: str, config: str | None = None) -> Any:
        key = (name, config)
        if key not in self._priors:
            self._priors[key] = self.prior_loader(name, config)
        return self._priors[key]

    def extensions(self, config: GenerateConfig) -> list:
        """The loop's plug-ins `config` asks for (its token prior), priors from this cache."""
        from vqclip.prior.plugin import extensions_for

        return extensions_for(config, loader=self.prior)
