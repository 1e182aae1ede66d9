"""MaskGIT's transformer (valeoai's reproduction) as a masked prior: the reference's names and
shapes at the real sizes (meta device), the forward against a direct float64 rendering of the
reference's model, the token arithmetic, the sampler's rules and the checkpoint loader (tiny
random models)."""

import itertools
import math

import pytest
import torch
from torch import nn

from vqclip.clip.model import SelfAttention
from vqclip.errors import CheckpointError, ConfigError
from vqclip.prior.maskgit import (
    DEFAULTS_256,
    DEFAULTS_512,
    MaskGITConfig,
    MaskGITPrior,
    MaskGITTransformer,
    arccos_schedule,
    guidance_weight,
    guided_logits,
    gumbel_confidence,
    load_maskgit,
    maskgit_draw,
    sampler_defaults,
    tempered_probs,
)
from vqclip.statedict import load_strict

TINY = MaskGITConfig(codebook_size=8, n_classes=3, hidden=32, depth=2, heads=4, mlp=48, grid=4)


# --- the reference's model, written out from its facts with torch's own modules (float64) ---


class RefPreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, torch's default
        self.fn = fn


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=0.1, batch_first=True, bias=True)

    def forward(self, x):
        return self.mha(x, x, x)[0]


class RefFeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, dim)
        )

    def forward(self, x):
        return self.net(x)


class RefEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    RefPreNorm(c.hidden, RefAttention(c.hidden, c.heads)),
                    RefPreNorm(c.hidden, RefFeedForward(c.hidden, c.mlp)),
                ]
            )
            for _ in range(c.depth)
        )


class RefMaskTransformer(nn.Module):
    """The reference's MaskTransformer: class token after the grid, tied output plus a bias."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        vocab = c.codebook_size + 1 + c.n_classes + 1
        n = c.grid * c.grid
        self.tok_emb = nn.Embedding(vocab, c.hidden)
        self.pos_emb = nn.Parameter(torch.randn(1, n + 1, c.hidden) * 0.02)
        self.first_layer = nn.Sequential(
            nn.LayerNorm(c.hidden, eps=1e-12),
            nn.Dropout(0.1),
            nn.Linear(c.hidden, c.hidden),
            nn.GELU(),
            nn.LayerNorm(c.hidden, eps=1e-12),
            nn.Dropout(0.1),
            nn.Linear(c.hidden, c.hidden),
        )
        self.transformer = RefEncoder(c)
        self.last_layer = nn.Sequential(
            nn.LayerNorm(c.hidden, eps=1e-12),
            nn.Dropout(0.1),
            nn.Linear(c.hidden, c.hidden),
            nn.GELU(),
            nn.LayerNorm(c.hidden, eps=1e-12),
        )
        self.bias = nn.Parameter(torch.randn(n + 1, vocab) * 0.1)

    def forward(self, grid, y, drop):
        c = self.c
        b = grid.shape[0]
        cls = y.view(b, 1) + c.codebook_size + 1
        cls[drop] = c.codebook_size + 1 + c.n_classes
        x = self.tok_emb(torch.cat([grid.view(b, -1), cls], -1)) + self.pos_emb
        x = self.first_layer(x)
        for attn, ff in self.transformer.layers:
            x = attn.fn(attn.norm(x)) + x
            x = ff.fn(ff.norm(x)) + x
        x = self.last_layer(x)
        logit = x @ self.tok_emb.weight.T + self.bias
        n = c.grid * c.grid
        return logit[:, :n, : c.codebook_size + 1]


def randomize_norms(module: nn.Module, gen: torch.Generator) -> None:
    """LayerNorm weights and biases away from 1 and 0, so a misplaced norm shows."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))


