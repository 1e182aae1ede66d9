"""Speed and memory of the generation loop at the real model sizes, with random weights.

Speed does not depend on weight values, so the benchmark builds the real architectures (VQGAN
ImageNet f16 16384, CLIP ViT presets) with random weights and times the normal `Generator` steps:
steady-state seconds per iteration (median after warm-up), peak memory, FLOPs per iteration
(torch.utils.flop_counter) and the split by stage.
"""

from __future__ import annotations

import datetime
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from vqclip.errors import ConfigError

STAGES = ("decode", "cutouts", "clip", "loss", "optimiser")
PROMPT = "the great hall of the sacred library by James Gurney"


class StageTimer:
    """Wall time per stage of a step. Forward stages end at `mark`; a backward stage ends when
    the gradient reaches the tensor given to `mark` (a hook), so each stage's time is its
    forward plus its backward pass."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = 0.0

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> float:
        self._last = self.now()
        return self._last

    def _add(self, stage: str) -> None:
        now = self.now()
        self.seconds[stage] += now - self._last
        self._last = now

    def mark(self, stage: str, tensor: torch.Tensor | None = None, grad_stage: str = "") -> None:
        self._add(stage)
        if tensor is not None and tensor.requires_grad and grad_stage:
            tensor.register_hook(lambda grad: self._add(grad_stage))


@dataclass(frozen=True)
class BenchConfig:
    size: tuple[int, int] = (256, 256)
    cutn: int = 32
    batch: int = 1
    clip: tuple[str, ...] = ("ViT-B-32",)
    device: str = "auto"
    precision: str = "auto"
    cuda_graphs: bool = False
    checkpoint_decoder: bool = False
    steps: int = 5
    warmup: int = 2

    def __post_init__(self) -> None:
        from vqclip.clip import CLIP_PRESETS

        for name in self.clip:
            if name not in CLIP_PRESETS:
                raise ConfigError(f"clip={name!r}: choose from {', '.join(CLIP_PRESETS)}")
        if self.steps < 1 or self.warmup < 0:
            raise ConfigError(f"steps={self.steps}, warmup={self.warmup}: need steps >= 1")


def build_models(clip_names: tuple[str, ...]):
    """The real architectures with random weights: VQGAN ImageNet f16 16384 and CLIP presets."""
    from vqclip.clip import CLIP, clip_preset
    from vqclip.vqgan import VQGAN, VQGANConfig

    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig())  # the defaults are ImageNet f16 16384
    clips = [CLIP(clip_preset(name, quick_gelu=True)) for name in clip_names]
    return vqgan, clips


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_bench(config: BenchConfig, models=None) -> dict:
    """Benchmark one configuration; `models` (vqgan, clips) replaces the real sizes in tests."""
    from torch.utils.flop_counter import FlopCounterMode

    from vqclip.generate import GenerateConfig, Generator

    vqgan, clips = models if models is not None else build_models(config.clip)
    total_steps = config.warmup + config.steps + 1
    gen_config = GenerateConfig(
        prompts=(PROMPT,),
        size=config.size,
        cutn=config.cutn,
        batch_size=config.batch,
        clip=config.clip,
        device=config.device,
        precision=config.precision,
        cuda_graphs=config.cuda_graphs,
        checkpoint_decoder=config.checkpoint_decoder,
        iterations=total_steps,
    )
    gen = Generator(gen_config, vqgan=vqgan, clips=clips)
    device = gen.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(config.warmup):
        gen.step()

    times = []
    timer = StageTimer(device)
    gen.timer = timer
    for _ in range(config.steps):
        start = timer.start()
        gen.step()
        times.append(timer.now() - start)
    gen.timer = None
    stage_s = {k: v / config.steps for k, v in timer.seconds.items()}
    peak_mb = _peak_memory_mb(device)

    # Graph replays are invisible to the FLOP counter: count an eager step (the same work).
    gen._graphs = None
    with FlopCounterMode(display=False) as counter:
        gen.step()
    flops = counter.get_total_flops()

    s_per_it = statistics.median(times)
    return {
        "size": list(gen.image_size),
        "cutn": config.cutn,
        "batch": config.batch,
        "clip": list(config.clip),
        "device": str(device),
        "device_name": _device_name(device),
        "precision": str(gen.dtype).removeprefix("torch."),
        "cuda_graphs": config.cuda_graphs,
        "checkpoint_decoder": config.checkpoint_decoder,
        "threads": torch.get_num_threads(),
        "s_per_it": s_per_it,
        "it_per_s": 1 / s_per_it,
        "s_per_it_all": times,
        "images_per_hour_300": 3600 / (300 * s_per_it) * config.batch,
        "peak_mem_mb": peak_mb,
        "flops_per_it": flops,
        "achieved_tflops": flops / s_per_it / 1e12,
        "stage_s": stage_s,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "config": asdict(config),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def format_table(results: list[dict]) -> str:
    """A Markdown table of benchmark results."""
    head = (
        "| size | cutn | batch | clip | device | precision | s/it | it/s | img/h@300 | "
        "peak MB | TFLOP/it | TFLOP/s | decode | cutouts | clip | optimiser |"
    )
    rows = [head, "|" + "---|" * 16]
    for r in results:
        st = r["stage_s"]
        rows.append(
            f"| {r['size'][0]}x{r['size'][1]} | {r['cutn']} | {r['batch']} | "
            f"{'+'.join(r['clip'])} | {r['device_name']} | {r['precision']} | "
            f"{r['s_per_it']:.3f} | {r['it_per_s']:.2f} | {r['images_per_hour_300']:.0f} | "
            f"{r['peak_mem_mb']:.0f} | {r['flops_per_it'] / 1e12:.3f} | "
            f"{r['achieved_tflops']:.2f} | {st['decode']:.3f} | {st['cutouts']:.3f} | "
            f"{st['clip']:.3f} | {st['optimiser']:.4f} |"
        )
    return "\n".join(rows)
