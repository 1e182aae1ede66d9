"""The names of the files a job writes, in one place: every door that writes a job folder, an
animation folder or the run checkpoint folder, and every reader of them (the web service's
routes and worker, the CLI's resume), takes them from here.

A job folder (the web service, batches, each animation frame's work) is a `JobFiles.folder`:

    image.png (image_0.png, image_1.png ... for a batch)   the result, settings in its metadata
    settings.json     the resolved config (seed, size and threads filled in)
    run/              the run checkpoint, kept for "continue" (its files: `RUN_FILES`)
    frames/           00010.png ...: the first image every `frame_every` steps
    video.mp4         the frames as a video, when asked for
    steps/            00010.png ...: every image every `save_every` steps
    preview.png       the web service's latest preview, while the job runs
    thumb.jpg         the web service's thumbnail of the result

`JobFiles.around(OUT.png)` is the files around a user's output path (`vqclip generate -o
OUT.png`): OUT.png (OUT_0.png ... for a batch), OUT.run/ (frames inside), OUT.mp4, OUT_steps/.

An animation folder (`vqclip.jobs.animation`):

    animation.json     the settings (config and animation) the frames are made with
    frames/00000.png   one PNG per finished frame, its settings inside
    work/00007/        the job folder of the frame under way, with init.png: the frame before,
                       transformed, that it starts from
    video.mp4          the frames as a video, once all are done
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vqclip.generate.checkpoint import CONFIG_FILE, STATE_FILE

IMAGE_FILE = "image.png"
SETTINGS_FILE = "settings.json"
RUN_DIR = "run"
FRAMES_DIR = "frames"
VIDEO_FILE = "video.mp4"
STEPS_DIR = "steps"
RUN_SUFFIX = ".run"  # OUT.png's run checkpoint folder: OUT.run/
PREVIEW_FILE = "preview.png"
THUMB_FILE = "thumb.jpg"

# The image a checkpointed `vqclip generate` run writes, recorded beside its checkpoint, so
# `--resume DIR` alone finishes it (after a kill -9 there is no printed resume command).
OUTPUT_RECORD = "output.json"
# Everything vqclip writes into a run checkpoint folder: anything else there is a user's.
RUN_FILES = frozenset({STATE_FILE, CONFIG_FILE, FRAMES_DIR, OUTPUT_RECORD})

ANIMATION_SETTINGS_FILE = "animation.json"
WORK_DIR = "work"
FRAME_INIT_FILE = "init.png"


def numbered(path: Path, batch: int) -> list[Path]:
    """The files of a batch of `batch` images written under the name `path`."""
    if batch == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(batch)]


def image_names(batch: int, suffix: str = ".png") -> list[str]:
    """The result files of a job folder's batch of `batch` images."""
    return [p.name for p in numbered(Path(IMAGE_FILE).with_suffix(suffix), batch)]


@dataclass(frozen=True)
class JobFiles:
    """Where one job's files go. `rescue`: an image that cannot be written where it belongs
    (a full disk) goes to the rescue folder instead of being lost; `keep_run`: the run
    checkpoint stays after the job is done (for "continue"), else it is removed."""

    image: Path  # the image's name; a batch numbers it (numbered)
    run_dir: Path
    frames_dir: Path
    video: Path
    steps_dir: Path
    settings: Path | None
    rescue: bool = False
    keep_run: bool = True

    @classmethod
    def folder(cls, folder: str | Path) -> JobFiles:
        folder = Path(folder)
        return cls(
            image=folder / IMAGE_FILE,
            run_dir=folder / RUN_DIR,
            frames_dir=folder / FRAMES_DIR,
            video=folder / VIDEO_FILE,
            steps_dir=folder / STEPS_DIR,
            settings=folder / SETTINGS_FILE,
        )

    @classmethod
    def around(cls, output: str | Path, run_dir: str | Path | None = None) -> JobFiles:
        """The files of `vqclip generate -o OUTPUT`: the checkpoint in OUTPUT.run/ (or
        `run_dir`, kept then), removed once the image is written."""
        output = Path(output)
        run = Path(run_dir) if run_dir is not None else output.with_suffix(RUN_SUFFIX)
        return cls(
            image=output,
            run_dir=run,
            frames_dir=run / FRAMES_DIR,
            video=output.with_suffix(".mp4"),
            steps_dir=output.with_name(f"{output.stem}_{STEPS_DIR}"),
            settings=None,
            rescue=True,
            keep_run=run_dir is not None,
        )

    def images(self, batch: int) -> list[Path]:
        return numbered(self.image, batch)

    def has_checkpoint(self) -> bool:
        return (self.run_dir / STATE_FILE).is_file()