def tiny_reference(seed: int = 0) -> RefMaskTransformer:
    torch.manual_seed(seed)
    ref = RefMaskTransformer(TINY).double().eval()
    randomize_norms(ref, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # small embeddings, so the first LayerNorm's eps (1e-12) matters
        ref.tok_emb.weight.mul_(0.01)
    return ref


def tiny_prior(
    seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[MaskGITPrior, RefMaskTransformer]:
    ref = tiny_reference(seed)
    model = MaskGITTransformer(TINY).to(dtype)
    load_strict(model, ref.state_dict(), source="tiny")
    model.eval().requires_grad_(False)
    return MaskGITPrior(model, "tiny.pth"), ref


# --- names and shapes at the real sizes ---

REFERENCE_SHAPES_256 = {
    "tok_emb.weight": (2026, 768),
    "pos_emb": (1, 257, 768),
    "bias": (257, 2026),
    "first_layer.0.weight": (768,),
    "first_layer.2.weight": (768, 768),
    "first_layer.4.bias": (768,),
    "first_layer.6.weight": (768, 768),
    "transformer.layers.0.0.norm.weight": (768,),
    "transformer.layers.0.0.fn.mha.in_proj_weight": (2304, 768),
    "transformer.layers.0.0.fn.mha.in_proj_bias": (2304,),
    "transformer.layers.0.0.fn.mha.out_proj.weight": (768, 768),
    "transformer.layers.23.1.norm.bias": (768,),
    "transformer.layers.23.1.fn.net.0.weight": (3072, 768),
    "transformer.layers.23.1.fn.net.3.weight": (768, 3072),
    "transformer.layers.23.1.fn.net.3.bias": (768,),
    "last_layer.0.weight": (768,),
    "last_layer.2.weight": (768, 768),
    "last_layer.4.bias": (768,),
}
PARAMS_256 = 174_160_874  # from the shapes; the reproduction's README: 174.161M


def meta_state_dict(grid: int = 16) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(MaskGITTransformer(MaskGITConfig(grid=grid)).state_dict())


def test_real_size_names_shapes_and_parameter_count():
    sd = meta_state_dict()
    for key, shape in REFERENCE_SHAPES_256.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("transformer.layers.24.") for k in sd)
    # per block: 2 norms x 2, in_proj x 2, out_proj x 2, MLP x 4; first_layer 8 (2 norms, 2
    # linears); last_layer 6 (2 norms, 1 linear); tok_emb, pos_emb, bias
    assert len(sd) == 24 * 12 + 8 + 6 + 3
    total = sum(t.numel() for t in sd.values())
    assert total == PARAMS_256
    assert abs(total - 174.2e6) / 174.2e6 < 0.005
    assert MaskGITConfig.from_state_dict(sd) == MaskGITConfig()
    sd512 = meta_state_dict(32)
    assert tuple(sd512["pos_emb"].shape) == (1, 1025, 768)
    assert tuple(sd512["bias"].shape) == (1025, 2026)
    assert MaskGITConfig.from_state_dict(sd512) == MaskGITConfig(grid=32)


def test_real_size_loads_strictly_and_names_stray_and_missing_keys():
    sd = meta_state_dict()
    with torch.device("meta"):
        model = MaskGITTransformer(MaskGITConfig())
    load_strict(model, sd, source="MaskGIT_ImageNet_256.pth")
    del sd["transformer.layers.5.0.fn.mha.in_proj_bias"]
    sd["transformer.layers.5.0.fn.mha.bias_k"] = torch.empty(1, 1, 768, device="meta")
    with pytest.raises(CheckpointError) as err:
        load_strict(model, sd, source="MaskGIT_ImageNet_256.pth")
    msg = str(err.value)
    assert "transformer.layers.5.0.fn.mha.in_proj_bias" in msg
    assert "transformer.layers.5.0.fn.mha.bias_k" in msg


def test_token_arithmetic_of_the_real_model():
    c = MaskGITConfig()
    assert c.vocab == 2026
    assert c.mask_token == 1024
    assert c.class_token(0) == 1025 and c.class_token(999) == 2024
    assert c.no_class_token == 2025


# --- the tiny model against the reference's ---


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).double().eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    ours = SelfAttention(32, 4, causal=False).double()
    ours.load_state_dict(mha.state_dict(), strict=True)
    x = torch.randn(3, 17, 32, dtype=torch.float64)
    expected = mha(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(ours(x), expected, rtol=1e-10, atol=1e-10)


def test_prior_logits_match_the_reference_forward():
    prior, ref = tiny_prior(dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, TINY.codebook_size + 1, (4, 16), generator=gen)
    tokens[0, :5] = TINY.codebook_size  # some mask tokens
    labels = [0, 2, None, 1]
    got = prior.logits(tokens, labels)
    y = torch.tensor([0, 2, 0, 1])
    drop = torch.tensor([False, False, True, False])
    with torch.no_grad():
        want = ref(tokens.view(4, 4, 4), y, drop)
    assert got.shape == (4, 16, TINY.codebook_size) and got.dtype == torch.float32
    torch.testing.assert_close(got, want[..., : TINY.codebook_size].float())
    # the transformer itself in float64, tightly: a wrong LayerNorm eps shows here
    seq = torch.cat([tokens, torch.tensor([[9], [11], [12], [10]])], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(prior.transformer(seq), want, rtol=1e-10, atol=1e-10)
    full = prior._forward(tokens, labels)
    assert full.shape == (4, 16, TINY.codebook_size + 1)
    torch.testing.assert_close(full, want.float())
    # the class matters: another class gives other logits
    assert not torch.allclose(got[1], prior.logits(tokens[1:2], [0])[0])


def test_class_token_goes_after_the_grid():
    prior, _ = tiny_prior()
    seen = []
    handle = prior.transformer.tok_emb.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].clone())
    )
    tokens = torch.arange(16).remainder(9).view(1, 16).repeat(3, 1)
    prior.logits(tokens, [2, None, 0])
    handle.remove()
    (seq,) = seen
    assert seq.shape == (3, 17)
    assert torch.equal(seq[:, :16], tokens)
    # codes 0..7, mask 8, classes 9..11, "no class" 12
    assert seq[:, 16].tolist() == [8 + 1 + 2, 8 + 1 + 3, 8 + 1 + 0]


