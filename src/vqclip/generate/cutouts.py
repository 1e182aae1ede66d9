"""Cutouts: random square crops of the decoded image, resized to CLIP's input, then augmented.

Crowson's cut sizes (method.md step 5): size = floor(u^cut_pow * (max_size - min_size) + min_size)
with u ~ U(0, 1), at a random offset inside the image. All crops of a batch are resized at once,
with anti-aliasing, by two batched matrix products (see `resample_crops`).

Every random number (sizes, offsets, augmentation parameters, noise) comes from the
torch.Generator passed in, so the same generator state gives the same cutouts and restoring it
resumes a run. All of them are drawn on the images' device (from a generator there, seeded from
the one passed in when that lives elsewhere), so a step on a GPU needs no host syncs. The global
torch RNG, which the kornia augmentations sample from, is left as the caller had it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vqclip.devices import constant
from vqclip.errors import ConfigError
from vqclip.generate.augments import DEFAULT_AUGMENTS, build_augments, check_augment_codes
from vqclip.validation import is_int

METHODS = ("crowson", "whole", "overview")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's and torchvision's grayscale


@dataclass(frozen=True)
class CutoutConfig:
    """How cutouts are made. `method`:

    - "crowson": every cutout a random square crop (sizes spread by `cut_pow`).
    - "whole": every cutout the whole image (padded to a square), as nerdyrodent's "latest".
    - "overview": `overview_n` whole-image views per image (cycling plain, grayscale,
      flipped, flipped grayscale, as Disco Diffusion), the rest crowson crops.
    `overview_n` None means cutn // 4 (at least 1).
    """

    cut_size: int
    cutn: int
    cut_pow: float = 1.0
    method: str = "crowson"
    augments: tuple[str, ...] = DEFAULT_AUGMENTS
    noise_fac: float = 0.1
    overview_n: int | None = None

    def __post_init__(self) -> None:
        for name in ("cut_size", "cutn"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.cut_pow) and self.cut_pow > 0):
            raise ConfigError(f"cut_pow must be a finite number > 0, got {self.cut_pow!r}")
        if not (math.isfinite(self.noise_fac) and self.noise_fac >= 0):
            raise ConfigError(f"noise_fac must be a finite number >= 0, got {self.noise_fac!r}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.overview_n is not None and not 0 <= self.overview_n <= self.cutn:
            raise ConfigError(
                f"overview_n must be between 0 and cutn={self.cutn}, got {self.overview_n!r}"
            )
        object.__setattr__(self, "augments", check_augment_codes(self.augments))

    @property
    def n_overview(self) -> int:
        """Whole-image views per image."""
        if self.method == "whole":
            return self.cutn
        if self.method == "crowson":
            return 0
        return self.overview_n if self.overview_n is not None else max(1, self.cutn // 4)


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys cubic kernel with a = -0.5, PIL's bicubic (which CLIP's preprocessing resizes with)."""
    t = t.abs()
    near = (1.5 * t - 2.5) * t * t + 1
    far = ((-0.5 * t + 2.5) * t - 4) * t + 2
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _resize_weights(
    offset: torch.Tensor, size: torch.Tensor, cut_size: int, length: int, span: tuple[int, int]
) -> torch.Tensor:
    """(N, cut_size, length) weights taking an image axis of `length` px to each crop's output.

    Output j of a crop [offset, offset + size) is centred at offset + (j + .5) * scale; its
    weights are the cubic kernel stretched by max(scale, 1) (stretching is the anti-aliasing),
    restricted to the crop and normalised there, as F.interpolate(mode="bicubic",
    antialias=True) on the cropped slice. Crop pixels outside the image (a padded square
    view) count in the normalisation but have no column: they are black.
    """
    lo, hi = span  # pixels [lo, hi) hold every crop and the image
    pixel = torch.arange(lo, hi, dtype=offset.dtype, device=offset.device) + 0.5  # centres
    scale = size / cut_size
    out_pixel = torch.arange(cut_size, dtype=offset.dtype, device=offset.device) + 0.5
    centre = offset[:, None] + out_pixel * scale[:, None]  # (N, cut_size)
    t = (pixel[None, None, :] - centre[:, :, None]) / scale.clamp(min=1)[:, None, None]
    in_crop = (pixel >= offset[:, None]) & (pixel < (offset + size)[:, None])  # (N, P)
    # t needs the precision of `offset`; the kernel values do not, and float32 halves memory.
    w = _cubic(t.float()) * in_crop[:, None, :]  # (N, cut_size, P)
    w = w / w.sum(-1, keepdim=True)
    return w[:, :, -lo : length - lo]


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    w = constant(_LUMA, x.device, x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def _generator_on(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """`generator` itself if it lives on `device`, else one there seeded from it."""
    if generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


def resample_crops(
    images: torch.Tensor,
    boxes: torch.Tensor,
    cut_size: int,
    *,
    hflip: torch.Tensor | None = None,
    spans: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Crop and resize every box at once; returns (N, C, cut_size, cut_size).

    images (B, C, H, W); boxes (N, 3) integer (x0, y0, size), N = B * cutn, the first cutn
    boxes cut image 0 and so on. A box may reach outside the image (the whole of a non-square
    image padded to a square): that part is black. `hflip` (N,) bool mirrors those cutouts.
    `spans`, ((x_lo, x_hi), (y_lo, y_hi)): pixel ranges holding the image and every box
    (`square_spans`); None reads them from the boxes, which waits for a GPU that holds them.

    Each cutout is A_y @ image @ A_x^T with per-crop resize matrices (`_resize_weights`), the
    same filter as F.interpolate(mode="bicubic", antialias=True) on the crop: anti-aliased
    for any downscale, and on CPU 3-4x faster than a supersampled grid_sample.
    """
    B, C, H, W = images.shape
    N = boxes.shape[0]
    if N % B:
        raise ConfigError(f"got {N} boxes for {B} images; need the same number per image")
    cutn = N // B
    # float64 keeps the weights exact for large images; MPS has no float64
    dtype = torch.float32 if images.device.type == "mps" else torch.float64
    if spans is None:
        lo, hi = boxes[:, :2].amin(0), (boxes[:, :2] + boxes[:, 2:]).amax(0)
        spans = tuple((min(0, int(lo[i])), max(n, int(hi[i]))) for i, n in enumerate((W, H)))
    span_x, span_y = spans
    x0, y0, size = boxes.to(images.device, dtype).unbind(1)
    a_y = _resize_weights(y0, size, cut_size, H, span_y).to(images.dtype)  # (N, c, H)
    a_x = _resize_weights(x0, size, cut_size, W, span_x).to(images.dtype)  # (N, c, W)
    if hflip is not None:
        a_x = torch.where(hflip.to(a_x.device)[:, None, None], a_x.flip(1), a_x)
    # Rows first, all cutouts of an image in one product: (cutn * c, H) @ (H, C * W).
    rows = a_y.view(B, cutn * cut_size, H) @ images.transpose(1, 2).reshape(B, H, C * W)
    rows = rows.view(N, cut_size * C, W)  # (N, c * C, W)
    out = rows @ a_x.transpose(1, 2)  # (N, c * C, c)
    return out.view(N, cut_size, C, cut_size).transpose(1, 2)


def square_spans(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((x_lo, x_hi), (y_lo, y_hi)) holding the image and its centred square (the whole-image
    view of `MakeCutouts`): a bound on every box it draws, known without reading them."""
    side = max(height, width)
    x_off, y_off = (width - side) // 2, (height - side) // 2
    return (min(0, x_off), max(width, x_off + side)), (min(0, y_off), max(height, y_off + side))


class MakeCutouts(nn.Module):
    """Cut `cutn` augmented cutouts per image: (B, 3, H, W) in [0, 1] -> (B * cutn, 3, c, c)."""

    def __init__(self, config: CutoutConfig) -> None:
        super().__init__()
        self.config = config
        self.augs = build_augments(config.augments, config.cut_size)

    def sample_boxes(
        self, batch: int, height: int, width: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (N, 3) int64 (x0, y0, size), and hflip, gray (N,) bool, on generator's device."""
        cfg, dev = self.config, generator.device
        n_over, n_crop = cfg.n_overview, cfg.cutn - cfg.n_overview
        side = max(height, width)
        whole = torch.empty(batch, n_over, 3, dtype=torch.long, device=dev)  # filled on dev
        whole[..., 0], whole[..., 1] = (width - side) // 2, (height - side) // 2
        whole[..., 2] = side
        parts = [whole]
        if n_crop:
            max_size = min(height, width)
            min_size = min(height, width, cfg.cut_size)
            u = torch.rand(batch, n_crop, generator=generator, device=dev, dtype=torch.float64)
            size = (u**cfg.cut_pow * (max_size - min_size) + min_size).floor()
            # randint(0, side - size + 1) per crop, done as a scaled uniform to batch it
            ox, oy = torch.rand(
                2, batch, n_crop, generator=generator, device=dev, dtype=torch.float64
            )
            ox = torch.minimum((ox * (width - size + 1)).floor(), width - size)
            oy = torch.minimum((oy * (height - size + 1)).floor(), height - size)
            parts.append(torch.stack([ox, oy, size], dim=-1).long())
        boxes = torch.cat(parts, dim=1).reshape(batch * cfg.cutn, 3)  # (B * cutn, 3)
        # Disco Diffusion's overview cycle: plain, gray, flipped, flipped gray.
        view = torch.arange(cfg.cutn, device=dev).repeat(batch)
        cycled = (view < n_over) & (cfg.method == "overview")
        gray = cycled & (view % 2 == 1)
        hflip = cycled & (view % 4 >= 2)
        return boxes, hflip, gray

    def cut_with_boxes(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cutouts (B * cutn, 3, c, c) grouped by image, and their boxes (B * cutn, 3)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        cfg = self.config
        B, _, H, W = images.shape
        # Everything is drawn on the images' device: no copies from the host, no host syncs.
        gen = _generator_on(generator, images.device)
        boxes, hflip, gray = self.sample_boxes(B, H, W, gen)
        spans = square_spans(H, W)
        out = resample_crops(images, boxes, cfg.cut_size, hflip=hflip, spans=spans)
        if cfg.method == "overview" and cfg.n_overview > 1:  # else no cutout is gray
            out = torch.where(gray.to(out.device).view(-1, 1, 1, 1), _grayscale(out), out)
        if cfg.augments:
            out = self.augs(out, gen)
        if cfg.noise_fac:
            facs = torch.rand(len(out), generator=gen, device=out.device)
            facs = (facs * cfg.noise_fac).to(out.dtype).view(-1, 1, 1, 1)
            noise = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
            out = out + facs * noise
        return out, boxes

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.cut_with_boxes(images, generator)[0]
