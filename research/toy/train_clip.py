"""Training a toy CLIP guide: the vqclip.clip architecture at small widths, the real BPE tokenizer.

Contrastive training where every caption an image satisfies is a positive ("something red"
matches every red shape in the batch), so partial captions make no false negatives. The guide is
made robust for generation: it sees views like the loop's cutouts (crops that keep the layout,
affine jitter, noise, erasing) and reject-class images (clutter, several shapes, smears, ...)
whose only positives are their own captions ("clutter", "a smeared shape"), so an image the loop
paints as clutter is far from every world caption.

Colour and background alone separate most pairs in a random batch, so the guide would stop
there: clean images come in runs of siblings that differ only in shape and position, and
auxiliary attribute heads on the image embedding give the scene labels directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from research.toy.train_vqgan import autocast_bf16
from vqclip.clip import CLIP, CLIPConfig, tokenize
from vqclip.toy.eval import ZERO_SHOT_PROMPTS, guide_similarity
from vqclip.toy.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    REJECT_CAPTIONS,
    REJECT_KINDS,
    SHAPES,
    Scene,
    random_caption,
    render,
    render_rejects,
    sample_images,
    sample_scenes,
    shape_coverage,
)

# CLIP's ResNet image tower (as RN50, one block per stage, stem width 16) at 64 px: a tiny ViT
# (32 px, patch 4, width 64) learned colour, background, size and position but stayed near
# chance on shape for thousands of steps, where this ResNet reads shape ~99% after ~600
# supervised steps (research/toy-log.md). Text width 32 halves the 49,408-row token table the
# real BPE vocabulary needs, which is most of the file.
TOY_CLIP = CLIPConfig(
    embed_dim=64,
    image_size=64,
    vision_width=16,
    vision_layers=(1, 1, 1, 1),
    context_length=24,
    text_width=32,
    text_layers=3,
    text_heads=2,
    quick_gelu=False,
)
REJECT_SHARE = 0.25
# What the generation loop paints when it fools a guide: the prompt's two colours as a pattern,
# or as several shapes. The world's reject images use arbitrary colours, which a guide learns
# to refuse by colour alone; these keep a world scene's colours so only the layout differs.
HARD_NEGATIVE_CAPTIONS: dict[str, tuple[str, ...]] = {
    "pattern": ("a pattern", "a texture", "blobs of colour"),
    "same-colour several": ("several shapes", "two shapes", "many shapes"),
}
_KINDS = (*REJECT_KINDS, *HARD_NEGATIVE_CAPTIONS)  # slot value k + 1 names kind k
_N_SLOTS = len(ATTRIBUTES) + 1  # the five attributes, then the reject kind (0 = clean)


class _Tokens:
    """Tokenizer with a cache: the world has only a few thousand distinct captions."""

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, ids in zip(missing, tokenize(missing, self.context_length), strict=True):
                self.cache[t] = ids
        return torch.stack([self.cache[t] for t in texts])


def guide_views(images: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """Cutout-like views (N, 3, size, size) of (N, 3, H, W) images in [0, 1].

    A random affine crop that keeps the layout (scale 0.8-1, shift <= 0.08, rotation <= 12
    deg), then per-view noise with std ~ U(0, 0.1), brightness jitter and, for a third,
    an erased rectangle, as the loop's "Af Ji Er" augments and noise_fac do.
    """
    n = len(images)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g)

    scale, rot = u(0.8, 1.0), u(-0.21, 0.21)
    tx, ty = u(-0.08, 0.08), u(-0.08, 0.08)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(rot), -scale * torch.sin(rot)
    theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(rot), scale * torch.cos(rot)
    theta[:, 0, 2], theta[:, 1, 2] = tx * 2, ty * 2
    plain = torch.rand(n, generator=g) < 0.3  # some views are the whole image, untouched
    theta[plain] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    # Sample at the image's resolution first, then anti-alias down to the guide's input.
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    views = F.interpolate(views, size=(size, size), mode="bilinear", antialias=True)
    views = views * u(0.9, 1.1).view(-1, 1, 1, 1)
    erase = torch.rand(n, generator=g) < 0.3
    if erase.any():
        k = int(erase.sum())
        w, h = (torch.rand(2, k, generator=g) * 0.3 + 0.15) * size
        x0 = torch.rand(k, generator=g) * (size - w)
        y0 = torch.rand(k, generator=g) * (size - h)
        ar = torch.arange(size)
        mx = (ar.view(1, -1) >= x0.view(-1, 1)) & (ar.view(1, -1) < (x0 + w).view(-1, 1))
        my = (ar.view(1, -1) >= y0.view(-1, 1)) & (ar.view(1, -1) < (y0 + h).view(-1, 1))
        box = (my.unsqueeze(2) & mx.unsqueeze(1)).unsqueeze(1)  # (k, 1, size, size)
        views[erase] = views[erase].masked_fill(box, 0.0)
    noise = torch.randn(views.shape, generator=g) * u(0, 0.1).view(-1, 1, 1, 1)
    return views + noise


def render_hard_negatives(n: int, g: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """n images (n, 3, 64, 64) in a world scene's colours that are not a clean scene: a
    two-colour pattern (thresholded smooth noise) or 2-4 shapes of the one colour."""
    scenes = sample_scenes(n, g)
    fg = torch.tensor([COLOURS[s.colour] for s in scenes]).view(n, 3, 1, 1)
    bg = torch.tensor([BACKGROUNDS[s.background] for s in scenes]).view(n, 3, 1, 1)
    pattern = torch.rand(n, generator=g) < 0.5
    cells = int(torch.randint(3, 9, (), generator=g))
    noise = F.interpolate(
        torch.rand(n, 1, cells, cells, generator=g), size=(64, 64), mode="bicubic"
    )
    level = 0.35 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    cover = torch.sigmoid((noise - level) * 40)  # (n, 1, 64, 64)
    several = torch.zeros(n, 1, 64, 64)
    for _ in range(int(torch.randint(2, 5, (), generator=g))):
        shape = torch.randint(len(SHAPES), (n,), generator=g)
        cx, cy = (0.15 + 0.7 * torch.rand(2, n, generator=g)).unbind(0)
        radius = 0.07 + 0.08 * torch.rand(n, generator=g)
        angle = (torch.rand(n, generator=g) - 0.5) * 2 * math.pi
        one = shape_coverage(shape, cx, cy, radius, angle).unsqueeze(1)
        several = torch.maximum(several, one)
    cover = torch.where(pattern.view(n, 1, 1, 1), cover, several)
    names = ["pattern" if p else "same-colour several" for p in pattern.tolist()]
    images = bg * (1 - cover) + fg * cover
    return images, names


def _slots_of_scene(scene) -> list[int]:
    return [*scene.label(), 0]


def _slots_of_constraints(constraints: dict[str, str]) -> list[int]:
    return [ATTRIBUTES[k].index(constraints[k]) if k in constraints else -1 for k in ATTRIBUTES] + [
        0
    ]


def _render_items(n: int, g: torch.Generator) -> tuple[torch.Tensor, list[Scene | str]]:
    """n images (n, 3, 64, 64), a REJECT_SHARE of them rejects, and each one's Scene or kind."""
    n_rej = round(n * REJECT_SHARE)
    clean, scenes = sample_images(n - n_rej, g)
    rejects, kinds = render_rejects(n_rej, g)
    return torch.cat([clean, rejects]), [*scenes, *kinds]