def test_prior_interface_and_bad_inputs():
    prior, _ = tiny_prior()
    assert prior.n_codes == 8 and prior.mask_token == 8
    assert prior.window == (4, 4) and prior.n_classes == 3
    assert prior.class_names == () and prior.ignored == () and prior.source == "tiny.pth"
    ok = torch.zeros(2, 16, dtype=torch.long)
    for labels in ([0, 3], [-1, 0], [0, True], [0, "a"]):
        with pytest.raises(ConfigError, match="class"):
            prior.logits(ok, labels)
    with pytest.raises(ConfigError, match="4x4"):
        prior.logits(torch.zeros(2, 15, dtype=torch.long), [0, 0])
    with pytest.raises(ConfigError, match="mask token"):
        prior.logits(torch.full((2, 16), 9), [0, 0])
    with pytest.raises(ConfigError, match="labels"):
        prior.logits(ok, [0])


def test_bf16_logits_come_back_float32_and_close():
    prior, _ = tiny_prior()
    tokens = torch.randint(0, 9, (2, 16), generator=torch.Generator().manual_seed(0))
    want = prior.logits(tokens, [1, None])
    assert prior.to(dtype=torch.bfloat16) is prior
    assert prior.transformer.tok_emb.weight.dtype == torch.bfloat16
    got = prior.logits(tokens, [1, None])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0.1, atol=0.15)


# --- the sampler's rules ---


def reference_schedule(n: int, steps: int) -> list[int]:
    """The reproduction's adap_sche("arccos"), in plain floats."""
    r = [1 - i / (steps - 1) for i in range(steps)]
    share = [math.acos(x) / (math.pi / 2) for x in r]
    counts = [float(round(s / sum(share) * n)) for s in share]
    counts = [1.0 if t == 0 else t for t in counts]
    counts[-1] += n - sum(counts)
    return [int(t) for t in counts]


def test_arccos_schedule():
    assert arccos_schedule(256, 8) == reference_schedule(256, 8) == [1, 18, 26, 32, 38, 43, 48, 50]
    assert arccos_schedule(1024, 15) == reference_schedule(1024, 15)
    for n, steps in ((256, 8), (1024, 15), (256, 12), (16, 4)):
        counts = arccos_schedule(n, steps)
        assert len(counts) == steps and sum(counts) == n
        assert all(a <= b for a, b in itertools.pairwise(counts)), counts
        assert counts[0] == 1  # arccos(1) = 0, raised to one token
    # the last-count correction can make it fall (the reference's own arithmetic)
    assert arccos_schedule(256, 18)[-1] < arccos_schedule(256, 18)[-2]
    with pytest.raises(ConfigError):
        arccos_schedule(256, 1)


def test_guidance_and_temperature():
    assert guidance_weight(3.0, 0, 8) == 0.0
    assert guidance_weight(3.0, 7, 8) == 3.0
    assert guidance_weight(3.0, 1, 8) == pytest.approx(3 / 7)
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    torch.testing.assert_close(guided_logits(cond, uncond, 2.0), torch.tensor([2.0, 0.0]))
    logits = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(tempered_probs(logits, 2.0), torch.softmax(logits * 2.0, -1))
    for settings, want in ((DEFAULTS_256, (8, 4.5, 3.0)), (DEFAULTS_512, (15, 7.0, 2.8))):
        assert (settings.steps, settings.gumbel_temperature, settings.guidance) == want
    assert DEFAULTS_256.softmax_temperature == DEFAULTS_512.softmax_temperature == 1.0
    assert sampler_defaults((16, 16)) is DEFAULTS_256
    assert sampler_defaults((32, 32)) is DEFAULTS_512


