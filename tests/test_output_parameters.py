"""The `parameters` PNG text (AUTOMATIC1111's form) beside vqclip's own JSON."""

from PIL import Image

from vqclip.cli import main
from vqclip.output import parameters_text, read_image_metadata


def test_a_generated_png_carries_parameters_other_tools_read(models, tmp_path, capsys):
    out = tmp_path / "out.png"
    argv = ["generate", "a lighthouse at dusk|fog:-0.5", "-i", "2", "-sd", "42", "-s", "32", "32"]
    argv += ["-cuts", "2", "-opt", "AdamW", "-o", str(out), "--no-progress", "--device", "cpu"]
    assert main(argv, models=models) == 0, capsys.readouterr().err
    with Image.open(out) as image:
        text = image.text["parameters"]
    prompt, negative, line = text.split("\n")
    assert prompt == "a lighthouse at dusk"
    assert negative == "Negative prompt: fog:0.5"
    assert line.startswith("Steps: 2, Sampler: AdamW, Seed: 42, Size: 32x32, Model: ")
    assert read_image_metadata(out)["config"]["seed"] == 42  # --from-png reads vqclip's own


def test_parameters_of_a_batch_image_a_story_and_quoted_values():
    config = {
        "prompts": ["a cat", "a dog|mud:-1 ^ a park:2"],
        "seed": 3,
        "optimiser": "radam",
        "vqgan": "my,vqgan.ckpt",
        "clip": ["clip_vit_b32_openai"],
    }
    meta = {"config": config, "image_index": 1, "step": 5, "size": [64, 48]}
    assert parameters_text(meta) == (
        "a dog ^ a park:2\nNegative prompt: mud\nSteps: 5, Sampler: RAdam, Seed: 3, "
        'Size: 64x48, Model: "my,vqgan.ckpt + clip_vit_b32_openai", Version: vqclip'
    )
    assert parameters_text({"step": 1}) is None
