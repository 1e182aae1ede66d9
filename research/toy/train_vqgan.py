"""Training the toy VQGAN: the taming architecture (vqclip.vqgan.VQGAN), a small config.

The codebook is trained l2-normalised with cosine lookup (as in ViT-VQGAN, Yu et al. 2021,
https://arxiv.org/abs/2110.04627), started by spherical k-means on encoder outputs after a
short autoencoder warm-up, with unused codes reset to fresh encoder outputs. The loss is
L1 + MSE + an L1 on image gradients (edges stay sharp without a GAN or LPIPS), plus the usual
codebook and commitment terms. No judge anywhere.

The shipped codebook holds unit vectors, so the library's squared-L2 lookup, argmin(||e||^2 -
2 z.e), is argmax(z.e): the same cosine lookup, whatever the norm of z. Generation therefore
needs no quantiser option, and the decoder sees exactly the unit vectors it was trained on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vqclip.devices import cpu_has_fast_bf16
from vqclip.toy.world import render_rejects, sample_images
from vqclip.vqgan import VQGAN, VQGANConfig

TOY_VQGAN = VQGANConfig(
    ch=32,
    out_ch=3,
    ch_mult=(1, 1, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    dropout=0.0,
    in_channels=3,
    resolution=64,
    z_channels=32,
    embed_dim=16,
    n_embed=512,
)
REJECT_SHARE = 0.2  # the decoder must also draw what generation passes through


def autocast_bf16(device: str | torch.device) -> bool:
    """Whether bfloat16 autocast pays on `device`: on CUDA, and on CPUs with native bf16. Without
    it a CPU emulates bf16, and small convolutions under autocast ran 13x slower than fp32 (toy
    VQGAN forward + backward, one AVX-512 EPYC thread without AVX512-BF16)."""
    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and cpu_has_fast_bf16())


def cosine_quantize(
    z: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(straight-through unit codes (B, D, h, w), indices (B*h*w,), codebook+commit loss)."""
    b, d, h, w = z.shape
    zn = F.normalize(z, dim=1)
    en = F.normalize(codebook, dim=1)  # (n, D)
    flat = zn.permute(0, 2, 3, 1).reshape(-1, d)  # (BHW, D)
    idx = (flat.detach() @ en.detach().t()).argmax(1)
    e = en[idx].view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, h, w)
    vq_loss = F.mse_loss(e, zn.detach()) + 0.25 * F.mse_loss(zn, e.detach())
    return zn + (e - zn).detach(), idx, vq_loss


