"""`vqclip generate`: builds a GenerateConfig from flags and consumes the Generator's steps.

Short flags follow nerdyrodent's generate.py (-p, -ip, -ii, -s, -i, -cuts, -cutp, -o, -se, -sd,
-aug, -opt, -lr) so its users feel at home. No algorithm lives here.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

from vqclip.errors import ConfigError
from vqclip.generate.config import (
    CUT_METHODS,
    DEFAULT_AUGMENTS,
    INITS,
    LR_SCALES,
    OPTIMISERS,
    PRECISIONS,
    SCHEDULES,
    TV_TARGETS,
    GenerateConfig,
)

DEFAULTS = GenerateConfig(prompts=("x",))
PAIR = ", or the --model pair's own"

INIT_WEIGHT_HELP = (
    "weight of a loss that anchors z to its initial value (the random codes or the encoded init "
    "image), so the result stays close to the init. NOTE: nerdyrodent's init_weight instead pulls "
    "z toward zero; vqclip anchors toward the initial z."
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: those flags say in their help where the default comes from."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_generate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="make an image from text prompts",
        description="Optimise a VQGAN latent so the image matches the prompts under CLIP.",
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("prompts")
    g.add_argument("prompt", nargs="*", help='"text:weight:stop|..."; several = a batch, one each')
    g.add_argument("-p", "--prompts", action="append", default=[], help="as the positional prompt")
    g.add_argument(
        "-ip",
        "--image-prompts",
        action="append",
        default=[],
        help='image prompts "path_or_url:weight:stop|..."',
    )
    g.add_argument("-nps", "--noise-prompt-seeds", type=int, nargs="+", default=[])
    g.add_argument("-npw", "--noise-prompt-weights", type=float, nargs="+", default=[])

    g = p.add_argument_group("models")
    g.add_argument("--model", help="a VQGAN + CLIP pair by one name (see `vqclip models list`)")
    g.add_argument("--vqgan", help="VQGAN registry name or checkpoint path")
    g.add_argument("--vqgan-config", help="taming YAML for a .ckpt given by path")
    g.add_argument("--clip", nargs="+", help="CLIP registry names or paths; several = an ensemble")
    g.add_argument(
        "--clip-weights", type=float, nargs="+", default=[], help="one weight per --clip model"
    )

    g = p.add_argument_group("image and run")
    g.add_argument(
        "-s",
        "--size",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        help="output size; default 256x256 on CPU, 512x512 on a GPU with the memory",
    )
    g.add_argument("-i", "--iterations", type=int, help=f"default: {DEFAULTS.iterations}{PAIR}")
    g.add_argument("-sd", "--seed", type=int, help="random seed (default: random, printed)")
    g.add_argument("-b", "--batch", type=int, default=1, help="images optimised together")
    g.add_argument("-o", "--output", default="output.png")
    g.add_argument(
        "-se",
        "--save-every",
        type=int,
        default=0,
        help="also write the image every N steps to OUTPUT_steps/",
    )
    g.add_argument("--video", action="store_true", help="write OUTPUT.mp4 of the progress")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay the decoder and CLIP as CUDA graphs (about 2x at 256x256 on an H100)",
    )
    g.add_argument(
        "--checkpoint-decoder",
        action="store_true",
        help="gradient checkpointing of the decoder: less memory for large images, ~1.3x the "
        "decoder's time",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="decoder and CLIP compute dtype; auto: bf16 on CUDA and bf16-capable CPUs",
    )

    g = p.add_argument_group("cutouts")
    g.add_argument("-cuts", "--cutn", type=int, help=f"default: {DEFAULTS.cutn}{PAIR}")
    g.add_argument("-cutp", "--cut-pow", type=float, default=DEFAULTS.cut_pow)
    g.add_argument(
        "-cutm", "--cut-method", choices=CUT_METHODS, help=f"default: {DEFAULTS.cut_method}{PAIR}"
    )
    g.add_argument(
        "-aug",
        "--augments",
        nargs="*",
        default=list(DEFAULT_AUGMENTS),
        help="nerdyrodent's codes: Ji Sh Gn Pe Ro Af Et Ts Cr Er Re",
    )
    g.add_argument("--noise-fac", type=float, default=DEFAULTS.noise_fac)

    g = p.add_argument_group("init and regularisers")
    g.add_argument("-ii", "--init-image", help="start from this image (encoded by the VQGAN)")
    g.add_argument(
        "-in",
        "--init",
        choices=INITS,
        default="random",
        help="random codes, random coloured pixels, smooth gradient noise, or image",
    )
    g.add_argument("-iw", "--init-weight", type=float, help=INIT_WEIGHT_HELP + f" Default: 0{PAIR}")
    g.add_argument("--tv-weight", type=float, help=f"total-variation loss weight; default: 0{PAIR}")
    g.add_argument(
        "--tv-on",
        choices=TV_TARGETS,
        default=DEFAULTS.tv_on,
        help="total variation of the image's pixels, or of the latent z (fewer code changes)",
    )

    g = p.add_argument_group("optimiser")
    g.add_argument("-opt", "--optimiser", choices=OPTIMISERS, default=DEFAULTS.optimiser)
    g.add_argument("-lr", "--learning-rate", type=float, help=f"default: {DEFAULTS.lr}{PAIR}")
    g.add_argument(
        "--lr-scale",
        choices=LR_SCALES,
        default="codebook",
        help="codebook: the learning rate counts codebook standard deviations, so it means the "
        "same for VQGANs of different scale; none: absolute units, as nerdyrodent's",
    )
    g.add_argument("--schedule", choices=SCHEDULES, default=DEFAULTS.schedule)
    g.add_argument("--step-size", type=int, default=DEFAULTS.step_size, help="for --schedule step")
    g.add_argument("--gamma", type=float, default=DEFAULTS.gamma, help="for --schedule step")

    g = p.add_argument_group("reproduce and resume")
    g.add_argument("--from-png", help="rerun the settings stored in a PNG vqclip wrote")
    g.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="write a run checkpoint every N steps (always on Ctrl-C)",
    )
    g.add_argument("--checkpoint-dir", help="default: OUTPUT.run/")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)


def _default_size(device_name: str) -> tuple[int, int]:
    from vqclip.devices import available_memory_bytes, resolve_device

    device = resolve_device(device_name)
    if device.type == "cuda" and available_memory_bytes(device) >= 10 * 2**30:
        return (512, 512)
    return (256, 256)


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    """The run's settings from the flags (or from --from-png's metadata)."""
    from vqclip.weights.registry import resolve_pair

    if args.from_png:
        from vqclip.output import read_png_metadata

        return GenerateConfig.from_dict(read_png_metadata(args.from_png)["config"])
    prompts = [*args.prompt, *args.prompts]
    if not (prompts or args.image_prompts or args.noise_prompt_seeds):
        raise ConfigError('give a prompt, e.g. vqclip generate "a red circle on a blue background"')
    if any(not p.strip() for p in prompts):
        raise ConfigError('a prompt is empty; write some text, e.g. "a lighthouse at dusk"')
    pair = resolve_pair(args.model) if args.model else None
    pair_defaults = dict(pair.defaults) if pair else {}

    def pick(field: str, given):
        """The flag if given, else the model pair's setting, else the general default."""
        if given is not None:
            return given
        return pair_defaults.get(field, getattr(DEFAULTS, field) if field != "size" else None)

    vqgan = args.vqgan or (pair.vqgan if pair else DEFAULTS.vqgan)
    clip = tuple(args.clip) if args.clip else (pair.clips if pair else DEFAULTS.clip)
    batch = len(prompts) if len(prompts) > 1 else args.batch
    return GenerateConfig(
        prompts=tuple(prompts),
        image_prompts=tuple(args.image_prompts),
        noise_prompt_seeds=tuple(args.noise_prompt_seeds),
        noise_prompt_weights=tuple(args.noise_prompt_weights),
        size=tuple(args.size) if args.size else pick("size", None) or _default_size(args.device),
        iterations=pick("iterations", args.iterations),
        seed=args.seed if args.seed is not None else secrets.randbelow(2**31),
        batch_size=batch,
        vqgan=vqgan,
        clip=clip,
        clip_weights=tuple(args.clip_weights),
        cutn=pick("cutn", args.cutn),
        cut_pow=args.cut_pow,
        cut_method=pick("cut_method", args.cut_method),
        augments=tuple(args.augments),
        noise_fac=args.noise_fac,
        init="image" if args.init_image else args.init,
        init_image=args.init_image,
        init_weight=pick("init_weight", args.init_weight),
        tv_weight=pick("tv_weight", args.tv_weight),
        tv_on=args.tv_on,
        optimiser=args.optimiser,
        lr=pick("lr", args.learning_rate),
        lr_scale=args.lr_scale,
        schedule=args.schedule,
        step_size=args.step_size,
        gamma=args.gamma,
        device=args.device,
        precision=args.precision,
        cuda_graphs=args.cuda_graphs,
        checkpoint_decoder=args.checkpoint_decoder,
        vqgan_config=args.vqgan_config,
    )


