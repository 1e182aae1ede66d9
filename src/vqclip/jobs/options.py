"""What a job writes beside its image, declared once for every door (`generate`, `animate`,
`batch`, `serve`) the way `GenerateConfig` declares the run's settings: the CLI flags, the web
API's JSON schema and the checks all come from these fields.

These options change which files appear, never the image: they are not stored in its metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vqclip.errors import ConfigError
from vqclip.generate.config import option, validate_fields

GROUP = "job files"


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
    video: bool = option(
        False,
        "--video",
        help="write an mp4 of the progress (needs imageio-ffmpeg: vqclip[video])",
        group=GROUP,
    )
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

    def frames_every(self, iterations: int) -> int:
        """Steps between the progress frames the video is made of; 0 without a video."""
        if not (self.video or self.frame_every):
            return 0
        return self.frame_every or max(1, iterations // 100)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> JobOptions:
        if not isinstance(data, dict):
            raise ConfigError(f"job options must be a JSON object, got {data!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown job options {unknown}; known: {sorted(names)}")
        return cls(**data)


JOB_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(JobOptions))
