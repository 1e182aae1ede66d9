"""Image and video output: PNGs that carry their settings (written atomically), mp4 videos."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from vqclip.atomic import atomic_write_bytes
from vqclip.errors import ConfigError, VQClipError
from vqclip.validation import why_not_a_file

METADATA_KEY = "vqclip"
# The text chunk the Stable Diffusion web UIs write and image browsers and galleries read.
PARAMETERS_KEY = "parameters"
_SAMPLERS = {  # vqclip's optimiser names -> torch's class names
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "adamax": "Adamax",
    "radam": "RAdam",
    "rmsprop": "RMSprop",
    "sgd": "SGD",
}


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_PROBE_BYTES = 256 * 1024  # about one image: a folder that takes this will likely take the image


def image_format(path: str | os.PathLike) -> str:
    """The format an output path asks for by its suffix; ConfigError for others."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ConfigError(
            f"output {str(path)!r}: vqclip writes .png or .jpg/.jpeg images; "
            f"give a name such as {Path(path).stem or 'output'}.png"
        )
    return IMAGE_FORMATS[suffix]


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before a long run, not after it, when the output cannot be written: a bad suffix, a
    folder or device in its place, or a folder that refuses a test write (full, read-only)."""
    path = Path(path)
    image_format(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and path.is_dir():
        raise ConfigError(f"output {str(path)!r} is a directory; give a file name such as out.png")
    if path.exists() and not path.is_file():
        raise ConfigError(f"output {str(path)!r} is not a regular file (a device or pipe?)")
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"cannot write the output {str(path)!r}: {str(parent)!r} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent) as probe:
            probe.write(bytes(_PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise ConfigError(f"cannot write to the output folder {str(parent)!r}: {e.strerror}")
    return path


def encode_image(image: torch.Tensor, fmt: str, metadata: dict[str, Any] | None = None) -> bytes:
    """A (3, H, W) image in [0, 1] as PNG or JPEG bytes, `metadata` as JSON in a text chunk
    (PNG) or the comment (JPEG). A PNG also gets the `parameters` text other tools read
    (`parameters_text`)."""
    text = None if metadata is None else json.dumps(metadata, sort_keys=True)
    buffer = io.BytesIO()
    picture = Image.fromarray(to_uint8(image))
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        if text is not None:
            info.add_itxt(METADATA_KEY, text)
        parameters = parameters_text(metadata or {})
        if parameters is not None:
            info.add_itxt(PARAMETERS_KEY, parameters)
        picture.save(buffer, format="PNG", pnginfo=info)
    else:
        extra = {} if text is None else {"comment": (METADATA_KEY + ":" + text).encode()}
        picture.save(buffer, format="JPEG", quality=95, **extra)
    return buffer.getvalue()


def parameters_text(metadata: dict[str, Any]) -> str | None:
    """vqclip's settings in the AUTOMATIC1111 form, for the tools that read only that:

        a lighthouse at dusk
        Negative prompt: fog
        Steps: 200, Sampler: Adam, Seed: 7, Size: 256x256, Model: vqgan_... + clip_...

    The image's prompts of positive weight make the prompt, those of negative weight the
    negative prompt (a weight other than 1 is kept as "text:weight"); the optimiser stands
    for the sampler. None without a config (vqclip's own JSON is the complete record)."""
    from vqclip.generate.prompts import parse_story

    config = metadata.get("config")
    if not isinstance(config, dict):
        return None
    prompts = config.get("prompts") or [""]
    index = metadata.get("image_index", 0)
    prompt = prompts[index] if len(prompts) > 1 and index < len(prompts) else prompts[0]
    positive, negative = [], []  # per story part
    for specs in parse_story(prompt).parts:
        sides: tuple[list[str], list[str]] = ([], [])
        for spec in specs:
            weight = abs(spec.weight)
            shown = spec.value if weight == 1 else f"{spec.value}:{weight:g}"
            sides[spec.weight < 0].append(shown)
        positive.append(" | ".join(sides[0]))
        negative += [" | ".join(sides[1])] if sides[1] else []
    width, height = metadata.get("size") or config.get("size") or (0, 0)
    optimiser = str(config.get("optimiser", ""))
    fields = {
        "Steps": metadata.get("step", config.get("iterations")),
        "Sampler": _SAMPLERS.get(optimiser, optimiser),
        "Seed": config.get("seed"),
        "Size": f"{width}x{height}",
        "Model": " + ".join([str(config.get("vqgan")), *map(str, config.get("clip", []))]),
        "Version": f"vqclip {metadata.get('vqclip_version', '')}".strip(),
    }
    line = ", ".join(f"{key}: {_parameter(value)}" for key, value in fields.items())
    lines = [" ^ ".join(positive)]
    if negative:
        lines.append("Negative prompt: " + " ^ ".join(negative))
    return "\n".join([*lines, line])


def _parameter(value: Any) -> str:
    """A value of the `Key: value, ...` line; quoted as the web UI does when it holds a comma
    or a colon, which its readers would split on."""
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"') else text


def save_image(
    image: torch.Tensor, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write a (3, H, W) image in [0, 1] atomically, as PNG or JPEG by the path's suffix, with
    `metadata` (the run's settings) inside."""
    path = Path(path)
    atomic_write_bytes(path, encode_image(image, image_format(path), metadata))
    return path


def rescue_dir() -> Path:
    return Path(tempfile.gettempdir()) / "vqclip-rescued"


def save_image_or_rescue(
    image: torch.Tensor, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> tuple[Path, str | None]:
    """`save_image`, and when `path` cannot be written (a full disk, a vanished folder), the
    same image in `rescue_dir()` instead: (where it went, why not at `path` or None)."""
    path = Path(path)
    try:
        return save_image(image, path, metadata), None
    except OSError as e:
        why = f"{e.strerror or e}"
    fallback = rescue_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{path.name}"
    return save_image(image, fallback, metadata), why


def read_image_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The settings a vqclip image carries; a clear error for other files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} {why_not_a_file(path)}")
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                text = img.text.get(METADATA_KEY)  # type: ignore[attr-defined]
            else:
                comment = img.info.get("comment", b"")
                prefix = (METADATA_KEY + ":").encode()
                text = comment[len(prefix) :].decode() if comment.startswith(prefix) else None
    except (OSError, AttributeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{str(path)!r} is not an image vqclip can read: {e}")
    if text is None:
        raise ConfigError(f"{str(path)!r} carries no vqclip settings (was it made by vqclip?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{str(path)!r}: its vqclip settings are not valid JSON ({e})")
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ConfigError(f"{str(path)!r}: its vqclip settings have no 'config' object")
    return data


def video_missing() -> str | None:
    """Why a video cannot be written here (imageio-ffmpeg, the optional `video` extra, is not
    installed), or None."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return "needs imageio-ffmpeg: pip install 'vqclip[video]' (or imageio-ffmpeg)"
    return None


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
        try:
            os.replace(self._tmp, self.path)
        except OSError:
            self._tmp.unlink(missing_ok=True)  # no half-named leftover beside the user's files
            raise
        return self.path