def edge_weights(x: torch.Tensor, strength: float, window: int = 5) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, H, W) with mean 1 over the batch: 1 + `strength` within
    window // 2 pixels of an edge of the target `x` (a colour step of 0.2 or more in [-1, 1]
    units counts in full, smaller steps in proportion)."""
    step_x = F.pad(x.diff(dim=-1).abs().sum(1, keepdim=True), (0, 1, 0, 0))
    step_y = F.pad(x.diff(dim=-2).abs().sum(1, keepdim=True), (0, 0, 0, 1))
    near = F.max_pool2d(((step_x + step_y) / 0.2).clamp(max=1), window, 1, window // 2)
    w = 1 + strength * near
    return w / w.mean()


def reconstruction_loss(
    x_hat: torch.Tensor, x: torch.Tensor, edge_weight: float = 0.0
) -> torch.Tensor:
    """L1 + MSE + L1 of the horizontal and vertical image gradients. With `edge_weight`,
    every term is weighted by `edge_weights(x, edge_weight)`: a small object's outline is a few
    percent of the pixels, so plain means let the decoder blur it almost for free."""
    if not edge_weight:  # the plain means, as the `vqgan` part trains with
        grad = F.l1_loss(x_hat.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(
            x_hat.diff(dim=-2), x.diff(dim=-2)
        )
        return F.l1_loss(x_hat, x) + F.mse_loss(x_hat, x) + grad
    w = edge_weights(x, edge_weight)
    d = x_hat - x
    grad_x = (x_hat.diff(dim=-1) - x.diff(dim=-1)).abs() * w[..., :, 1:]
    grad_y = (x_hat.diff(dim=-2) - x.diff(dim=-2)).abs() * w[..., 1:, :]
    return (d.abs() * w).mean() + (d * d * w).mean() + grad_x.mean() + grad_y.mean()


def spherical_kmeans(x: torch.Tensor, k: int, g: torch.Generator, iters: int = 15) -> torch.Tensor:
    """k unit centroids of unit vectors x (N, D); empty clusters take random points."""
    centres = x[torch.randperm(len(x), generator=g)[:k].to(x.device)].clone()
    for _ in range(iters):
        assign = (x @ centres.t()).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        sums[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=g).to(x.device)]
        centres = F.normalize(sums, dim=1)
    return centres


def _batch(n: int, g: torch.Generator, crop: int | None = None) -> torch.Tensor:
    """Training images in [-1, 1]; with `crop`, one random crop window for the whole batch."""
    n_rej = round(n * REJECT_SHARE)
    clean, _ = sample_images(n - n_rej, g)
    rejects, _ = render_rejects(n_rej, g)
    x = torch.cat([clean, rejects]) * 2 - 1
    if crop:
        # Multiples of the downsample factor, so the latent grid stays aligned with the image.
        f = TOY_VQGAN.downsample_factor
        x0, y0 = (torch.randint((x.shape[-1] - crop) // f + 1, (2,), generator=g) * f).tolist()
        x = x[:, :, y0 : y0 + crop, x0 : x0 + crop]
    return x.contiguous()


def train_vqgan(
    *,
    steps: int = 1500,
    batch: int = 32,
    seed: int = 0,
    lr: float = 2e-3,
    warmup: int = 100,
    crop: int | None = 32,
    full_share: float = 0.25,
    config: VQGANConfig = TOY_VQGAN,
    bf16: bool | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> VQGAN:
    """Train the toy VQGAN from scratch; returns it on the CPU in eval mode, codebook unit-norm.

    The first (1 - full_share) of the steps see `crop`-pixel crops (the network is convolutional,
    and a 32 px crop costs a quarter of a full image); the rest see whole 64 px images, so the
    normalisation statistics and the attention over the latent grid settle at the real size.
    `bf16` runs the forward pass under bfloat16 autocast; None (the default) turns it on only
    where it is fast (`autocast_bf16`).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    bf16 = autocast_bf16(device) if bf16 is None else bf16
    model = VQGAN(config).to(device)
    codebook = model.quantize.embedding.weight
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 50) * 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    usage = torch.zeros(config.n_embed, device=device)
    full_from = round(steps * (1 - full_share))
    bar = tqdm(range(steps), desc="vqgan", disable=not progress, mininterval=2)
    model.train()
    for step in bar:
        x = _batch(batch, g, crop if step < full_from else None).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            z = model.encode(x).float()
        if step < warmup:  # autoencoder warm-up, so k-means sees meaningful features
            zq, vq_loss = F.normalize(z, dim=1), z.new_zeros(())
        else:
            if step == warmup:
                with torch.no_grad():
                    feats = torch.cat(
                        [model.encode(_batch(batch, g, crop).to(device)) for _ in range(4)]
                    )
                    feats = F.normalize(feats, dim=1).permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                    codebook.copy_(spherical_kmeans(feats, config.n_embed, g))
            zq, idx, vq_loss = cosine_quantize(z, codebook)
            usage += torch.bincount(idx, minlength=config.n_embed)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            x_hat = model.decode(zq).float()
        rec = reconstruction_loss(x_hat, x)
        loss = rec + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step > warmup and step % 50 == 0:
            _reset_dead_codes(codebook, usage, z, g)
            usage.zero_()
        bar.set_postfix(rec=f"{rec.item():.4f}", refresh=False)
    with torch.no_grad():
        codebook.copy_(F.normalize(codebook, dim=1))
    return model.cpu().eval().requires_grad_(False)


