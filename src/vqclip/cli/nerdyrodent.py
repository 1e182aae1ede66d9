"""nerdyrodent/VQGAN-CLIP's `generate.py` flags, so its users' command lines run as they are.

One table of their spellings of our options (`FLAGS`, `VALUES`), the flags of theirs that have
no option here (`add_flags`), and `translate`, which turns what was parsed into vqclip's terms
and says, one line each, where the meaning differs. A zoom video (`-zvid`) becomes the
equivalent `vqclip animate` command (`zoom_command`).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from vqclip.errors import ConfigError

# Field -> their flags for it that are not ours (their other flags are spelt as ours).
FLAGS: dict[str, tuple[str, ...]] = {
    "image_prompts": ("--image_prompts",),
    "noise_prompt_seeds": ("--noise_prompt_seeds",),
    "noise_prompt_weights": ("--noise_prompt_weights",),
    "change_prompt_every": ("--change_prompt_every",),
    "vqgan": ("-ckpt", "--vqgan_checkpoint"),
    "vqgan_config": ("-conf", "--vqgan_config"),
    "clip": ("-m", "--clip_model"),
    "device": ("-cd", "--cuda_device"),
    "cutn": ("--num_cuts",),
    "cut_pow": ("--cut_power",),
    "cut_method": ("--cut_method",),
    "init": ("--init_noise",),
    "init_image": ("--init_image",),
    "init_weight": ("--init_weight",),
    "lr": ("--learning_rate",),
    "save_every": ("--save_every",),
    "video": ("-vid",),
}

# Field -> {their choice: ours, or None where vqclip has no counterpart}.
VALUES: dict[str, dict[str, str | None]] = {
    # Their "original", "updated", "nrupdated" and "updatedpooling" all cut random crops of
    # random size (Crowson's); "latest", their default, never crops: every cutout is a pooled
    # copy of the whole image.
    "cut_method": {
        "original": "crowson",
        "updated": "crowson",
        "nrupdated": "crowson",
        "updatedpooling": "crowson",
        "latest": "whole",
    },
    "optimiser": {"diffgrad": None, "adamp": None},
}

_MISSING_OPTIMISER = (
    "-opt {name}: vqclip has no {name}; torch has none, and the torch-optimizer package that "
    "had it is no longer maintained. Use -opt adam (what {name} builds on) or -opt radam "
    "(rectified Adam, from torch)"
)

GROUP = (
    "nerdyrodent/VQGAN-CLIP flags (accepted, translated to vqclip's; docs/nerdyrodent.md has the "
    "table)"
)


def _flag_bool(value: str) -> bool:
    """`-d` is a switch, but their scripts write `-d True`."""
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if value.lower() not in words:
        raise argparse.ArgumentTypeError(
            f"-d takes no value, or true/false (got {value!r}); put prompts before the flags"
        )
    return words[value.lower()]


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Their flags that have no option here: the zoom video, cudnn's determinism, the video's
    length and frame interpolation, styling a folder of video frames."""
    g = parser.add_argument_group(GROUP)
    s = argparse.SUPPRESS
    g.add_argument(
        "-d",
        "--deterministic",
        dest="nr_deterministic",
        nargs="?",
        const=True,
        type=_flag_bool,
        default=s,
        metavar="TRUE",
        help="ignored: a seed fixes the image (bit for bit on a CPU)",
    )
    g.add_argument(
        "-vl",
        "--video_length",
        dest="nr_video_length",
        type=float,
        default=s,
        metavar="SECONDS",
        help="with --video: about this long at 30 fps (sets --frame-every)",
    )
    for flags, dest in (
        (("-ofps", "--output_video_fps"), "nr_output_video_fps"),
        (("-ifps", "--input_video_fps"), "nr_input_video_fps"),
    ):
        g.add_argument(
            *flags,
            dest=dest,
            type=float,
            default=s,
            metavar="FPS",
            help="ignored: no interpolation",
        )
    g.add_argument(
        "-zvid",
        "--zoom_video",
        dest="nr_zoom_video",
        action="store_true",
        default=s,
        help="a zoom video: runs the equivalent `vqclip animate` (printed first)",
    )
    for flags, dest, kind, help_text in (
        (("-zs", "--zoom_start"), "nr_zoom_start", int, "-zvid: zoom from this step"),
        (("-zse", "--zoom_save_every"), "nr_zoom_save_every", int, "-zvid: steps per frame"),
        (("-zsc", "--zoom_scale"), "nr_zoom_scale", float, "-zvid: animate's --zoom"),
        (("-zsx", "--zoom_shift_x"), "nr_zoom_shift_x", int, "-zvid: pixels right per frame"),
        (("-zsy", "--zoom_shift_y"), "nr_zoom_shift_y", int, "-zvid: pixels down per frame"),
    ):
        metavar = "SCALE" if kind is float else "N"
        g.add_argument(*flags, dest=dest, type=kind, default=s, metavar=metavar, help=help_text)
    g.add_argument(
        "-vsd",
        "--video_style_dir",
        dest="nr_video_style_dir",
        default=s,
        metavar="DIR",
        help="refused, with the `vqclip batch` equivalent",
    )


