"""The token prior: taming's GPT layout, its strict safe loader, and the loop's prior loss."""

import pytest
import torch
import yaml

from vqclip.errors import CheckpointError, ConfigError
from vqclip.generate.config import GenerateConfig
from vqclip.prior.io import Condition, TokenPrior, load_prior, save_prior
from vqclip.prior.loss import PriorLoss, soft_assignment
from vqclip.prior.transformer import TokenTransformer, TransformerConfig
from vqclip.prior.windows import window_starts

TINY = TransformerConfig(vocab_size=16, block_size=17, n_layer=2, n_head=2, n_embd=8)


def tiny_gpt(config: TransformerConfig = TINY, seed: int = 0) -> TokenTransformer:
    torch.manual_seed(seed)
    model = TokenTransformer(config)
    with torch.no_grad():
        model.pos_emb.normal_()  # taming starts it at zero; random makes positions matter
    return model.eval()


def test_taming_parameter_names_and_shapes():
    sd = tiny_gpt().state_dict()
    for name in (
        "tok_emb.weight",
        "pos_emb",
        "blocks.1.ln1.weight",
        "blocks.1.ln2.bias",
        "blocks.1.attn.key.weight",
        "blocks.1.attn.query.bias",
        "blocks.1.attn.value.weight",
        "blocks.1.attn.proj.weight",
        "blocks.1.attn.mask",
        "blocks.1.mlp.0.weight",
        "blocks.1.mlp.2.bias",
        "ln_f.weight",
        "head.weight",
    ):
        assert name in sd, name
    assert "head.bias" not in sd
    assert sd["pos_emb"].shape == (1, 17, 8)
    assert sd["blocks.0.mlp.0.weight"].shape == (32, 8)
    logits = tiny_gpt()(torch.randint(16, (3, 10)))
    assert logits.shape == (3, 10, 16)


def test_changing_a_token_changes_no_earlier_logit():
    model = tiny_gpt()
    idx = torch.randint(16, (1, 12))
    changed = idx.clone()
    changed[0, 7] = (idx[0, 7] + 1) % 16
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_unmasked_prefix_sees_itself_both_ways():
    model = tiny_gpt(TransformerConfig(16, 17, 2, 2, 8, n_unmasked=4))
    idx = torch.randint(16, (1, 10))
    changed = idx.clone()
    changed[0, 3] = (idx[0, 3] + 1) % 16
    a, b = model(idx), model(changed)
    assert not torch.allclose(a[:, 0], b[:, 0])  # position 0 sees position 3 in the prefix
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 16
    assert torch.allclose(model(idx)[:, :6], model(changed)[:, :6])


def test_too_long_a_sequence_is_a_clear_error():
    with pytest.raises(ConfigError, match="block_size"):
        tiny_gpt()(torch.zeros(1, 18, dtype=torch.long))


def _taming_files(tmp_path, model, cond_stage, extra=None):
    sd = {f"transformer.{k}": v for k, v in model.state_dict().items()}
    sd["first_stage_model.encoder.conv_in.weight"] = torch.zeros(2)  # ignored on purpose
    sd["cond_stage_model.embedding.weight"] = torch.zeros(2)
    sd["permuter.forward_shuffle_idx"] = torch.arange(3)
    sd.update(extra or {})
    torch.save({"state_dict": sd, "global_step": 7}, tmp_path / "last.ckpt")
    c = model.config
    params = {
        "transformer_config": {
            "target": "taming.modules.transformer.mingpt.GPT",
            "params": {
                "vocab_size": c.vocab_size,
                "block_size": c.block_size,
                "n_layer": c.n_layer,
                "n_head": c.n_head,
                "n_embd": c.n_embd,
            },
        },
        "cond_stage_config": cond_stage,
    }
    doc = {
        "model": {"target": "taming.models.cond_transformer.Net2NetTransformer", "params": params}
    }
    (tmp_path / "last.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "last.ckpt", tmp_path / "last.yaml"


def test_loads_a_taming_checkpoint_strictly(tmp_path):
    model = tiny_gpt()
    ckpt, cfg = _taming_files(tmp_path, model, "__is_unconditional__")
    prior = load_prior(ckpt, cfg)
    assert prior.transformer.config == TINY
    assert prior.condition == Condition("sos", sos_token=0)
    idx = torch.randint(16, (2, 9))
    assert torch.equal(prior.transformer(idx), model(idx))


def test_class_and_coord_conditions_from_the_yaml(tmp_path):
    model = tiny_gpt()
    label = {"target": "taming.modules.util.Labelator", "params": {"n_classes": 10}}
    prior = load_prior(*_taming_files(tmp_path, model, label))
    assert prior.condition.kind == "class"
    assert prior.prefix(2, (4, 4), 3).tolist() == [[3], [3]]
    with pytest.raises(ConfigError, match="prior_class"):
        prior.prefix(1, (4, 4), None)
    with pytest.raises(ConfigError, match="must be in"):
        prior.prefix(1, (4, 4), 10)
    coord = {"target": "taming.modules.misc.coord.CoordStage", "params": {"n_embed": 16}}
    prior = load_prior(*_taming_files(tmp_path, model, coord))
    tokens = prior.prefix(1, (2, 2), None)[0].tolist()
    assert len(tokens) == 4 and tokens == sorted(tokens) and tokens[0] < tokens[-1]
    seg = {"target": "taming.models.vqgan.VQModel", "params": {}}
    with pytest.raises(ConfigError, match="segmentation"):
        load_prior(*_taming_files(tmp_path, model, seg))


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    model = tiny_gpt()
    ckpt, cfg = _taming_files(
        tmp_path, model, "__is_unconditional__", extra={"transformer.extra.weight": torch.zeros(1)}
    )
    sd = torch.load(ckpt, weights_only=True)
    del sd["state_dict"]["transformer.blocks.1.attn.proj.weight"]
    torch.save(sd, ckpt)
    with pytest.raises(CheckpointError) as e:
        load_prior(ckpt, cfg)
    message = str(e.value)
    assert "missing keys (1)" in message and "blocks.1.attn.proj.weight" in message
    assert "unexpected keys (1)" in message and "extra.weight" in message
    assert "first_stage_model" not in message and "permuter" not in message


def test_a_vqgan_checkpoint_is_not_a_prior(tmp_path):
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "v.ckpt")
    (tmp_path / "v.yaml").write_text("model: {target: taming.models.vqgan.VQModel}\n")
    with pytest.raises(ConfigError, match="Net2NetTransformer"):
        load_prior(tmp_path / "v.ckpt", tmp_path / "v.yaml")
    _taming_files(tmp_path, tiny_gpt(), "__is_unconditional__")
    with pytest.raises(CheckpointError, match="no transformer"):
        load_prior(tmp_path / "v.ckpt", tmp_path / "last.yaml")
    with pytest.raises(ConfigError, match="YAML"):
        load_prior(tmp_path / "last.ckpt")


