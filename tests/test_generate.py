import copy
import math

import pytest
import torch

from vqclip.errors import ConfigError
from vqclip.generate import GenerateConfig, GenerationError, Run
from vqclip.generate.config import OPTIMISERS

FAST = dict(size=(32, 32), cutn=4, augments=(), noise_fac=0.0, device="cpu", precision="fp32")


def make(config_kwargs, tiny_vqgan, tiny_clip, clips=None):
    config = GenerateConfig(**{**FAST, **config_kwargs})
    return Run(config, vqgan=tiny_vqgan, clips=clips or [tiny_clip])


def test_a_few_steps_lower_the_loss(tiny_vqgan, tiny_clip):
    gen = make(dict(prompts=("a red circle",), iterations=30, seed=3), tiny_vqgan, tiny_clip)
    totals = [step.total.item() for step in gen.iterate()]
    assert len(totals) == 30
    assert sum(totals[-5:]) / 5 < sum(totals[:5]) / 5


def test_same_seed_same_image_bit_for_bit(tiny_vqgan, tiny_clip):
    kwargs = dict(
        prompts=("a red circle",), iterations=4, seed=11, augments=("Af", "Pe"), noise_fac=0.1
    )
    first = make(kwargs, tiny_vqgan, tiny_clip).run()
    again = make(kwargs, tiny_vqgan, tiny_clip).run()
    other = make({**kwargs, "seed": 12}, tiny_vqgan, tiny_clip).run()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_resumed_run_equals_unbroken_run(tiny_vqgan, tiny_clip, tmp_path):
    from vqclip.generate import load_run_state

    kwargs = dict(
        prompts=("a blue square",),
        iterations=6,
        seed=5,
        augments=("Af", "Ji"),
        noise_fac=0.1,
        schedule="cosine",
    )
    unbroken = make(kwargs, tiny_vqgan, tiny_clip).run()

    first = make(kwargs, tiny_vqgan, tiny_clip)
    for step in first.iterate():
        if step.index == 3:
            break
    first.save_checkpoint(tmp_path / "run")
    resumed = make(kwargs, tiny_vqgan, tiny_clip)
    resumed.load_state_dict(load_run_state(tmp_path / "run"))
    assert resumed.step_index == 3
    assert torch.equal(resumed.run(), unbroken)


