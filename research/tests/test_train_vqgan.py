"""Training the toy VQGAN: cosine codebook, edge-weighted losses, the decoder's GAN sharpening."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from research.toy.train_vqgan import (
    TOY_VQGAN,
    cosine_quantize,
    edge_weights,
    psnr,
    reconstruct,
    reconstruction_loss,
    sharpen_decoder,
    train_vqgan,
)
from vqclip.toy.world import sample_images
from vqclip.vqgan import VQGAN, load_vqgan, save_taming
from vqclip.vqgan.quantize import nearest_code


def test_unit_codebook_makes_the_library_lookup_a_cosine_lookup():
    g = torch.Generator().manual_seed(1)
    codebook = F.normalize(torch.randn(64, 16, generator=g), dim=1)
    z = torch.randn(2, 16, 4, 4, generator=g) * torch.rand(2, 1, 4, 4, generator=g) * 10
    _, idx, _ = cosine_quantize(z, codebook)
    assert torch.equal(nearest_code(z, codebook).flatten(), idx)


def test_vqgan_saved_in_fp16_taming_format_loads_and_reconstructs(tmp_path):
    torch.manual_seed(0)
    model = VQGAN(TOY_VQGAN).eval()
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(F.normalize(model.codebook, dim=1))
    save_taming(model.half(), tmp_path / "m.ckpt", tmp_path / "m.yaml")
    loaded = load_vqgan(tmp_path / "m.ckpt", tmp_path / "m.yaml")
    images, _ = sample_images(2, torch.Generator().manual_seed(0))
    rec = reconstruct(loaded, images)
    assert rec.shape == images.shape and loaded.codebook.dtype == torch.float32
    assert psnr(images, images) > 90 and psnr(rec, images) < 40


def test_train_vqgan_is_seeded_and_leaves_a_unit_codebook(small_vqgan_config):
    args = dict(steps=3, batch=4, warmup=1, config=small_vqgan_config, bf16=False, progress=False)
    plain = train_vqgan(seed=0, **args)
    again = train_vqgan(seed=0, **args)
    other = train_vqgan(seed=1, **args)
    assert not plain.training and not any(p.requires_grad for p in plain.parameters())
    norms = plain.codebook.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    w = "decoder.conv_out.weight"
    assert torch.equal(plain.state_dict()[w], again.state_dict()[w])
    assert not torch.equal(plain.state_dict()[w], other.state_dict()[w])


def test_edge_weighted_reconstruction_loss_counts_errors_at_outlines_more():
    x = -torch.ones(2, 3, 32, 32)
    x[:, 0, 8:24, 8:24] = 1.0  # a red square on black: its outline is the only edge
    w = edge_weights(x, 8.0)
    assert w.shape == (2, 1, 32, 32) and torch.isclose(w.mean(), torch.tensor(1.0))
    assert w[0, 0, 8, 16] > 4 * w[0, 0, 0, 0]  # on the outline vs a far corner
    at_edge, far = x.clone(), x.clone()
    at_edge[:, :, 7:9, 10:14] += 0.3  # the same error: 2x4 pixels at the outline...
    far[:, :, 1:3, 1:5] += 0.3  # ...or in the background, away from it
    # Unweighted, both errors cost the same; edge-weighted, the one at the outline costs more.
    assert torch.isclose(reconstruction_loss(at_edge, x), reconstruction_loss(far, x), rtol=1e-5)
    assert reconstruction_loss(at_edge, x, 8.0) > 2 * reconstruction_loss(far, x, 8.0)
    # Weight 0 is the plain loss exactly (the main VQGAN training uses it).
    assert torch.equal(reconstruction_loss(far, x, 0.0), reconstruction_loss(far, x))


def test_sharpen_tunes_only_the_decoder_and_uses_the_discriminator(small_vqgan_config):
    def fresh() -> VQGAN:
        torch.manual_seed(0)
        return VQGAN(small_vqgan_config)

    before = fresh().state_dict()
    plain = sharpen_decoder(fresh(), steps=2, batch=4, gan_weight=0.0, progress=False)
    sharp = sharpen_decoder(fresh(), steps=2, batch=4, gan_weight=0.5, progress=False)
    assert not sharp.training and not any(p.requires_grad for p in sharp.parameters())
    for name, value in sharp.state_dict().items():
        tuned = name.startswith(("decoder.", "post_quant_conv."))
        if not tuned:  # encoder, quant_conv and the codebook stay as they were
            assert torch.equal(value, before[name]), name
    assert not torch.equal(sharp.decoder.conv_out.weight, before["decoder.conv_out.weight"])
    # The GAN term changes what the decoder learns.
    assert not torch.equal(sharp.decoder.conv_out.weight, plain.decoder.conv_out.weight)
