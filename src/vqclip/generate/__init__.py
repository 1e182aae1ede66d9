"""The generation loop: config, the step-yielding Generator, and run checkpoints."""

from vqclip.generate.checkpoint import load_run_state, save_run_state
from vqclip.generate.config import GenerateConfig
from vqclip.generate.generator import GenerationError, Generator, Step

__all__ = [
    "GenerateConfig",
    "GenerationError",
    "Generator",
    "Step",
    "load_run_state",
    "save_run_state",
]