def test_a_step_interrupted_before_its_update_leaves_the_run_as_it_was(
    tiny_vqgan, tiny_clip, monkeypatch
):
    """The cutouts drew from the run's generator, then the interrupt: the generator is put back,
    so the state is the last finished step's and the retried step is the same step."""
    from vqclip.generate.cutouts import MakeCutouts

    kwargs = dict(prompts=("a tree",), iterations=3, seed=2, augments=("Af",))
    unbroken = make(kwargs, tiny_vqgan, tiny_clip).run()
    run = make(kwargs, tiny_vqgan, tiny_clip)
    run.step()
    before = run.state_dict()
    real = MakeCutouts.forward

    def interrupted(self, images, generator):
        real(self, images, generator)
        raise KeyboardInterrupt

    monkeypatch.setattr(MakeCutouts, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.step()
    monkeypatch.setattr(MakeCutouts, "forward", real)
    after = run.state_dict()
    assert torch.equal(after["rng"], before["rng"]) and torch.equal(after["z"], before["z"])
    assert after["step"] == 1
    assert torch.equal(run.run(), unbroken)


def test_a_step_interrupted_inside_its_update_is_undone(tiny_vqgan, tiny_clip):
    """An interrupt after the optimiser's update has moved the latent and its moments: the
    step is undone, so the state (a checkpoint) is the step before's and the run goes on as
    one that never stopped."""
    kwargs = dict(prompts=("x",), iterations=3, seed=2, scales=(0.5, 1.0))
    unbroken = make(kwargs, tiny_vqgan, tiny_clip).run()
    run = make(kwargs, tiny_vqgan, tiny_clip)
    run.step()
    before = copy.deepcopy(run.state_dict())  # its tensors are the run's own, changed in place
    real = run._enter_stage

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the new scale's latent and optimiser are in place
        raise KeyboardInterrupt

    run._enter_stage = interrupted
    with pytest.raises(KeyboardInterrupt):
        run.step()
    run._enter_stage = real
    after = run.state_dict()
    assert after["step"] == 1 and run.at_step_boundary and run.grid == (8, 8)
    assert torch.equal(after["z"], before["z"]) and torch.equal(after["rng"], before["rng"])
    exp_avg = after["optimiser"]["state"][0]["exp_avg"]
    assert torch.equal(exp_avg, before["optimiser"]["state"][0]["exp_avg"])
    assert torch.equal(run.run(), unbroken)


def test_batch_images_are_optimised_independently(tiny_vqgan, tiny_clip):
    gen = make(
        dict(prompts=("a red circle", "a green star"), batch_size=2, iterations=2),
        tiny_vqgan,
        tiny_clip,
    )
    step = next(gen.iterate())
    assert step.image.shape == (2, 3, 32, 32)
    assert set(step.losses) == {"a red circle", "a green star"}
    assert step.losses["a red circle"][1] == 0 and step.losses["a green star"][0] == 0
    assert not torch.equal(gen.image()[0], gen.image()[1])


def test_ensemble_noise_prompts_and_regularisers(tiny_vqgan, tiny_clip, tiny_clip_b):
    config = GenerateConfig(
        **FAST,
        prompts=("a cat:1|a dog:-0.5",),
        clip=("a", "b"),
        clip_weights=(1.0, 0.5),
        noise_prompt_seeds=(3,),
        init_weight=0.5,
        tv_weight=0.1,
        iterations=2,
    )
    gen = Run(config, vqgan=tiny_vqgan, clips=[tiny_clip, tiny_clip_b])
    step = next(gen.iterate())
    assert {"a cat", "a dog", "noise:3", "init_weight", "tv"} <= set(step.losses)
    assert torch.isfinite(step.total).all()


@pytest.mark.parametrize("tv_on", ["image", "z"])
def test_total_variation_is_of_the_chosen_tensor(tiny_vqgan, tiny_clip, tv_on):
    from vqclip.generate.losses import tv_loss

    gen = make(dict(prompts=("x",), tv_weight=2.0, tv_on=tv_on), tiny_vqgan, tiny_clip)
    z = gen.z.detach().clone()
    step = gen.step()
    want = tv_loss(step.image) if tv_on == "image" else tv_loss(z)
    assert torch.allclose(step.losses["tv"], 2.0 * want, atol=1e-6)
    with pytest.raises(ConfigError, match="tv_on"):
        GenerateConfig(prompts=("x",), tv_on="pixels")


def test_decoder_checkpointing_gives_the_same_steps_and_keeps_less(tiny_vqgan, tiny_clip):
    plain = make(dict(prompts=("x",), iterations=3, seed=2), tiny_vqgan, tiny_clip)
    totals = [s.total for s in plain.iterate()]
    z_plain = plain.z.detach().clone()
    ckpt = make(
        dict(prompts=("x",), iterations=3, seed=2, checkpoint_decoder=True), tiny_vqgan, tiny_clip
    )
    assert tiny_vqgan.decoder.checkpoint
    assert torch.allclose(torch.stack([s.total for s in ckpt.iterate()]), torch.stack(totals))
    assert torch.allclose(ckpt.z, z_plain, atol=1e-6)

    def saved(checkpoint: bool) -> int:
        tiny_vqgan.decoder.checkpoint = checkpoint
        z = torch.randn(1, 4, 16, 16, requires_grad=True)
        count = [0]

        def pack(t):
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            tiny_vqgan.decode(z)
        return count[0]

    assert saved(True) < saved(False) / 2
    with pytest.raises(ConfigError, match="cuda_graphs"):
        GenerateConfig(prompts=("x",), cuda_graphs=True, checkpoint_decoder=True)


def test_guides_of_one_input_size_share_the_cutouts(tiny_vqgan, tiny_clip, tiny_clip_b):
    """One augmentation pass per step for an ensemble of same-size guides: both see the very
    same cutouts, so the cut-making runs once."""
    config = GenerateConfig(**FAST, prompts=("a cat",), clip=("a", "b"), iterations=1)
    gen = Run(config, vqgan=tiny_vqgan, clips=[tiny_clip, tiny_clip_b])
    seen = []
    for cutouts in gen.cutouts:
        cutouts.register_forward_hook(lambda m, args, out: seen.append(out))
    inputs = []
    for clip in gen.clips:
        clip.visual.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    gen.step()
    assert len(seen) == 1 and len(inputs) == 2
    assert torch.equal(inputs[0], inputs[1])


@pytest.mark.parametrize("init", ["pixels", "gradient"])
def test_encoded_inits_differ_from_random_codes(tiny_vqgan, tiny_clip, init):
    random_z = make(dict(prompts=("x",), seed=1), tiny_vqgan, tiny_clip).z
    init_z = make(dict(prompts=("x",), seed=1, init=init), tiny_vqgan, tiny_clip).z
    assert init_z.shape == random_z.shape and not torch.equal(init_z, random_z)


def test_z_stays_in_the_codebook_range(tiny_vqgan, tiny_clip):
    gen = make(dict(prompts=("x",), lr=10.0, iterations=3), tiny_vqgan, tiny_clip)
    gen.run()
    assert (gen.z >= gen.z_min - 1e-6).all() and (gen.z <= gen.z_max + 1e-6).all()


@pytest.mark.parametrize("optimiser", OPTIMISERS)
def test_every_optimiser_steps(tiny_vqgan, tiny_clip, optimiser):
    gen = make(dict(prompts=("x",), optimiser=optimiser, iterations=1), tiny_vqgan, tiny_clip)
    before = gen.z.detach().clone()
    gen.run()
    assert not torch.equal(gen.z, before)


def test_schedules_change_the_learning_rate(tiny_vqgan, tiny_clip):
    cosine = make(dict(prompts=("x",), schedule="cosine", iterations=4), tiny_vqgan, tiny_clip)
    base = 0.1 * cosine.codebook_std  # lr counts codebook standard deviations by default
    lrs = [s.lr for s in cosine.iterate()]
    assert lrs[0] == pytest.approx(base) and lrs == sorted(lrs, reverse=True)
    assert lrs[2] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 2 / 4)))
    stepped = make(
        dict(
            prompts=("x",), schedule="step", step_size=2, gamma=0.1, iterations=4, lr_scale="none"
        ),
        tiny_vqgan,
        tiny_clip,
    )
    assert [s.lr for s in stepped.iterate()] == pytest.approx([0.1, 0.1, 0.01, 0.01])