def _output_paths(output: Path, batch: int) -> list[Path]:
    if batch == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(batch)]


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vqclip import __version__
    from vqclip.generate.checkpoint import load_run_state
    from vqclip.generate.generator import GenerationError, Generator
    from vqclip.output import VideoWriter, check_writable, save_png

    state = None
    if args.resume:
        state = load_run_state(args.resume)
        config = GenerateConfig.from_dict(state["config"])
    else:
        config = config_from_args(args)
    output = check_writable(Path(args.output))
    run_dir = Path(args.checkpoint_dir or args.resume or output.with_suffix(".run"))

    started = time.perf_counter()
    gen = Generator(config)
    if state is not None:
        gen.load_state_dict(state)
    width, height = gen.image_size
    if tuple(config.size) != gen.image_size:
        f = gen.vqgan.downsample_factor
        print(
            f"note: size {config.size[0]}x{config.size[1]} rounded down to {width}x{height} "
            f"(a multiple of the VQGAN's factor {f})",
            file=sys.stderr,
        )
    lr = f"lr {gen.effective_lr:.4g}"
    if config.lr_scale == "codebook":
        lr += f" (= {config.lr:g} x codebook std {gen.codebook_std:.3g})"
    dtype = str(gen.dtype).removeprefix("torch.")
    print(
        f"vqclip {__version__}: {width}x{height}, {config.iterations} steps, seed {config.seed}, "
        f"on {gen.device} ({dtype}), {lr}",
        file=sys.stderr,
    )

    def metadata(index: int) -> dict:
        meta = {
            "vqclip_version": __version__,
            "config": config.to_dict(),
            "image_index": index,
            "step": gen.step_index,
            "size": [width, height],
        }
        stopped = [step for step, i in gen.failures if i == index]
        if stopped:
            meta["stopped_at_step"] = stopped[0]  # its loss became NaN: the last good image
        return meta

    video = VideoWriter(output.with_suffix(".mp4")) if args.video else None
    bar = tqdm(
        total=config.iterations,
        initial=gen.step_index,
        disable=args.no_progress,
        unit="it",
        dynamic_ncols=True,
    )
    try:
        for step in gen.iterate():
            bar.update(1)
            if step.index % 10 == 0 or step.index == config.iterations:
                bar.set_postfix(loss=f"{step.total.mean().item():.4f}")
            if video is not None:
                video.add(step.image[0])
            if args.save_every and step.index % args.save_every == 0:
                steps_dir = output.with_name(f"{output.stem}_steps")
                for i, path in enumerate(
                    _output_paths(steps_dir / f"{step.index:05d}.png", config.batch_size)
                ):
                    save_png(step.image[i], path, metadata(i))
            if args.checkpoint_every and step.index % args.checkpoint_every == 0:
                gen.save_checkpoint(run_dir)
    except KeyboardInterrupt:
        bar.close()
        gen.save_checkpoint(run_dir)
        print(
            f"\ninterrupted at step {gen.step_index}; resume with: vqclip generate --resume "
            f"{run_dir} -o {output}",
            file=sys.stderr,
        )
        return 130
    except GenerationError as e:
        bar.close()
        for i, path in enumerate(_output_paths(output, config.batch_size)):
            save_png(gen.last_good_image()[i], path, metadata(i))
        print(f"vqclip: error: {e} (last good image: {output})", file=sys.stderr)
        return 3
    finally:
        bar.close()
        if video is not None:
            video.close()
    final = gen.image()
    paths = _output_paths(output, config.batch_size)
    for i, path in enumerate(paths):
        save_png(final[i], path, metadata(i))
    elapsed = time.perf_counter() - started
    print(
        f"wrote {', '.join(map(str, paths))} ({width}x{height}, {gen.step_index} steps, "
        f"seed {config.seed}, {elapsed:.1f} s)",
        file=sys.stderr,
    )
    for step, i in gen.failures:
        print(
            f"warning: image {i} ({paths[i]}) stopped at step {step}: its loss became NaN; "
            "it holds "
            "its last good image",
            file=sys.stderr,
        )
    return 0
