"""Image and video output: PNGs that carry their settings (written atomically), mp4 videos."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from vqclip.atomic import atomic_write_bytes
from vqclip.errors import ConfigError, VQClipError

METADATA_KEY = "vqclip"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before a long run, not after it, when the output cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and path.is_dir():
        raise ConfigError(f"output {str(path)!r} is a directory; give a file name such as out.png")
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"cannot write the output {str(path)!r}: {str(parent)!r} is not a folder")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the output folder {str(parent)!r}: {e.strerror}")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write to the output folder {str(parent)!r}: permission denied")
    return path


def save_png(
    image: torch.Tensor, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write a (3, H, W) image in [0, 1] as PNG, with `metadata` as JSON in a text chunk."""
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        info.add_itxt(METADATA_KEY, json.dumps(metadata, sort_keys=True))
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG", pnginfo=info)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_png_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The settings a vqclip PNG carries; a clear error for other files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            text = img.text.get(METADATA_KEY)  # type: ignore[attr-defined]
    except (OSError, AttributeError) as e:
        raise ConfigError(f"{str(path)!r} is not a PNG image: {e}")
    if text is None:
        raise ConfigError(f"{str(path)!r} carries no vqclip settings (was it made by vqclip?)")
    return json.loads(text)


class VideoWriter:
    """Frames to an mp4 through imageio-ffmpeg (the optional `video` extra)."""

    def __init__(self, path: str | os.PathLike, fps: int = 30) -> None:
        try:
            import imageio_ffmpeg
        except ImportError:
            raise VQClipError(
                "--video needs imageio-ffmpeg: pip install 'vqclip[video]' (or imageio-ffmpeg)"
            )
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.part.mp4")
        self._ffmpeg = imageio_ffmpeg
        self._fps = fps
        self._writer = None

    def add(self, image: torch.Tensor) -> None:
        frame = to_uint8(image)
        if self._writer is None:
            h, w = frame.shape[:2]
            self._writer = self._ffmpeg.write_frames(
                str(self._tmp), (w, h), fps=self._fps, quality=8, macro_block_size=1
            )
            self._writer.send(None)
        self._writer.send(np.ascontiguousarray(frame))

    def close(self) -> Path | None:
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)
        return self.path
