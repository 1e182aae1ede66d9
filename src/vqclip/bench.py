"""Speed and memory of the generation loop at the real model sizes, with random weights.

Speed does not depend on weight values, so the benchmark builds the real architectures (VQGAN
ImageNet f16 16384, CLIP ViT presets) with random weights and times the normal `Run` steps:
steady-state seconds per iteration (median after warm-up), peak memory, FLOPs per iteration
(torch.utils.flop_counter) and the split by stage. A short bf16 matrix-product probe in the same
process measures the machine's own matrix peak, so each figure also says what fraction of that
peak the step reaches: the same s/it means different things on an AMX Xeon and an AVX2 EPYC.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

from vqclip.devices import cpu_description
from vqclip.errors import ConfigError
from vqclip.omp import USER_SETTINGS

STAGES = ("decode", "cutouts", "clip", "loss", "optimiser")
PROMPT = "the great hall of the sacred library by James Gurney"


class StageTimer:
    """Wall time per stage of `Run.step`, measured from outside the loop with module hooks.

    A forward hook on the decoder, each cutout maker and each CLIP image tower ends that
    stage's forward time and hooks the stage's output tensor: when the backward pass reaches it,
    the stage downstream has finished its backward (the loss, then CLIP, then the cutouts). The
    gradient reaching the decoder's input ends the decoder's backward; what is left of the step
    is the optimiser. Each stage's time is its forward plus its backward pass."""

    def __init__(self, run) -> None:
        self.device = run.device
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = 0.0
        self._seen: set[int] = set()
        modules = [(run.vqgan.decoder, "decode", "cutouts")]
        modules += [(c, "cutouts", "clip") for c in run.cutouts]
        modules += [(c.visual, "clip", "loss") for c in run.clips]
        self._handles = [m.register_forward_hook(self._forward_end(*s)) for m, *s in modules]
        self._handles.append(run.vqgan.post_quant_conv.register_forward_pre_hook(self._input))

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> float:
        self._seen.clear()
        self._last = self.now()
        return self._last

    def stop(self) -> float:
        """End the step (the optimiser's share) and return the time."""
        self._add("optimiser")
        return self._last

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _add(self, stage: str) -> None:
        now = self.now()
        self.seconds[stage] += now - self._last
        self._last = now

    def _forward_end(self, stage: str, downstream: str):
        def hook(module, inputs, output) -> None:
            # A recomputation inside the backward pass (--checkpoint-decoder) is not a stage end.
            if id(module) in self._seen:
                return
            self._seen.add(id(module))
            self._add(stage)
            if output.requires_grad:
                output.register_hook(lambda grad: self._add(downstream))

        return hook

    def _input(self, module, inputs) -> None:
        if id(module) not in self._seen and inputs[0].requires_grad:
            self._seen.add(id(module))
            inputs[0].register_hook(lambda grad: self._add("decode"))


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
    peak_size: int = 2048  # side of the square bf16 matrix products of the peak probe
    peak_seconds: float = 1.0
    # a registry prior (maskgit_imagenet_256 / _512, amused_256 / _512): its pair's loop (its
    # VQ model, the prior's settings) with random weights of its size, and one redraw timed
    # beside the steps
    prior: str | None = None

    def __post_init__(self) -> None:
        from vqclip.clip import CLIP_PRESETS

        for name in self.clip:
            if name not in CLIP_PRESETS:
                raise ConfigError(f"clip={name!r}: choose from {', '.join(CLIP_PRESETS)}")
        if self.steps < 1 or self.warmup < 0:
            raise ConfigError(f"steps={self.steps}, warmup={self.warmup}: need steps >= 1")
        if self.prior is not None:
            pair_for_prior(self.prior)
        if self.peak_size < 1 or not self.peak_seconds > 0:
            raise ConfigError(
                f"peak_size={self.peak_size}, peak_seconds={self.peak_seconds}: need both > 0"
            )


