"""`vqclip generate`: builds a config from flags and consumes the run's steps.

Short flags follow nerdyrodent's generate.py (-p, -ip, -ii, -s, -i, -cuts, -cutp, -o, -se, -sd,
-aug, -opt, -lr), and the rest of its flags are accepted too (`vqclip.cli.nerdyrodent`), so its
users' command lines run as they are. No algorithm lives here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vqclip.cli import nerdyrodent
from vqclip.cli.options import HelpFormatter, add_config_options, given_options
from vqclip.errors import ConfigError


def add_parser(subparsers) -> None:
    from vqclip.jobs import JobOptions

    p = subparsers.add_parser(
        "generate",
        help="make an image from text prompts",
        description="Optimise a VQGAN latent so the image matches the prompts under CLIP. "
        "Options not given come from --from-png's stored settings, else from the --model "
        "pair's, else the defaults shown. nerdyrodent/VQGAN-CLIP's flags (-m, -conf, -ckpt, "
        "-cd, --num_cuts, -opt Adam, -zvid ...) are accepted as well.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "prompt", nargs="*", help='"text:weight:stop|..."; several = a batch, one image each'
    )
    groups = add_config_options(p, aliases=nerdyrodent.FLAGS, value_aliases=nerdyrodent.VALUES)
    g = groups["models"]
    g.add_argument(
        "--model",
        help="a VQGAN + CLIP pair by one name, with its own default settings (see `vqclip models "
        "list`; `toy` runs offline)",
    )
    g = groups["image and run"]
    g.add_argument(
        "-o",
        "--output",
        help="the image: .png or .jpg (default: output.png; with --resume, the image the run "
        "was writing)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_options(p, JobOptions, aliases=nerdyrodent.FLAGS)
    g = p.add_argument_group("reproduce and resume")
    g.add_argument("--from-png", metavar="IMAGE", help="rerun the settings stored in an image")
    g.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
    g.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="where the run checkpoint goes, kept after the run (default: OUTPUT.run/, removed "
        "once the image is written)",
    )
    nerdyrodent.add_flags(p)
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


class StopRequest:
    """Ctrl-C (or SIGTERM) asks the run to stop after the current step, or, inside a prior's
    redraw (20 s and more), at once with that step undone, so its checkpoint describes a step
    boundary; a second Ctrl-C stops at once (the step under way undone too)."""

    def __init__(self, starting: bool = False) -> None:
        self.signal: int | None = None
        # What a stop does, and what the message says, depends on where the run is: before its
        # first step (`starting`: the models load) it ends with nothing to checkpoint; once its
        # last step is done (`finishing`) it only lets the image be written.
        self.starting = starting
        self.finishing = False
        self.late = False

    def __call__(self, signum: int, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        self.late = self.finishing
        if self.starting:
            text = "stopping before the first step (Ctrl-C again to stop at once)"
        elif self.late:
            text = "the run has finished; writing its image (Ctrl-C again to stop at once)"
        else:
            text = (
                "stopping after this step (a redraw under way is cut short) and writing a "
                "checkpoint (Ctrl-C again to stop at once)"
            )
        print(f"\n{text}", file=sys.stderr)

    @property
    def requested(self) -> bool:
        """Whether the run should stop: asked for before its last step was done."""
        return self.signal is not None and not self.late

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal or signal.SIGINT)


@contextlib.contextmanager
def stop_requests(starting: bool = False) -> Iterator[StopRequest]:
    """Ctrl-C and SIGTERM as `StopRequest`s while the block runs; `starting`: the run has not
    begun (its `on_start` clears it)."""
    request = StopRequest(starting)
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


def _check_weights(config, model: str | None) -> None:
    """Offline, every missing weight file of the run in one message, before any model loads."""
    from vqclip.declare import model_references
    from vqclip.weights.download import check_available
    from vqclip.weights.registry import PACKAGED, get_spec

    names = [n for _, n in model_references(config) if n not in PACKAGED]
    # paths are the loaders' to check; a name that is not a registry model is refused here,
    # with the names it may have meant
    names = [n for n in names if not (Path(n).suffix or os.sep in n or Path(n).is_file())]
    specs = list(dict.fromkeys(get_spec(n) for n in names))
    hint = model if model else " ".join(s.name for s in specs)
    check_available(specs, hint)


def _announce(run) -> None:
    from vqclip import __version__

    # the size of the image the run ends with (the last scale is the whole size); with
    # --scales the first steps run on a smaller grid, said beside it
    config, f = run.config, run.vqgan.downsample_factor
    width, height = run.full_grid[1] * f, run.full_grid[0] * f
    if tuple(config.size) != (width, height):
        print(
            f"note: size {config.size[0]}x{config.size[1]} rounded down to {width}x{height} "
            f"(a multiple of the VQGAN's factor {f})",
            file=sys.stderr,
        )
    size = f"{width}x{height}"
    if len(config.scales) > 1:
        first_h, first_w = run.stages.grid(0)
        size += f" (from {first_w * f}x{first_h * f}, {len(config.scales)} scales)"
    lr = f"lr {run.effective_lr:.4g}"
    if config.lr_scale == "codebook":
        lr += f" (= {config.lr:g} x codebook std {run.codebook_std:.3g})"
    dtype = str(run.dtype).removeprefix("torch.")
    print(
        f"vqclip {__version__}: {size}, {config.iterations} steps, seed {config.seed}, "
        f"on {run.device} ({dtype}), {lr}",
        file=sys.stderr,
    )
    for index in range(config.batch_size):
        note = run.notes(index)
        image = f"image {index}: " if config.batch_size > 1 else ""
        if "prior_text" in note:  # a text-conditional prior (aMUSEd) reads the prompt's text
            negative = note.get("prior_negative_text")
            against = f", against {negative!r}" if negative else ""
            print(f"prior: {image}text {note['prior_text']!r}{against}", file=sys.stderr)
        if "prior_class_from" not in note:
            continue
        name = note.get("prior_class_name")
        chosen = f"class {note['prior_class']} ({name})" if name else f"class {note['prior_class']}"
        if note["prior_class"] is None:
            chosen = "no class"
        print(f"prior: {image}{chosen}, from {note['prior_class_from']}", file=sys.stderr)


def _check_inputs_are_not_the_output(
    config, outputs: list[Path], from_png: str | None = None
) -> None:
    """-o naming the init image, an image prompt or the --from-png image would overwrite the
    user's own picture."""
    from vqclip.generate.prompts import parse_image_prompts

    inputs = [("the init image (-ii)", config.init_image)] if config.init_image else []
    if from_png:
        inputs.append(("the image whose settings --from-png reads", from_png))
    for item in config.image_prompts:
        inputs += [("an image prompt (-ip)", str(p.value)) for p in parse_image_prompts(item)]
    for label, source in inputs:
        source_path = Path(source).expanduser()
        if not source_path.exists():
            continue
        for output in outputs:
            if output.exists() and output.resolve() == source_path.resolve():
                raise ConfigError(
                    f"output {str(output)!r} is {label}: the run would overwrite it; give "
                    "another -o"
                )