def test_gumbel_confidence_noise_falls_linearly_to_none():
    log_p = torch.full((200_000,), -2.0)
    for step, scale in ((0, 4.5), (2, 4.5 * (1 - 2 / 7))):
        conf = gumbel_confidence(log_p, step, 8, 4.5, torch.Generator().manual_seed(step))
        noise = (conf - log_p.double()) / scale
        assert conf.dtype == torch.float64
        assert noise.mean().item() == pytest.approx(0.5772, abs=0.01)  # Euler's gamma
        assert noise.std().item() == pytest.approx(math.pi / math.sqrt(6), abs=0.01)
    last = gumbel_confidence(log_p, 7, 8, 4.5, torch.Generator().manual_seed(0))
    assert torch.equal(last, log_p.double())
    a = gumbel_confidence(log_p[:10], 0, 8, 4.5, torch.Generator().manual_seed(5))
    b = gumbel_confidence(log_p[:10], 0, 8, 4.5, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def never_draws_mask(prior: MaskGITPrior) -> MaskGITPrior:
    with torch.no_grad():
        prior.transformer.bias[:, prior.mask_token] = -1e4
    return prior


def test_maskgit_draw_is_seeded_and_reveals_the_schedule():
    prior = never_draws_mask(tiny_prior()[0])
    seen = []
    handle = prior.transformer.tok_emb.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].clone())
    )
    a = maskgit_draw(prior, 3, [0, 2, None], torch.Generator().manual_seed(0), steps=4)
    handle.remove()
    assert a.shape == (3, 4, 4) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() < prior.n_codes
    schedule = arccos_schedule(16, 4)
    assert len(seen) == 4
    for step, seq in enumerate(seen):
        # guided: the batch twice, the second half with the "no class" token
        assert seq.shape == (6, 17)
        assert seq[:, 16].tolist() == [9, 11, 12, 12, 12, 12]
        assert torch.equal(seq[:3, :16], seq[3:, :16])
        still_masked = (seq[:3, :16] == prior.mask_token).sum(1)
        assert still_masked.tolist() == [16 - sum(schedule[:step])] * 3
    again = maskgit_draw(prior, 3, [0, 2, None], torch.Generator().manual_seed(0), steps=4)
    assert torch.equal(a, again)
    other = maskgit_draw(prior, 3, [0, 2, None], torch.Generator().manual_seed(1), steps=4)
    assert not torch.equal(a, other)


def test_maskgit_draw_without_guidance_runs_one_pass_and_refuses_bad_schedules():
    prior = never_draws_mask(tiny_prior()[0])
    seen = []
    handle = prior.transformer.tok_emb.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].shape)
    )
    maskgit_draw(prior, 2, [1, 1], torch.Generator().manual_seed(0), guidance=0.0)
    handle.remove()
    assert seen == [(2, 17)] * DEFAULTS_256.steps
    with pytest.raises(ConfigError, match="too many steps"):
        maskgit_draw(prior, 1, [0], torch.Generator(), steps=12)  # [..., 2, 0] for 16 tokens
    with pytest.raises(ConfigError, match="labels"):
        maskgit_draw(prior, 2, [0], torch.Generator())


def test_maskgit_draw_softmaxes_over_the_mask_token_and_clamps_as_theirs():
    # A prior that all but always predicts the mask token: theirs draws it, reveals it and at
    # the end clamps what is left to the last code.
    prior = tiny_prior()[0]
    with torch.no_grad():
        prior.transformer.bias[:, prior.mask_token] = 1e4
    codes = maskgit_draw(prior, 2, [0, None], torch.Generator().manual_seed(0), steps=4)
    assert torch.equal(codes, torch.full((2, 4, 4), prior.n_codes - 1))


# --- the checkpoint file ---


def test_load_checkpoint_reports_ignored_keys(tmp_path):
    prior, ref = tiny_prior()
    sd = {k: v.float() for k, v in ref.state_dict().items()}
    path = tmp_path / "MaskGIT_tiny.pth"
    optim = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4}]}
    torch.save(
        {"iter": 7, "global_epoch": 1, "model_state_dict": sd, "optimizer_state_dict": optim},
        path,
    )
    loaded = load_maskgit(path, heads=4, n_classes=3)
    assert loaded.source == "MaskGIT_tiny.pth"
    assert loaded.ignored == ("iter", "global_epoch", "optimizer_state_dict")
    assert loaded.transformer.config == TINY
    assert not loaded.transformer.training
    params = list(loaded.transformer.parameters())
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in params)
    for k, v in loaded.transformer.state_dict().items():
        assert torch.equal(v, sd[k]), k
    tokens = torch.randint(0, 9, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        loaded.logits(tokens, [0, None]), prior.logits(tokens, [0, None]), rtol=1e-5, atol=1e-5
    )
    # a DDP wrapper's names carry "module."
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    assert load_maskgit(path, heads=4, n_classes=3).ignored == ()


def test_load_checkpoint_errors(tmp_path):
    path = tmp_path / "not_maskgit.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"no 'model_state_dict'.*state_dict, epoch"):
        load_maskgit(path)
    sd = dict(tiny_reference().float().state_dict())
    sd["extra.weight"] = torch.zeros(2)
    del sd["last_layer.2.bias"]
    torch.save({"model_state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_maskgit(path, heads=4, n_classes=3)
    assert "extra.weight" in str(err.value) and "last_layer.2.bias" in str(err.value)
    with pytest.raises(CheckpointError, match="too few"):
        load_maskgit(path, heads=4)  # 13 rows cannot hold 1000 classes