def translate(args: argparse.Namespace) -> list[str]:
    """Turn their values in `args` into vqclip's, in place; one note per difference a user
    should know of. ConfigError where vqclip has no counterpart, naming what to use."""
    notes = []
    given = vars(args)
    method = given.get("cut_method")
    if method in VALUES["cut_method"]:
        ours = VALUES["cut_method"][method]
        args.cut_method = ours
        what = "pooled copies of the whole image" if ours == "whole" else "random crops"
        notes.append(f"-cutm {method} is nerdyrodent's; vqclip's closest is -cutm {ours} ({what})")
    if given.get("optimiser") in VALUES["optimiser"]:
        name = {"diffgrad": "DiffGrad", "adamp": "AdamP"}[args.optimiser]
        raise ConfigError(_MISSING_OPTIMISER.format(name=name))
    if "nr_video_style_dir" in given:
        raise ConfigError(
            "-vsd (style every frame of a folder) has no flag here; vqclip batch does it: one "
            'JSON line per frame, e.g. {"prompt": "...", "init_image": "frames/0001.png", '
            '"seed": 1}, then vqclip batch frames.jsonl -o styled/'
        )
    note = _registry_checkpoint(args)
    if note:
        notes.append(note)
    if given.get("nr_deterministic"):
        notes.append(
            "-d is not needed: a seed fixes the image, bit for bit on a CPU (README, Generate)"
        )
    if "nr_output_video_fps" in given or "nr_input_video_fps" in given:
        notes.append(
            "-ofps/-ifps ignored: vqclip does not interpolate frames; --video writes OUTPUT.mp4 "
            "at 30 fps (more frames: --frame-every N)"
        )
    if "nr_video_length" in given and not given.get("nr_zoom_video"):
        notes.append(_video_length(args))
    return notes


def _registry_checkpoint(args: argparse.Namespace) -> str | None:
    """Their scripts name the files their download script fills (checkpoints/NAME.ckpt and
    .yaml); when those are not there and NAME is a registry model, vqclip's copy is used."""
    from vqclip.weights.registry import find_spec

    path = Path(getattr(args, "vqgan", "") or "")
    if path.suffix != ".ckpt" or path.exists():
        return None
    spec = find_spec(path.stem)
    if spec is None or spec.kind != "vqgan":
        return None
    config = getattr(args, "vqgan_config", None)
    if config and Path(config).exists():
        return None
    args.vqgan, args.vqgan_config = spec.name, None
    return f"{path} is not here; using the registry's {spec.name} (vqclip models path {spec.name})"


def _video_length(args: argparse.Namespace) -> str:
    seconds = args.nr_video_length
    if not getattr(args, "video", False):
        return "-vl ignored: it sets the length of --video (-vid), which was not asked for"
    if "frame_every" in vars(args):
        return "-vl ignored: --frame-every was given and sets the video's frames"
    iterations = getattr(args, "iterations", 500)
    args.frame_every = max(1, round(iterations / max(1.0, seconds * 30)))
    return f"-vl {seconds:g}: a frame every {args.frame_every} steps (--frame-every), at 30 fps"


