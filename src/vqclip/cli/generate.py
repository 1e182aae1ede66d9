"""`vqclip generate`: builds a config from flags and consumes the run's steps.

Short flags follow nerdyrodent's generate.py (-p, -ip, -ii, -s, -i, -cuts, -cutp, -o, -se, -sd,
-aug, -opt, -lr) so its users feel at home. No algorithm lives here.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from vqclip.cli.options import HelpFormatter, add_config_options, given_options
from vqclip.errors import CheckpointError, ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="make an image from text prompts",
        description="Optimise a VQGAN latent so the image matches the prompts under CLIP. "
        "Options not given come from --from-png's stored settings, else from the --model "
        "pair's, else the defaults shown.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "prompt", nargs="*", help='"text:weight:stop|..."; several = a batch, one image each'
    )
    groups = add_config_options(p)
    g = groups["models"]
    g.add_argument(
        "--model",
        help="a VQGAN + CLIP pair by one name, with its own default settings (see `vqclip models "
        "list`; `toy` runs offline)",
    )
    g = groups["image and run"]
    g.add_argument("-o", "--output", default="output.png", help="the image: .png or .jpg")
    g.add_argument(
        "-se",
        "--save-every",
        type=int,
        default=0,
        metavar="N",
        help="also write the image every N steps to OUTPUT_steps/",
    )
    g.add_argument("--video", action="store_true", help="write OUTPUT.mp4 of the progress")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("reproduce and resume")
    g.add_argument("--from-png", metavar="IMAGE", help="rerun the settings stored in an image")
    g.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="write a run checkpoint every N steps (always on Ctrl-C)",
    )
    g.add_argument("--checkpoint-dir", metavar="DIR", help="where (default: OUTPUT.run/)")
    p.set_defaults(func=run_generate)


def config_from_args(args: argparse.Namespace):
    """The run's settings: the flags given, on top of --from-png's stored settings, else on top
    of the model pair's and the declared defaults."""
    from vqclip.generate.config import build_config

    given = given_options(args)
    prompts = [*args.prompt, *given.get("prompts", ())]
    if prompts:
        given["prompts"] = prompts
    if args.model is not None:
        given["model"] = args.model
    base = None
    if args.from_png:
        from vqclip.output import read_image_metadata

        base = read_image_metadata(args.from_png)["config"]
    elif not (prompts or given.get("image_prompts") or given.get("noise_prompt_seeds")):
        raise ConfigError('give a prompt, e.g. vqclip generate "a red circle on a blue background"')
    return build_config(given, base)


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("save_every", "checkpoint_every"):
        if getattr(args, name) < 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}={getattr(args, name)}: give 0 (off) or a positive N")


def _output_paths(output: Path, batch: int) -> list[Path]:
    if batch == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(batch)]