def _output(args: argparse.Namespace) -> Path:
    """-o, else the image the resumed run was writing, else output.png."""
    if args.output:
        return Path(args.output)
    if args.resume:
        from vqclip.jobs.files import OUTPUT_RECORD

        record = Path(args.resume) / OUTPUT_RECORD
        try:
            return Path(json.loads(record.read_text())["output"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a checkpoint of an older version, or no longer readable: the plain default
    return Path("output.png")


def _record_output(output: Path) -> Callable[[Path], None]:
    """An on_checkpoint callback writing `output` (absolute) beside the checkpoint."""
    text = json.dumps({"output": str(output.absolute())})

    def record(run_dir: Path) -> None:
        from vqclip.atomic import atomic_write_text
        from vqclip.jobs.files import OUTPUT_RECORD

        with contextlib.suppress(OSError):  # the checkpoint itself is what matters
            atomic_write_text(run_dir / OUTPUT_RECORD, text)

    return record


def _check_run_dir(run_dir: Path, given: bool) -> Path:
    """The checkpoint folder holds vqclip's files only: a user's folder given as --checkpoint-dir
    is refused rather than written into, and a file where OUTPUT.run/ should go moves the
    checkpoint to the rescue folder (said now, not lost at Ctrl-C)."""
    from vqclip.jobs.files import RUN_FILES
    from vqclip.output import rescue_dir

    flag = "--checkpoint-dir" if given else "the checkpoint folder"
    if run_dir.exists() and not run_dir.is_dir():
        if given:
            raise ConfigError(f"{flag} {str(run_dir)!r} is a file; give a folder")
        moved = rescue_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{run_dir.name}"
        print(
            f"note: {run_dir} is a file, so this run's checkpoint goes to {moved}",
            file=sys.stderr,
        )
        return moved
    if run_dir.is_dir():
        # vqclip's file names are vqclip's only beside a checkpoint vqclip wrote: a user's own
        # config.json in a folder of theirs is not overwritten
        ours = _holds_run_state(run_dir)
        names = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
        foreign = sorted(name for name in names if not (ours and name in RUN_FILES))
        if foreign:
            raise ConfigError(
                f"{flag} {str(run_dir)!r} holds files that are not a vqclip checkpoint "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give an empty "
                "or new folder"
            )
    return run_dir


def _holds_run_state(folder: Path) -> bool:
    """Whether `folder` holds a run checkpoint that vqclip wrote (its header, not its name)."""
    from vqclip.generate.checkpoint import MAGIC, STATE_FILE

    try:
        with open(folder / STATE_FILE, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def _output_lock(output: Path) -> Iterator[None]:
    """Two runs writing the same output would share its checkpoint folder and the last one
    would silently win: the second is refused while the first runs."""
    from vqclip.atomic import LockHeld, hold_lock

    lock = output.with_name(f".{output.name}.lock")
    try:
        handle = hold_lock(lock)
    except LockHeld:
        raise ConfigError(
            f"another vqclip run is writing {str(output)!r}; wait for it, or give another -o"
        )
    try:
        yield
    finally:
        if handle is not None:
            with contextlib.suppress(OSError):
                lock.unlink()
            handle.close()


class _StoppedBeforeStart(Exception):
    pass


def run_generate(args: argparse.Namespace) -> int:
    from vqclip.cli.options import given_options as given_job_options
    from vqclip.jobs import JobFiles, JobOptions, ModelCache, execute_job, numbered
    from vqclip.jobs.files import RUN_SUFFIX
    from vqclip.jobs.status import EXIT_CODES, FAILED, STOPPED
    from vqclip.output import check_writable

    for note in nerdyrodent.translate(args):
        print(f"note: {note}", file=sys.stderr)
    zoom = nerdyrodent.zoom_command(args, [*args.prompt, *getattr(args, "prompts", ())])
    if zoom is not None:
        from vqclip.cli import main

        print(f"note: -zvid makes a zoom video; running {nerdyrodent.shell_line(zoom)}")
        return main(zoom, models=getattr(args, "models", None))
    options = JobOptions(**given_job_options(args, JobOptions))
    config, state = _settings(args)
    _check_weights(config, args.model)
    output = check_writable(_output(args))
    _check_inputs_are_not_the_output(config, numbered(output, config.batch_size), args.from_png)
    given_dir = args.checkpoint_dir or args.resume
    run_dir = _check_run_dir(Path(given_dir or output.with_suffix(RUN_SUFFIX)), bool(given_dir))
    files = JobFiles.around(output, run_dir)
    if not given_dir:
        files = dataclasses.replace(files, keep_run=False)
    models = getattr(args, "models", None) or ModelCache()
    started = time.perf_counter()
    bar = None

    with _output_lock(output), stop_requests(starting=True) as stop:

        def on_start(run) -> None:
            nonlocal bar
            from tqdm import tqdm

            if stop.signal is not None:
                raise _StoppedBeforeStart
            stop.starting = False
            stop.finishing = run.step_index >= run.config.iterations  # a finished run resumed
            _announce(run)
            bar = tqdm(
                total=run.config.iterations,
                initial=run.step_index,
                disable=args.no_progress,
                unit="it",
                dynamic_ncols=True,
            )

        def on_step(step, run) -> None:
            bar.update(1)
            if step.index % 10 == 0 or step.index == run.config.iterations:
                bar.set_postfix(loss=f"{step.total.mean().item():.4f}")
            if step.index == run.config.iterations:
                stop.finishing = True

        try:
            result = execute_job(
                config,
                files,
                options=options,
                models=models,
                state=state,
                on_start=on_start,
                on_step=on_step,
                should_stop=lambda: stop.requested,
                on_checkpoint=_record_output(output),
            )
        except _StoppedBeforeStart:
            print("stopped before the first step", file=sys.stderr)
            return stop.exit_code
        finally:
            if bar is not None:
                bar.close()
    for warning in result.warnings:
        _warn(warning)
    if result.status == STOPPED:
        return _report_stop(result, files, output, stop)
    for where, why in result.rescued:
        print(f"vqclip: error: {why}; the image was saved to {where}", file=sys.stderr)
    written = ", ".join(map(str, result.images))
    if result.status == FAILED:
        print(f"vqclip: error: {result.error} (last good image: {written})", file=sys.stderr)
        return EXIT_CODES[FAILED]
    width, height = result.size or result.config.size
    print(
        f"wrote {written} ({width}x{height}, {result.steps} steps, seed {result.config.seed}, "
        f"{time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    if result.error:
        _warn(result.error)
    return 1 if result.rescued else EXIT_CODES[result.status]


def _report_stop(result, files, output: Path, stop: StopRequest) -> int:
    """A stopped run: how to resume it, or where its current image went when its checkpoint
    could not be written."""
    import shlex

    code = stop.exit_code if stop.signal is not None else 130
    if files.has_checkpoint() and not result.warnings:
        command = ["vqclip", "generate", "--resume", str(files.run_dir), "-o", str(output)]
        print(
            f"stopped at step {result.steps}; resume with: {shlex.join(command)}",
            file=sys.stderr,
        )
    elif result.steps == 0 and not result.rescued:  # stopped while it was starting
        print("stopped before the first step; nothing to keep", file=sys.stderr)
    else:
        kept = ", ".join(str(where) for where, _ in result.rescued)
        where = f"; the image so far was saved to {kept}" if kept else ""
        print(
            f"stopped at step {result.steps}; no checkpoint could be written{where}",
            file=sys.stderr,
        )
    return code
