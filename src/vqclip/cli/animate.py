"""`vqclip animate`: a zoom / pan / rotate video, each frame warm-started from the one before.
It builds the config and the animation from flags and consumes `run_animation`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vqclip.cli.options import HelpFormatter, add_config_options, given_options
from vqclip.errors import ConfigError


def add_parser(subparsers) -> None:
    from vqclip.jobs import JobOptions
    from vqclip.jobs.animation import Animation

    p = subparsers.add_parser(
        "animate",
        help="make a zoom / pan / rotate video, prompts changing over the frames",
        description="Frame 0 runs --iterations steps; every later frame zooms, turns and "
        "shifts the frame before and runs --steps-per-frame steps from it. A story prompt "
        '("a forest ^ a castle") changes over the frames (--change-prompt-every and '
        "--prompt-starts count frames here). Frames go to OUT/frames/ as they finish; rerun "
        "the same command to resume an interrupted animation.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("prompt", nargs="*", help='"text:weight:stop|..." (parts separated by ^)')
    groups = add_config_options(p)
    groups["models"].add_argument(
        "--model", help="a VQGAN + CLIP pair by one name (`toy` runs offline)"
    )
    add_config_options(p, Animation)
    g = groups["image and run"]
    g.add_argument("-o", "--out", required=True, metavar="DIR", help="the animation's folder")
    g.add_argument(
        "--from-png",
        metavar="IMAGE",
        help="start from the settings stored in an image (prompts, models, seed ...); the "
        "options given change them",
    )
    add_config_options(p, JobOptions, only=("checkpoint_every",))
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_animate)


def settings_from_args(args: argparse.Namespace):
    """(config, animation): the flags given, on top of --from-png's stored settings, else on
    top of the model pair's; the seed of a started animation in --out when none is given, so
    the same command resumes it."""
    from vqclip.generate.config import build_config
    from vqclip.jobs.animation import Animation, stored_animation

    given = given_options(args)
    prompts = [*args.prompt, *given.get("prompts", ())]
    base = None
    if args.from_png:
        from vqclip.output import read_image_metadata

        base = read_image_metadata(args.from_png)["config"]
    if prompts:
        given["prompts"] = prompts
    elif base is None and not (given.get("image_prompts") or given.get("noise_prompt_seeds")):
        raise ConfigError('give a prompt, e.g. vqclip animate "a forest ^ a castle" -o film')
    if args.model is not None:
        given["model"] = args.model
    stored = stored_animation(args.out)
    for name in ("seed", "threads"):  # what the started animation resolved, so it resumes
        if stored is not None and name not in given:
            given[name] = getattr(stored[0], name)
    return build_config(given, base), Animation(**given_options(args, Animation))


def run_animate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vqclip.cli.generate import stop_requests
    from vqclip.jobs import FRAMES_DIR, JobOptions
    from vqclip.jobs.animation import claim_folder, finished_frames, run_animation
    from vqclip.jobs.threads import with_threads

    options = JobOptions(**given_options(args, JobOptions))
    config, animation = settings_from_args(args)
    config = with_threads(config)
    out = Path(args.out)
    claim_folder(out, config, animation)
    done = finished_frames(out, animation.frames)
    initial = 0 if done == 0 else config.iterations + (done - 1) * animation.steps_per_frame
    print(
        f"animate: {animation.frames} frames ({done} done before), seed {config.seed} -> {out}",
        file=sys.stderr,
    )
    bar = tqdm(
        total=animation.total_steps(config),
        initial=initial,
        disable=args.no_progress,
        unit="it",
        dynamic_ncols=True,
    )
    try:
        with stop_requests() as stop:
            result = run_animation(
                config,
                animation,
                out,
                models=getattr(args, "models", None),
                options=options,
                on_step=lambda step, run: bar.update(1),
                should_stop=lambda: stop.signal is not None,
            )
    finally:
        bar.close()
    if result.status == "stopped":
        print(
            f"stopped after {len(result.frames)} finished frames; rerun the same command to resume",
            file=sys.stderr,
        )
        return stop.exit_code
    if result.status == "failed":
        print(f"vqclip: error: {result.error}", file=sys.stderr)
        return 3
    where = result.video or out / FRAMES_DIR
    print(f"wrote {len(result.frames)} frames, {where} ({result.seconds:.1f} s)", file=sys.stderr)
    return 0