def zoom_command(args: argparse.Namespace, prompts: list[str]) -> list[str] | None:
    """The `vqclip animate` arguments of their `-zvid` run, or None without `-zvid`.

    Their loop saves a frame every `-zse` steps and, from step `-zs` on, zooms the image by
    `-zsc` (and shifts it by `-zsx`/`-zsy` pixels) after each: animate's first frame runs the
    steps before the first zoom, each later frame `-zse` steps, so the step count is theirs.
    Their `-cpe` counts steps; animate's counts frames. With --from-png the image's settings
    are animate's base (its steps and story schedule converted the same way); --resume and
    --checkpoint-dir are refused, before any work: an animation keeps its own checkpoints."""
    given = vars(args)
    if not given.get("nr_zoom_video"):
        return None
    folder = Path(given.get("output") or "output.png").with_suffix("")
    _check_zoom_flags(given, folder)
    stored: dict = {}
    if given.get("from_png"):
        from vqclip.output import read_image_metadata

        stored = read_image_metadata(given["from_png"])["config"]
    every = given.get("nr_zoom_save_every", 10)
    first = max(every, given.get("nr_zoom_start", 0))
    iterations = given.get("iterations", stored.get("iterations", 500))
    frames = max(1, 1 + (iterations - first) // every)
    fps = min(60, max(10, round(frames / given.get("nr_video_length", 10))))
    command = ["animate", *prompts, "-o", str(folder), "-i", str(first)]
    command += ["--steps-per-frame", str(every), "--frames", str(frames)]
    command += ["--zoom", f"{given.get('nr_zoom_scale', 0.99):g}", "--fps", str(fps)]
    shift = (given.get("nr_zoom_shift_x", 0), given.get("nr_zoom_shift_y", 0))
    if any(shift):
        command += ["--shift", *map(str, shift)]
    change_every = given.get("change_prompt_every", stored.get("change_prompt_every"))
    if change_every:
        command += ["-cpe", str(max(1, round(change_every / every)))]
    starts = stored.get("prompt_starts") if "prompt_starts" not in given else None
    if starts:  # the image's story schedule counts steps: the frames they fall in
        frames_of = [0 if step < first else 1 + (step - first) // every for step in starts]
        command += ["--prompt-starts", *map(str, frames_of)]
    if given.get("from_png"):
        command += ["--from-png", str(given["from_png"])]
    return command + _other_options(args)


def _check_zoom_flags(given: dict, folder: Path) -> None:
    """-zvid runs `vqclip animate`, which keeps its checkpoints in its own folder and goes on
    from them when the same command runs again: a generate checkpoint folder means nothing
    to it."""
    for flag, name in (("--resume", "resume"), ("--checkpoint-dir", "checkpoint_dir")):
        if given.get(name):
            raise ConfigError(
                f"-zvid with {flag}: a zoom video keeps its frames and checkpoints in its own "
                f"folder ({folder}/) and goes on from them when the same -zvid command runs "
                f"again; drop {flag} {given[name]}"
            )


_ANIMATE_DROPS = {"prompts", "iterations", "change_prompt_every"}


def _other_options(args: argparse.Namespace) -> list[str]:
    """The generate options the user gave, as `vqclip animate` flags (it declares the same)."""
    from vqclip.cli.options import given_options
    from vqclip.generate.config import declaration

    argv: list[str] = []
    if getattr(args, "model", None):
        argv += ["--model", args.model]
    if getattr(args, "no_progress", False):
        argv.append("--no-progress")
    if vars(args).get("video") is False:  # --no-video: the frames alone
        argv.append("--no-video")
    for name, value in given_options(args).items():
        if name in _ANIMATE_DROPS:
            continue
        meta = declaration(name)
        flag = meta["flags"][-1]
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif meta["cli"].get("action") == "append":
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, tuple | list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def shell_line(command: list[str]) -> str:
    return shlex.join(["vqclip", *command])