class StopRequest:
    """Ctrl-C (or SIGTERM) asks the run to stop after the current step, so its checkpoint
    describes a step boundary; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(
            "\nstopping after this step and writing a checkpoint (Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal or signal.SIGINT)


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signals only reach the main thread; nothing to install
        return
    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _warn(text: str) -> None:
    print(f"vqclip: warning: {text}", file=sys.stderr)


def _write_checkpoint(run, run_dir: Path) -> bool:
    """A checkpoint that cannot be written is a warning: the run and its image go on."""
    try:
        run.save_checkpoint(run_dir)
        return True
    except OSError as e:
        _warn(f"could not write the run checkpoint to {run_dir}: {e.strerror or e}")
    except CheckpointError as e:
        _warn(str(e))
    return False


def _settings(args: argparse.Namespace):
    """(config, checkpointed state or None) of the run the flags ask for."""
    from vqclip.generate.checkpoint import load_run_state
    from vqclip.generate.config import GenerateConfig

    if not args.resume:
        return config_from_args(args), None
    extra = sorted(given_options(args)) + (["prompt"] if args.prompt else [])
    extra += ["--model"] if args.model else []
    extra += ["--from-png"] if args.from_png else []
    if extra:
        raise ConfigError(
            f"--resume continues a run with its own settings; drop {', '.join(extra)}"
        )
    state = load_run_state(args.resume)
    return GenerateConfig.from_dict(state["config"]), state


def _announce(run) -> None:
    from vqclip import __version__

    config, (width, height) = run.config, run.image_size
    if tuple(config.size) != run.image_size:
        f = run.vqgan.downsample_factor
        print(
            f"note: size {config.size[0]}x{config.size[1]} rounded down to {width}x{height} "
            f"(a multiple of the VQGAN's factor {f})",
            file=sys.stderr,
        )
    lr = f"lr {run.effective_lr:.4g}"
    if config.lr_scale == "codebook":
        lr += f" (= {config.lr:g} x codebook std {run.codebook_std:.3g})"
    dtype = str(run.dtype).removeprefix("torch.")
    print(
        f"vqclip {__version__}: {width}x{height}, {config.iterations} steps, seed {config.seed}, "
        f"on {run.device} ({dtype}), {lr}",
        file=sys.stderr,
    )


def run_generate(args: argparse.Namespace) -> int:
    from vqclip.generate.run import Run
    from vqclip.output import check_writable

    _check_numbers(args)
    config, state = _settings(args)
    output = check_writable(Path(args.output))
    run_dir = Path(args.checkpoint_dir or args.resume or output.with_suffix(".run"))
    started = time.perf_counter()
    with stop_requests() as stop:
        run = Run(config)
        if state is not None:
            run.load_state_dict(state)
        if stop.signal is not None:
            print("stopped before the first step", file=sys.stderr)
            return stop.exit_code
        _announce(run)
        return _consume(run, args, output, run_dir, stop, started)


def _consume(run, args, output: Path, run_dir: Path, stop: StopRequest, started: float) -> int:
    """Drive the run's steps: progress, step images, video, checkpoints, the final image."""
    from tqdm import tqdm

    from vqclip import __version__
    from vqclip.generate.run import GenerationError
    from vqclip.output import VideoWriter, save_image

    config, (width, height) = run.config, run.image_size

    def metadata(index: int) -> dict:
        meta = {
            "vqclip_version": __version__,
            "config": config.to_dict(),
            "image_index": index,
            "step": run.step_index,
            "size": [width, height],
        }
        stopped = [step for step, i in run.failures if i == index]
        if stopped:
            meta["stopped_at_step"] = stopped[0]  # its loss became NaN: the last good image
        return meta

    video = VideoWriter(output.with_suffix(".mp4")) if args.video else None
    bar = tqdm(
        total=config.iterations,
        initial=run.step_index,
        disable=args.no_progress,
        unit="it",
        dynamic_ncols=True,
    )
    stopped_by = None
    try:
        for step in run.iterate():
            bar.update(1)
            if step.index % 10 == 0 or step.index == config.iterations:
                bar.set_postfix(loss=f"{step.total.mean().item():.4f}")
            if video is not None:
                video.add(step.image[0])
            if args.save_every and step.index % args.save_every == 0:
                steps_dir = output.with_name(f"{output.stem}_steps")
                name = f"{step.index:05d}{output.suffix}"
                for i, path in enumerate(_output_paths(steps_dir / name, config.batch_size)):
                    try:
                        save_image(step.image[i], path, metadata(i))
                    except OSError as e:
                        _warn(f"could not write {path}: {e.strerror or e}")
            if args.checkpoint_every and step.index % args.checkpoint_every == 0:
                _write_checkpoint(run, run_dir)
            if stop.signal is not None and step.index < config.iterations:
                stopped_by = stop.exit_code
                break
    except KeyboardInterrupt:  # a second Ctrl-C, inside a step
        stopped_by = 130
    except GenerationError as e:
        bar.close()
        written, _ = _save_all(run.last_good_image(), output, config.batch_size, metadata)
        print(f"vqclip: error: {e} (last good image: {', '.join(written)})", file=sys.stderr)
        return 3
    finally:
        bar.close()
        if video is not None:
            try:
                video.close()
            except OSError as e:
                _warn(f"could not write the video {video.path}: {e}")
    if stopped_by is not None:
        if _write_checkpoint(run, run_dir):
            print(
                f"stopped at step {run.step_index}; resume with: vqclip generate --resume "
                f"{run_dir} -o {output}",
                file=sys.stderr,
            )
        return stopped_by
    written, rescued = _save_all(run.image(), output, config.batch_size, metadata)
    print(
        f"wrote {', '.join(written)} ({width}x{height}, {run.step_index} steps, "
        f"seed {config.seed}, {time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    for step, i in run.failures:
        _warn(
            f"image {i} stopped at step {step}: its loss became NaN; it holds its last good image"
        )
    return 1 if rescued else 0


def _save_all(images, output: Path, batch: int, metadata) -> tuple[list[str], bool]:
    """Write every image of the batch: (where they went, whether one had to be rescued into
    another folder because its own could not be written)."""
    from vqclip.output import save_image_or_rescue

    written, rescued = [], False
    for i, path in enumerate(_output_paths(output, batch)):
        where, why = save_image_or_rescue(images[i], path, metadata(i))
        written.append(str(where))
        if why is not None:
            rescued = True
            print(
                f"vqclip: error: could not write {path} ({why}); the image was saved to {where}",
                file=sys.stderr,
            )
    return written, rescued