@torch.no_grad()
def _reset_dead_codes(
    codebook: torch.Tensor, usage: torch.Tensor, z: torch.Tensor, g: torch.Generator
) -> None:
    """Codes nobody picked since the last reset move onto random current encoder outputs."""
    dead = (usage == 0).nonzero().squeeze(1)
    if not len(dead):
        return
    feats = F.normalize(z.detach(), dim=1).permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    pick = torch.randint(len(feats), (len(dead),), generator=g).to(z.device)
    jitter = 0.01 * torch.randn(len(dead), z.shape[1], generator=g).to(z.device)
    codebook[dead] = feats[pick] + jitter


@torch.no_grad()
def reconstruct(model: VQGAN, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """decode(quantise(encode(x))) in [0, 1] through the library's own quantiser."""
    out = [model(chunk * 2 - 1).add(1).div(2).clamp(0, 1) for chunk in images.split(batch)]
    return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) of [0, 1] image batches."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def _patch_discriminator(ch: int = 32) -> nn.Module:
    """A small PatchGAN (taming's NLayerDiscriminator shape, GroupNorm): 64 px -> 14x14 logits."""

    def block(i: int, o: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 4, stride, 1), nn.GroupNorm(8, o), nn.LeakyReLU(0.2)]

    return nn.Sequential(
        nn.Conv2d(3, ch, 4, 2, 1),
        nn.LeakyReLU(0.2),
        *block(ch, 2 * ch, 2),
        *block(2 * ch, 4 * ch, 1),
        nn.Conv2d(4 * ch, 1, 4, 1, 1),
    )


def sharpen_decoder(
    model: VQGAN,
    *,
    steps: int = 300,
    batch: int = 32,
    seed: int = 0,
    lr: float = 2e-4,
    gan_weight: float = 0.5,
    edge_weight: float = 8.0,
    device: str = "cpu",
    progress: bool = True,
) -> VQGAN:
    """Fine-tune the decoder (and post_quant_conv) of a trained VQGAN against a patch
    discriminator, the encoder and codebook frozen: the pixel losses average an uncertain edge
    into a blur, the hinge GAN loss prefers one sharp edge. The GAN term is weighted as in
    taming: gan_weight x ||grad rec|| / ||grad gan|| at the decoder's last layer; `edge_weight`
    weights the pixel losses toward the targets' edges (`reconstruction_loss`). Whole 64 px
    images, fp32. Returns the model on the CPU in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model.float().to(device).train().requires_grad_(False)
    tuned = [*model.decoder.parameters(), *model.post_quant_conv.parameters()]
    for p in tuned:
        p.requires_grad_(True)
    disc = _patch_discriminator().to(device)
    opt_g = torch.optim.Adam(tuned, lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    last = model.decoder.conv_out.weight
    bar = tqdm(range(steps), desc="sharpen", disable=not progress, mininterval=2)
    for _ in bar:
        x = _batch(batch, g).to(device)
        with torch.no_grad():
            z_q, _ = model.quantize(model.encode(x))
        x_hat = model.decode(z_q)
        rec = reconstruction_loss(x_hat, x, edge_weight)
        disc.requires_grad_(False)  # the generator's step needs no gradients of the critic
        gan = -disc(x_hat).mean()
        (g_rec,) = torch.autograd.grad(rec, last, retain_graph=True)
        (g_gan,) = torch.autograd.grad(gan, last, retain_graph=True)
        weight = (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(max=1e4).detach() * gan_weight
        opt_g.zero_grad(set_to_none=True)
        (rec + weight * gan).backward()
        opt_g.step()
        disc.requires_grad_(True)
        d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(x_hat.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        bar.set_postfix(rec=f"{rec.item():.4f}", d=f"{d_loss.item():.3f}", refresh=False)
    return model.cpu().eval().requires_grad_(False)
