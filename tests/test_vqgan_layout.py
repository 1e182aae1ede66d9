"""The decoder's channels-last convolutions (bf16 on CPU) move values, never change them."""

import pytest
import torch
from torch import nn

import vqclip.vqgan.modules as modules
from vqclip.vqgan import VQGAN, VQGANConfig
from vqclip.vqgan.layout import conv_channels_last, to_channels_last, to_nchw


@pytest.mark.parametrize("shape", [(1, 128, 16, 16), (2, 8, 32, 8), (1, 3, 5, 7), (2, 16, 8, 24)])
def test_layout_changes_keep_every_value_and_give_the_layout_asked(shape):
    x = torch.randn(shape).to(torch.bfloat16)
    cl = to_channels_last(x)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, x)
    back = to_nchw(cl)
    assert back.is_contiguous()
    assert torch.equal(back, x)


AMX = modules.nhwc_bf16_convs()
needs_amx = pytest.mark.skipif(
    not AMX, reason="oneDNN runs bf16 NCHW convolutions with its NHWC kernels only with AMX"
)


@needs_amx
def test_channels_last_conv_matches_the_plain_conv_forward_and_backward():
    dtype = torch.bfloat16
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 64, kernel_size=3, padding=1).to(dtype).requires_grad_(False)
    x = torch.randn(2, 32, 32, 32, dtype=dtype)
    grad = torch.randn(2, 64, 32, 32, dtype=dtype)

    def run(f):
        xi = x.clone().requires_grad_(True)
        y = f(xi)
        y.backward(grad)
        return y, xi.grad

    y_ref, g_ref = run(conv)
    y, g = run(lambda t: conv_channels_last(conv, t))
    assert y.is_contiguous() and g.is_contiguous()
    # Both run oneDNN's NHWC kernel: the same sums in the same order, not merely close ones.
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=0)


@needs_amx
def test_bf16_decoder_with_channels_last_convs_is_bit_identical_to_the_plain_one(monkeypatch):
    torch.manual_seed(0)
    config = VQGANConfig(
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(16,),
        z_channels=8,
        embed_dim=8,
        n_embed=16,
        resolution=64,
    )
    vqgan = VQGAN(config).to(torch.bfloat16).requires_grad_(False)
    z = torch.randn(1, 8, 32, 32, dtype=torch.bfloat16)

    def run():
        zi = z.clone().requires_grad_(True)
        out = vqgan.decode(zi)
        out.float().square().sum().backward()
        return out, zi.grad

    used = []
    monkeypatch.setattr(
        modules,
        "conv_channels_last",
        lambda layer, x: used.append(1) or conv_channels_last(layer, x),
    )
    out, grad = run()
    assert used  # the 64x64 and 32x32 maps took the channels-last path
    monkeypatch.setattr(modules, "conv_channels_last", lambda layer, x: layer(x))
    out_ref, grad_ref = run()
    assert torch.equal(out, out_ref) and torch.equal(grad, grad_ref)


def test_fp32_decoder_keeps_pytorchs_own_convolution_path(monkeypatch):
    # fp32 results are pinned by the toy tests; oneDNN's NHWC kernel would sum in another order.
    config = VQGANConfig(
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(16,),
        z_channels=8,
        embed_dim=8,
        n_embed=16,
        resolution=64,
    )
    vqgan = VQGAN(config).requires_grad_(False)
    used = []
    monkeypatch.setattr(modules, "conv_channels_last", lambda layer, x: used.append(1) or layer(x))
    vqgan.decode(torch.randn(1, 8, 32, 32))
    assert not used


def test_without_amx_the_bf16_decoder_keeps_pytorchs_own_convolution_path(monkeypatch):
    """Where oneDNN's bf16 kernels for NCHW maps are not its NHWC ones (AVX-512 without AMX),
    the channels-last path would sum in another order: the decoder does not take it."""
    config = VQGANConfig(
        ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
        embed_dim=8, n_embed=16, resolution=64,
    )  # fmt: skip
    vqgan = VQGAN(config).to(torch.bfloat16).requires_grad_(False)
    used = []
    monkeypatch.setattr(modules, "conv_channels_last", lambda layer, x: used.append(1) or layer(x))
    monkeypatch.setattr(modules, "nhwc_bf16_convs", lambda: False)
    vqgan.decode(torch.randn(1, 8, 32, 32, dtype=torch.bfloat16))
    assert not used
    monkeypatch.setattr(modules, "nhwc_bf16_convs", lambda: True)
    vqgan.decode(torch.randn(1, 8, 32, 32, dtype=torch.bfloat16))
    assert used
