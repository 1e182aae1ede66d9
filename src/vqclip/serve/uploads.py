"""Uploaded images (init images, image prompts): checked, re-encoded, stored by content.

An upload is read with a size cap, opened by Pillow with a pixel cap (no decompression bombs),
and stored as a fresh PNG named by its hash: nothing of the client's file name or bytes reaches
the disk as such, and the same image uploaded twice is one file.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from vqclip.atomic import atomic_write_bytes
from vqclip.errors import ConfigError

_NAME = re.compile(r"[0-9a-f]{32}\.png")
_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def is_upload_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


@dataclass(frozen=True)
class Upload:
    name: str
    width: int
    height: int

    @property
    def ref(self) -> str:
        """How a job request names it (init_image, image_prompts)."""
        return f"uploads/{self.name}"


def store_upload(data: bytes, folder: Path, max_pixels: int) -> Upload:
    """Check that `data` is an image of at most `max_pixels` and keep it as PNG in `folder`."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ConfigError("the upload is empty; send an image file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in FORMATS:
                raise ConfigError(f"upload: a {img.format} image; send one of {', '.join(FORMATS)}")
            width, height = img.size
            if width * height > max_pixels:
                raise ConfigError(
                    f"upload: {width}x{height} is more than {max_pixels} pixels; send a smaller "
                    "image"
                )
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise ConfigError(
            f"upload: not an image that can be read; send one of {', '.join(FORMATS)}"
        ) from None
    except Image.DecompressionBombError:
        raise ConfigError(f"upload: more than {max_pixels} pixels; send a smaller image") from None
    except (OSError, ValueError, SyntaxError) as e:
        # Pillow's messages may hold reprs of its objects ("<_io.BytesIO object at 0x...>").
        detail = _REPR.sub("the image", str(e))
        raise ConfigError(f"upload: a broken or truncated image ({detail})") from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    png = buffer.getvalue()
    name = hashlib.sha256(png).hexdigest()[:32] + ".png"
    path = folder / name
    if not path.is_file():
        atomic_write_bytes(path, png)
    return Upload(name, width, height)