def test_nan_loss_stops_and_keeps_the_last_good_image(tiny_vqgan, tiny_clip, monkeypatch):
    gen = make(dict(prompts=("x",), iterations=5), tiny_vqgan, tiny_clip)
    next(gen.iterate())
    good = gen.image()
    original = tiny_clip.encode_image
    monkeypatch.setattr(tiny_clip, "encode_image", lambda x: original(x) * float("nan"))
    with pytest.raises(GenerationError, match="step 2"):
        next(gen.iterate())
    assert torch.equal(gen.last_good_image(), good)


def test_size_below_one_token_is_a_clear_error(tiny_vqgan, tiny_clip):
    with pytest.raises(ConfigError, match="smaller than one latent token"):
        make(dict(prompts=("x",), size=(1, 1)), tiny_vqgan, tiny_clip)


def test_size_beyond_memory_is_estimated_and_refused(tiny_vqgan, tiny_clip, monkeypatch):
    monkeypatch.setattr("vqclip.devices.available_memory_bytes", lambda device: 1000)
    with pytest.raises(ConfigError, match=r"needs about .* GiB .* only"):
        make(dict(prompts=("x",)), tiny_vqgan, tiny_clip)


@pytest.mark.parametrize(
    ("field", "value"),
    [("cutn", 0), ("lr", -1.0), ("optimiser", "adamm"), ("size", (0, 10)), ("init", "image")],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        GenerateConfig(prompts=("x",), **{field: value})


def test_config_round_trips_through_dict():
    config = GenerateConfig(prompts=("a|b:-1",), clip=("c1", "c2"), size=(64, 48), seed=9)
    assert GenerateConfig.from_dict(config.to_dict()) == config


def test_init_image_starts_from_its_encoding(tiny_vqgan, tiny_clip, tmp_path):
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (220, 20, 20)).save(path)
    gen = make(dict(prompts=("x",), init="image", init_image=str(path)), tiny_vqgan, tiny_clip)
    red = torch.tensor([220, 20, 20]).div(255).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert torch.allclose(gen.z0, tiny_vqgan.encode(red * 2 - 1), atol=1e-5)


def test_bf16_step_matches_fp32_within_tolerance(tiny_vqgan, tiny_clip):
    """The fast path must not change what is generated beyond noise: one step from the same
    state, fp32 vs bf16 decoder and CLIP, gives nearly the same loss and update."""
    import copy

    kwargs = dict(prompts=("a red circle",), iterations=1, seed=2)
    fp32 = make(
        {**kwargs, "precision": "fp32"}, copy.deepcopy(tiny_vqgan), copy.deepcopy(tiny_clip)
    )
    bf16 = make(
        {**kwargs, "precision": "bf16"}, copy.deepcopy(tiny_vqgan), copy.deepcopy(tiny_clip)
    )
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert torch.equal(fp32.z, bf16.z)
    loss32, loss16 = fp32.step().total, bf16.step().total
    assert torch.allclose(loss16, loss32, rtol=0.02)
    update32, update16 = fp32.z - fp32.z0, bf16.z - bf16.z0
    cosine = torch.nn.functional.cosine_similarity(update32.flatten(), update16.flatten(), dim=0)
    assert cosine > 0.95
    assert (fp32.image() - bf16.image()).abs().mean() < 0.02


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cutouts_are_made_in_fp32_whatever_the_compute_dtype(tiny_vqgan, tiny_clip, precision):
    # bf16 cutouts were measured faster but worse on the toy probe (docs/performance.md).
    run = make(dict(prompts=("a red circle",), iterations=2, precision=precision), tiny_vqgan,
               tiny_clip)  # fmt: skip
    seen = []
    run.cutouts[0].register_forward_hook(lambda m, inputs, out: seen.append(out.dtype))
    run.step()
    assert seen == [torch.float32]