def test_safetensors_round_trip(tmp_path):
    model = tiny_gpt(TransformerConfig(16, 17, 2, 2, 8, n_unmasked=3))
    save_prior(TokenPrior(model, Condition("sos", sos_token=5), "x"), tmp_path / "p.safetensors")
    back = load_prior(tmp_path / "p.safetensors")
    assert back.transformer.config == model.config
    assert back.condition.sos_token == 5
    idx = torch.randint(16, (1, 9))
    assert torch.allclose(back.transformer(idx), model(idx), atol=2e-2)  # stored in fp16


def _prior_loss(grid=(4, 4), block=17, seed=0):
    codebook = torch.randn(16, 4)
    gpt = tiny_gpt(TransformerConfig(16, block, 2, 2, 8), seed)
    prior = TokenPrior(gpt.requires_grad_(False), Condition("sos"), "tiny")
    return PriorLoss(prior, codebook, grid, temperature=1.0), codebook


def test_prior_loss_has_a_gradient_in_z():
    loss, _ = _prior_loss()
    z = torch.randn(2, 4, 4, 4, requires_grad=True)
    value = loss(z)
    assert value.shape == (2,) and torch.isfinite(value).all()
    value.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_a_retired_option_in_stored_settings_is_read_only_at_its_one_value():
    """prior_context was removed ("soft" measured worse); a PNG's stored "tokens" still loads."""
    stored = {"prompts": ["x"], "prior_context": "tokens"}
    assert "prior_context" not in GenerateConfig.from_dict(stored).to_dict()
    with pytest.raises(ConfigError, match="prior_context='soft': this option was removed"):
        GenerateConfig.from_dict({**stored, "prior_context": "soft"})


def test_prior_loss_prefers_what_the_transformer_predicts():
    """Lowering the loss by gradient descent on z makes the layout likelier under the GPT."""
    loss, _ = _prior_loss()
    z = torch.randn(1, 4, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    start = loss(z).item()
    for _ in range(40):
        opt.zero_grad()
        loss(z).sum().backward()
        opt.step()
    assert loss(z).item() < start - 0.1


def test_large_grids_are_scored_in_windows():
    loss, _ = _prior_loss(grid=(6, 5), block=17)
    assert loss.window == (4, 4)
    assert window_starts(6, 4) == [0, 2] and window_starts(8, 4) == [0, 4]
    z = torch.randn(3, 4, 6, 5, requires_grad=True)
    loss(z).sum().backward()
    assert z.grad.abs().amax(dim=(0, 1)).min() > 0  # every cell is in some window


def test_soft_assignment_sharpens_to_the_nearest_code():
    codebook = torch.randn(16, 4)
    z = codebook[[3, 7]].t().reshape(1, 4, 1, 2)
    p = soft_assignment(z, codebook, 1e-4)
    assert p.argmax(-1).tolist() == [[[3, 7]]]
    assert torch.allclose(p.sum(-1), torch.ones(1, 1, 2))


def test_a_prior_for_fewer_codes_is_refused():
    gpt = tiny_gpt()
    prior = TokenPrior(gpt, Condition("sos"), "tiny")
    with pytest.raises(ConfigError, match="another VQGAN"):
        PriorLoss(prior, torch.randn(32, 4), (4, 4))


def test_a_prior_checkpoint_without_its_yaml_names_the_prior_s_flag(tmp_path):
    from vqclip.prior.resolve import load_prior_by_name

    ckpt = tmp_path / "transformer.ckpt"
    ckpt.write_bytes(b"not read")
    with pytest.raises(ConfigError, match="--prior-config"):
        load_prior_by_name(ckpt)
