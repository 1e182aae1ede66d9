"""What a job writes beside its image, declared once for every door (`generate`, `animate`,
`batch`, `serve`) the way `GenerateConfig` declares the run's settings: the CLI flags, the web
API's JSON schema and the checks all come from these fields.

These options change which files appear, never the image: they are not stored in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vqclip import declare
from vqclip.declare import option, option_names, validate_fields
from vqclip.errors import ConfigError

GROUP = "job files"


def video_option(default: bool) -> Any:
    """`--video`, declared once for every door that writes a video: a job's mp4 of its
    progress (`JobOptions.video`: generate, batch, the web service) and an animation's of its
    frames (`Animation.video`). Only the default is the door's: off for a job, whose video is
    an extra; on for an animation, whose video is what it is made for."""
    return option(
        default,
        "--video",
        help="write an mp4: of the progress, or of an animation's frames once all are done "
        "(needs imageio-ffmpeg: vqclip[video])",
        group=GROUP,
    )


@dataclass(frozen=True)
class JobOptions:
    checkpoint_every: int = option(
        20,
        "--checkpoint-every",
        help="write the run checkpoint every N steps, so a kill loses at most N steps "
        "(0: only when stopped)",
        group=GROUP,
        low=0,
        high=10**7,
        metavar="N",
    )
    save_every: int = option(
        0,
        "-se",
        "--save-every",
        help="also write the image every N steps (generate: to OUTPUT_steps/)",
        group=GROUP,
        low=0,
        high=10**7,
        metavar="N",
    )
    video: bool = video_option(False)
    frame_every: int = option(
        0,
        "--frame-every",
        help="a video frame every N steps (0: about 100 frames in all)",
        group=GROUP,
        low=0,
        high=10**7,
        metavar="N",
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.video:  # refused before the first step, not after the last
            from vqclip.output import video_missing

            why = video_missing()
            if why:
                raise ConfigError(f"video: {why}", field="video")

    def frames_every(self, iterations: int) -> int:
        """Steps between the progress frames the video is made of; 0 without a video."""
        if not (self.video or self.frame_every):
            return 0
        return self.frame_every or max(1, iterations // 100)

    def to_dict(self) -> dict[str, Any]:
        return declare.to_mapping(self)

    @classmethod
    def from_dict(cls, data: Any) -> JobOptions:
        return declare.from_mapping(cls, data, "job options")


JOB_OPTION_NAMES = option_names(JobOptions)