def matrix_peak_flops(
    device: torch.device, *, size: int = 2048, seconds: float = 1.0, dtype=torch.bfloat16
) -> float:
    """FLOP/s of back-to-back (size x size) @ (size x size) products in `dtype` on `device`,
    with the process's current thread count: this machine's practical matrix peak."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    for _ in range(2):  # warm-up: oneDNN / cuBLAS pick and build their kernels
        a @ b
    sync()
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        if count % 4 == 0 or device.type != "cuda":
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return 2 * size**3 * count / elapsed


def build_models(clip_names: tuple[str, ...], n_embed: int = 16384):
    """The real architectures with random weights: VQGAN ImageNet f16 (16384 codes, or
    `n_embed`) and CLIP presets."""
    from vqclip.clip import CLIP, clip_preset
    from vqclip.vqgan import VQGAN, VQGANConfig

    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig(n_embed=n_embed))  # the other defaults are ImageNet f16's
    clips = [CLIP(clip_preset(name, quick_gelu=True)) for name in clip_names]
    return vqgan, clips


PRIOR_FORMATS = ("maskgit", "amused")


def pair_for_prior(name: str):
    """The model pair whose default prior is registry prior `name` (MaskGIT's or aMUSEd's)."""
    from vqclip.weights.registry import PAIRS, get_spec

    spec = get_spec(name)
    for pair in PAIRS.values():
        if dict(pair.defaults).get("prior") == spec.name and spec.preset in PRIOR_FORMATS:
            return pair
    raise ConfigError(
        f"prior={name!r}: bench times MaskGIT's and aMUSEd's priors (maskgit_imagenet_256/512, "
        "amused_256/512)"
    )


def _initialised(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter of `model` set as a trained model's would be (finite, well scaled):
    loaders fill every tensor, so some modules leave theirs uninitialised. Norm weights 1,
    biases 0, the rest normal with std 0.02."""
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.ndim == 1 and name in ("weight", "bias"):
                torch.nn.init.constant_(param, 1.0 if name == "weight" else 0.0)
            else:
                torch.nn.init.normal_(param, std=0.02)
    return model.eval().requires_grad_(False)


def random_maskgit(grid: int):
    """MaskGIT's transformer at its real size for a `grid` x `grid` window, random weights."""
    from vqclip.prior.imagenet import imagenet_class_names
    from vqclip.prior.maskgit import MaskGITConfig, MaskGITPrior, MaskGITTransformer

    torch.manual_seed(0)
    model = _initialised(MaskGITTransformer(MaskGITConfig(grid=grid)))
    prior = MaskGITPrior(model, f"random MaskGIT {grid}x{grid}")
    prior.class_names = imagenet_class_names()
    return prior


def random_amused(pixels: int):
    """aMUSEd's U-ViT at its real size (amused-256 or -512) with its CLIP L/14 text tower,
    random weights."""
    from vqclip.clip.model import CLIP
    from vqclip.prior.amused import AMUSED_256, AMUSED_512, AmusedPrior, UViT2D
    from vqclip.prior.amused_text import AMUSED_TEXT_CONFIG, text_encoder_config

    torch.manual_seed(0)
    model = _initialised(UViT2D(AMUSED_512 if pixels == 512 else AMUSED_256))
    prior = AmusedPrior(model, f"random aMUSEd {pixels}")
    text = text_encoder_config(AMUSED_TEXT_CONFIG, source="aMUSEd's text encoder")
    prior.text_encoder = CLIP(text).eval().requires_grad_(False)
    return prior


def pair_models(pair, clip_names: tuple[str, ...]):
    """The VQ model of a prior's pair at its real size, random weights, and the CLIP guides."""
    from vqclip.weights.registry import get_spec

    if get_spec(pair.vqgan).preset == "amused":
        from vqclip.vqgan.amused_vq import AMUSED_VQ_CONFIG, AmusedVQ, vq_config_from_diffusers

        _, clips = build_models(clip_names, n_embed=16)
        torch.manual_seed(0)
        return AmusedVQ(vq_config_from_diffusers(AMUSED_VQ_CONFIG)), clips
    return build_models(clip_names, n_embed=1024)  # MaskGIT's tokenizer: ImageNet f16 1024


def random_prior(name: str, grid: int):
    """The registry prior `name` at its real size with random weights, for a grid x grid
    image."""
    from vqclip.weights.registry import get_spec

    spec = get_spec(name)
    if spec.preset == "amused":
        return random_amused(512 if spec.name.endswith("512") else 256)
    return random_maskgit(min(grid, 32))


