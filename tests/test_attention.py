import pytest
import torch
import torch.nn.functional as F

from vqclip.attention import attention


@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_cpu_path_matches_sdpa(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g) for _ in range(3))
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.equal(attention(q, k, v, causal=causal), reference)  # fp32: SDPA itself
    low = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=causal)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), reference, atol=0.05)
    if causal:  # the first query sees only the first key
        assert torch.allclose(low[:, :, 0].float(), v[:, :, 0], atol=0.02)