def test_a_run_folds_its_guides_quick_gelu(tiny_vqgan, tiny_clip):
    from vqclip.clip.model import FoldedQuickGELU, QuickGELU

    assert tiny_clip.config.quick_gelu
    run = make(dict(prompts=("a red circle",), iterations=2), tiny_vqgan, tiny_clip)
    kinds = {type(m) for m in run.clips[0].modules()}
    assert FoldedQuickGELU in kinds and QuickGELU not in kinds


def test_fp16_on_cpu_is_refused(tiny_vqgan, tiny_clip):
    with pytest.raises(ConfigError, match="fp16"):
        make(dict(prompts=("x",), precision="fp16"), tiny_vqgan, tiny_clip)


def test_cuda_graphs_need_a_cuda_device(tiny_vqgan, tiny_clip):
    with pytest.raises(ConfigError, match="cuda_graphs"):
        make(dict(prompts=("x",), cuda_graphs=True), tiny_vqgan, tiny_clip)


def test_nan_found_at_a_later_check_keeps_the_latent_of_the_last_passed_check(
    tiny_vqgan, tiny_clip, monkeypatch
):
    gen = make(dict(prompts=("x",), iterations=20), tiny_vqgan, tiny_clip)
    gen.check_every = 4  # as on a GPU, where each check is a host sync
    for _ in range(4):
        gen.step()
    checked = gen.z.detach().clone()  # the next step (index 4) checks and keeps this latent
    gen.step()
    original = tiny_clip.encode_image
    monkeypatch.setattr(tiny_clip, "encode_image", lambda x: original(x) * float("nan"))
    for _ in range(3):  # steps 6-8, unchecked: the NaN loss breaks z
        gen.step()
    assert not torch.isfinite(gen.z).all()
    with pytest.raises(GenerationError, match="step 9"):
        gen.step()
    assert torch.equal(gen.last_good_z, checked)


def test_lr_counts_codebook_standard_deviations(tiny_vqgan, tiny_clip):
    """A codebook with 10x the spread gets 10x the step, so one lr suits both."""
    import copy

    wide = copy.deepcopy(tiny_vqgan)
    wide.quantize.embedding.weight.data.mul_(10)
    narrow_gen = make(dict(prompts=("x",), seed=4), tiny_vqgan, tiny_clip)
    wide_gen = make(dict(prompts=("x",), seed=4), wide, tiny_clip)
    assert wide_gen.codebook_std == pytest.approx(10 * narrow_gen.codebook_std, rel=1e-5)
    assert wide_gen.effective_lr == pytest.approx(10 * narrow_gen.effective_lr, rel=1e-5)
    absolute = make(dict(prompts=("x",), lr=0.3, lr_scale="none"), wide, tiny_clip)
    assert absolute.optimiser.param_groups[0]["lr"] == 0.3


def test_a_nan_in_one_image_stops_only_that_image(tiny_vqgan, tiny_clip, monkeypatch):
    gen = make(dict(prompts=("a", "b"), batch_size=2, iterations=4), tiny_vqgan, tiny_clip)
    gen.step()
    original = tiny_clip.encode_image
    cutn = gen.config.cutn

    def nan_for_image_0(x):
        out = original(x)
        mask = torch.ones_like(out)
        mask[:cutn] = float("nan")  # the cutouts of image 0 come first
        return out * mask

    monkeypatch.setattr(tiny_clip, "encode_image", nan_for_image_0)
    frozen = gen.z[0].detach().clone()
    moving = gen.z[1].detach().clone()
    steps = [gen.step() for _ in range(3)]
    assert steps[-1].failed.tolist() == [True, False]
    assert gen.failures == [(2, 0)]
    assert torch.equal(gen.z[0], frozen) and torch.isfinite(gen.z).all()
    assert not torch.equal(gen.z[1], moving)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_step_on_cuda_makes_no_host_syncs(tiny_vqgan, tiny_clip):
    # Syncs stall the GPU's queue; the loss check is the only one, every check_every steps.
    kwargs = dict(prompts=("a red circle",), iterations=4, augments=("Af", "Pe", "Ji", "Er"))
    config = GenerateConfig(**{**FAST, **kwargs, "device": "cuda", "noise_fac": 0.1})
    gen = Run(config, vqgan=tiny_vqgan, clips=[tiny_clip])
    gen.step()  # step 0 checks the loss
    torch.cuda.set_sync_debug_mode("error")
    try:
        gen.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