def _caption_items(
    items: Sequence[Scene | str], g: torch.Generator
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """One random caption per item, and slot vectors (n, 6) for the images and the captions."""
    captions, cap_slots, img_slots = [], [], []
    for item in items:
        if isinstance(item, Scene):
            text, c = random_caption(item, g)
            captions.append(text)
            cap_slots.append(_slots_of_constraints(c))
            img_slots.append(_slots_of_scene(item))
            continue
        options = REJECT_CAPTIONS.get(item) or HARD_NEGATIVE_CAPTIONS[item]
        captions.append(options[int(torch.randint(len(options), (), generator=g))])
        k = _KINDS.index(item) + 1
        cap_slots.append([-1] * len(ATTRIBUTES) + [k])
        img_slots.append([-2] * len(ATTRIBUTES) + [k])
    return captions, torch.tensor(img_slots), torch.tensor(cap_slots)


def training_batch(
    n: int, g: torch.Generator
) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """Images (n, 3, 64, 64), one caption per image, and slot vectors (n, 6) for the images
    and the captions: a caption matches an image iff each of its slots is -1 or equal."""
    images, items = _render_items(n, g)
    return (images, *_caption_items(items, g))


def _sibling_scenes(n: int, group: int, g: torch.Generator) -> list[Scene]:
    """n scenes in runs of `group` that share colour, background and size and differ in shape
    and position (each run has distinct shapes while it can): within a run only shape and
    position tell the images apart, so colour alone cannot solve the contrastive task."""
    scenes = []
    for base in sample_scenes(-(-n // group), g):
        shapes = torch.randperm(len(SHAPES), generator=g).tolist()
        places = torch.randperm(len(POSITIONS), generator=g).tolist()
        for j in range(group):
            shape, place = SHAPES[shapes[j % len(SHAPES)]], POSITIONS[places[j % len(POSITIONS)]]
            scenes.append(replace(base, shape=shape, position=place))
    return scenes[:n]


class _Pool:
    """Pre-rendered training images, drawn from with fresh views and captions every step.

    Rendering (4x supersampled) costs as much as a training step, so it is paid once. Clean
    images come in runs of `group` siblings (see `_sibling_scenes`) and are drawn run by run."""

    def __init__(
        self,
        n: int,
        g: torch.Generator,
        group: int = 1,
        chunk: int = 256,
        hard: float = 0.0,
    ) -> None:
        self.group = group
        n_rej = round(n * REJECT_SHARE)
        n_clean = (n - n_rej) // group * group
        clean, rejects, self.scenes, self.kinds = [], [], [], []
        for start in range(0, n_clean, chunk):
            scenes = _sibling_scenes(min(chunk, n_clean - start), group, g)
            clean.append(render(scenes, g).half())  # fp16 storage halves the memory
            self.scenes += scenes
        n_hard = round(n_rej * hard)
        for start in range(0, n_rej - n_hard, chunk):
            images, kinds = render_rejects(min(chunk, n_rej - n_hard - start), g)
            rejects.append(images.half())
            self.kinds += kinds
        for start in range(0, n_hard, chunk):
            images, kinds = render_hard_negatives(min(chunk, n_hard - start), g)
            rejects.append(images.half())
            self.kinds += kinds
        self.clean, self.rejects = torch.cat(clean), torch.cat(rejects)

    def batch(
        self, n: int, g: torch.Generator
    ) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
        n_rej = round(n * REJECT_SHARE)
        runs = torch.randperm(len(self.scenes) // self.group, generator=g)[
            : -(-(n - n_rej) // self.group)
        ]
        clean = (runs.view(-1, 1) * self.group + torch.arange(self.group)).flatten()[: n - n_rej]
        rej = torch.randperm(len(self.kinds), generator=g)[:n_rej]
        images = torch.cat([self.clean[clean], self.rejects[rej]]).float()
        items = [self.scenes[i] for i in clean.tolist()] + [self.kinds[i] for i in rej.tolist()]
        return (images, *_caption_items(items, g))


def positives(img_slots: torch.Tensor, cap_slots: torch.Tensor) -> torch.Tensor:
    """(N_img, N_cap) bool: caption j describes image i."""
    c, s = cap_slots.unsqueeze(0), img_slots.unsqueeze(1)  # (1, Nc, 6), (Ni, 1, 6)
    return ((c == -1) | (c == s)).all(-1)


def _attribute_loss(scores: torch.Tensor, img_slots: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each attribute's slice of scores (N, sum of values) on the clean
    images (reject images carry -2 slots and are left out)."""
    clean = img_slots[:, 0] >= 0
    parts = scores[clean].split([len(v) for v in ATTRIBUTES.values()], dim=1)
    return sum(F.cross_entropy(p, img_slots[clean, i]) for i, p in enumerate(parts)) / len(parts)


def adversarial_views(
    model: CLIP,
    views: torch.Tensor,
    txt: torch.Tensor,
    pos: torch.Tensor,
    *,
    eps: float,
    steps: int,
    bf16: bool = False,
) -> torch.Tensor:
    """Views moved within an L2 ball of radius `eps` (per view, in [0, 1] pixel units) to raise
    the contrastive loss against the (fixed, normalised) caption embeddings `txt`: projected
    gradient ascent, `steps` normalised steps of 2.5 eps / steps (Madry et al.).

    Training on these makes a guide robust, and a robust classifier's input gradients tend to
    look like the object it names (Santurkar et al. 2019, "perceptually aligned gradients").
    With the toy guides the loop then paints one blob instead of a cluster of fragments, but not
    yet a world shape (research/toy-log.md)."""
    scale = model.logit_scale.exp().clamp(max=100).detach()
    delta = torch.zeros_like(views)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=bf16):
            emb = model.encode_image(views + delta).float()
        loss = multi_positive_loss(scale * F.normalize(emb, dim=-1) @ txt.t(), pos)
        (grad,) = torch.autograd.grad(loss, delta)
        step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + alpha * step
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * (eps / norm).clamp(max=1.0)
    return (views + delta).detach()


def multi_positive_loss(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where the target of each row is uniform over its positives."""

    def one_side(lg: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        has = p.any(1)
        target = p[has].float() / p[has].sum(1, keepdim=True)
        return -(target * F.log_softmax(lg[has], dim=1)).sum(1).mean()

    return 0.5 * (one_side(logits, pos) + one_side(logits.t(), pos.t()))


def train_clip(
    *,
    steps: int = 1500,
    batch: int = 128,
    seed: int = 0,
    lr: float = 3e-3,
    warmup: int = 60,
    pool: int = 0,
    group: int = 1,
    aux: float = 0.0,
    hard: float = 0.0,
    init: CLIP | None = None,
    adv_eps: float = 0.0,
    adv_steps: int = 3,
    config: CLIPConfig = TOY_CLIP,
    bf16: bool | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> CLIP:
    """Train one toy CLIP guide from scratch; returned on the CPU in eval mode.

    `pool` > 0 renders that many images once and draws every batch from them (fresh views and
    captions each step); 0 renders every batch anew. `hard` is the share of the pool's reject
    images that are hard negatives (`render_hard_negatives`). `init` continues from a trained
    guide (its config wins over `config`). `adv_eps` > 0 trains on adversarial views
    (`adversarial_views`, L2 radius adv_eps in pixel units, `adv_steps` steps of ascent), which
    costs adv_steps + 1 image-tower passes a step.
    `bf16` runs the towers under bfloat16 autocast; None (the default) turns it on only where
    it is fast (`autocast_bf16`)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    bf16 = autocast_bf16(device) if bf16 is None else bf16
    if init is not None:
        config = init.config
        model = CLIP(config)
        model.load_state_dict(init.state_dict())
        model = model.float().to(device).requires_grad_(True)
    else:
        model = CLIP(config).to(device)
    tokens = _Tokens(config.context_length)
    images_from = _Pool(pool, g, group, hard=hard).batch if pool > 0 else training_batch
    # Auxiliary attribute heads on the image embedding (discarded after training): the labels
    # the captions are made from, given directly, so the ViT finds position and shape sooner.
    heads = nn.Linear(config.embed_dim, sum(len(v) for v in ATTRIBUTES.values())).to(device)
    named = [*model.named_parameters(), *heads.named_parameters()]
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    model.train()
    bar = tqdm(range(steps), desc=f"clip seed {seed}", disable=not progress, mininterval=2)
    for _ in bar:
        images, captions, img_slots, cap_slots = images_from(batch, g)
        views = guide_views(images, g, config.image_size).to(device)
        pos = positives(img_slots, cap_slots).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            txt = F.normalize(model.encode_text(tokens(captions).to(device)).float(), dim=-1)
        if adv_eps > 0:
            views = adversarial_views(
                model, views, txt.detach(), pos, eps=adv_eps, steps=adv_steps, bf16=bf16
            )
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            raw = model.encode_image(views).float()
        logits = model.logit_scale.exp().clamp(max=100) * F.normalize(raw, dim=-1) @ txt.t()
        loss = multi_positive_loss(logits, pos)
        if aux > 0:
            loss = loss + aux * _attribute_loss(heads(raw), img_slots.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.cpu().eval().requires_grad_(False)


@torch.no_grad()
def zero_shot(model: CLIP, *, n: int = 1000, seed: int = 99) -> dict[str, float]:
    """Zero-shot accuracy per attribute on n fresh images (whole image, resized), and
    `reject`: the share of n reject images nearer a reject caption than any attribute prompt."""
    images, scenes = sample_images(n, torch.Generator().manual_seed(seed))
    prompts = [ZERO_SHOT_PROMPTS[k](v) for k, values in ATTRIBUTES.items() for v in values]
    sims = guide_similarity([model], images, prompts).split(
        [len(v) for v in ATTRIBUTES.values()], dim=1
    )
    acc = {}
    for (name, values), part in zip(ATTRIBUTES.items(), sims, strict=True):
        truth = torch.tensor([values.index(getattr(s, name)) for s in scenes])
        acc[name] = float((part.argmax(1) == truth).float().mean())
    rejects, _ = render_rejects(n, torch.Generator().manual_seed(seed + 1))
    reject_texts = [t for opts in REJECT_CAPTIONS.values() for t in opts]
    nearest = guide_similarity([model], rejects, prompts + reject_texts).argmax(1)
    acc["reject"] = float((nearest >= len(prompts)).float().mean())
    return acc
