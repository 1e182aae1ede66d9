"""The generation loop: config, the step-yielding Run, and run checkpoints."""

from vqclip.generate.checkpoint import load_run_state, save_run_state
from vqclip.generate.config import GenerateConfig
from vqclip.generate.run import GenerationError, Run, Step, StepAbandoned

__all__ = [
    "GenerateConfig",
    "GenerationError",
    "Run",
    "Step",
    "StepAbandoned",
    "load_run_state",
    "save_run_state",
]