def _peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or this process's peak resident set.

    On Linux the resident peak is VmHWM, the high-water mark of this program alone:
    `ru_maxrss` also counts the launcher's memory, because a child started by fork + exec
    inherits the parent's resident set size at the fork (a `vqclip bench` started by a script
    that holds 1.4 GB reported 1.4 GB whatever it used)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource  # Unix only: imported where it is used, so Windows can import vqclip

    scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run_bench(config: BenchConfig, models=None) -> dict:
    """Benchmark one configuration; `models` (vqgan, clips) replaces the real sizes in tests."""
    from torch.utils.flop_counter import FlopCounterMode

    from vqclip.generate import GenerateConfig, Run

    pair = pair_for_prior(config.prior) if config.prior else None
    if models is None:
        models = pair_models(pair, config.clip) if pair else build_models(config.clip)
    vqgan, clips = models
    total_steps = config.warmup + config.steps + 1
    prior_settings = {k: v for k, v in pair.defaults if k.startswith("prior")} if pair else {}
    if pair:
        prior_settings.update(prior=config.prior)  # its random weights are handed in below
        if "amused" not in config.prior:  # the class is given: choosing it is a one-off cost
            prior_settings.update(prior_class=0)
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
        seed=0,
        **prior_settings,
    )
    extensions = []
    if pair:
        from vqclip.prior.plugin import extensions_for

        grid = config.size[0] // vqgan.downsample_factor
        extensions = extensions_for(gen_config, prior=random_prior(config.prior, grid))
    run = Run(gen_config, vqgan=vqgan, clips=clips, extensions=extensions)
    device = run.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(config.warmup):
        run.step()

    times = []
    timer = StageTimer(run)
    for _ in range(config.steps):
        start = timer.start()
        run.step()
        times.append(timer.stop() - start)
    timer.remove()
    # Graph replays run no Python hooks: with graphs only the total is measured.
    stage_s = (
        None if config.cuda_graphs else {k: v / config.steps for k, v in timer.seconds.items()}
    )
    peak_mb = _peak_memory_mb(device)

    redraw_s = None
    if extensions:  # one redraw as the pair's loop makes it (candidates, guided rounds)
        start = timer.now()
        extensions[0].resample(run)
        redraw_s = timer.now() - start

    # Graph replays are invisible to the FLOP counter: count an eager step (the same work).
    eager = Run(
        gen_config.replace(cuda_graphs=False), vqgan=vqgan, clips=clips, extensions=extensions
    )
    with FlopCounterMode(display=False) as counter:
        eager.step()
    flops = counter.get_total_flops()

    s_per_it = statistics.median(times)
    peak = matrix_peak_flops(device, size=config.peak_size, seconds=config.peak_seconds)
    return {
        "size": list(run.image_size),
        "cutn": config.cutn,
        "batch": config.batch,
        "clip": list(config.clip),
        "device": str(device),
        "device_name": _device_name(device),
        "cpu": cpu_description(),
        "precision": str(run.dtype).removeprefix("torch."),
        "cuda_graphs": config.cuda_graphs,
        "checkpoint_decoder": config.checkpoint_decoder,
        "threads": torch.get_num_threads(),
        # how idle OpenMP threads waited (vqclip.omp): None for both is libgomp's default spin
        "omp_wait": {key: os.environ.get(key) for key in USER_SETTINGS},
        "s_per_it": s_per_it,
        "it_per_s": 1 / s_per_it,
        "s_per_it_all": times,
        "images_per_hour_300": 3600 / (300 * s_per_it) * config.batch,
        "peak_mem_mb": peak_mb,
        "flops_per_it": flops,
        "achieved_tflops": flops / s_per_it / 1e12,
        # The machine's bf16 matrix peak (whatever the run's precision) and the step's share.
        "peak_bf16_tflops": peak / 1e12,
        "peak_fraction": flops / s_per_it / peak,
        "stage_s": stage_s,
        "prior": config.prior,
        "redraw_s": redraw_s,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "config": asdict(config),
    }


def _device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with its fastest matrix feature (e.g. amx_bf16)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        cpu = cpu_description()
        return f"{cpu['model']} ({cpu['best']})"
    return device.type


def format_table(results: list[dict]) -> str:
    """A Markdown table of benchmark results."""
    head = (
        "| size | cutn | batch | clip | device | precision | s/it | it/s | img/h@300 | "
        "peak MB | TFLOP/it | TFLOP/s | % bf16 peak | decode | cutouts | clip | optimiser |"
    )
    rows = [head, "|" + "---|" * 17]
    for r in results:
        st = r["stage_s"] or dict.fromkeys(STAGES, float("nan"))
        rows.append(
            f"| {r['size'][0]}x{r['size'][1]} | {r['cutn']} | {r['batch']} | "
            f"{'+'.join(r['clip'])} | {r['device_name']} | {r['precision']} | "
            f"{r['s_per_it']:.3f} | {r['it_per_s']:.2f} | {r['images_per_hour_300']:.0f} | "
            f"{r['peak_mem_mb']:.0f} | {r['flops_per_it'] / 1e12:.3f} | "
            f"{r['achieved_tflops']:.2f} | {100 * r['peak_fraction']:.0f}% of "
            f"{r['peak_bf16_tflops']:.2f} | {st['decode']:.3f} | {st['cutouts']:.3f} | "
            f"{st['clip']:.3f} | {st['optimiser']:.4f} |"
        )
    for r in results:
        if r.get("redraw_s") is not None:
            rows.append(
                f"\none redraw by {r['prior']} at {r['size'][0]}x{r['size'][1]} "
                f"({r['precision']}): {r['redraw_s']:.2f} s = {r['redraw_s'] / r['s_per_it']:.1f} "
                "plain steps"
            )
    return "\n".join(rows)
