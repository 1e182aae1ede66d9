import numpy as np
import pytest
from PIL import Image

from extras import needs_video
from vqclip.cli import main
from vqclip.output import read_image_metadata


def generate(args, model_files, tmp_path, capsys):
    fixed = ["-cuts", "4", "--device", "cpu", "--precision", "fp32", "--no-progress"]
    if "-s" not in args:
        fixed += ["-s", "32", "32"]
    # Prompts first: --clip takes one or more values and would swallow a prompt after it.
    code = main(["generate", *args, *fixed, *model_files])
    return code, capsys.readouterr().err


def pixels(path):
    return np.asarray(Image.open(path))


def test_generate_writes_png_with_settings_and_from_png_reproduces(model_files, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, err = generate(
        ["a red circle|blue:-0.5", "-i", "3", "-sd", "42", "-o", str(out)],
        model_files,
        tmp_path,
        capsys,
    )
    assert code == 0, err
    assert "seed 42" in err and f"wrote {out}" in err
    meta = read_image_metadata(out)
    assert meta["config"]["prompts"] == ["a red circle|blue:-0.5"]
    assert meta["config"]["seed"] == 42 and meta["config"]["iterations"] == 3
    assert meta["vqclip_version"]
    assert pixels(out).shape == (32, 32, 3)

    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "-o", str(again), "--no-progress"]) == 0
    assert np.array_equal(pixels(out), pixels(again))


def test_save_every_and_batch_outputs(model_files, tmp_path, capsys):
    out = tmp_path / "b.png"
    code, err = generate(
        ["one", "two", "-i", "2", "-se", "1", "-o", str(out)], model_files, tmp_path, capsys
    )
    assert code == 0, err
    assert (tmp_path / "b_0.png").is_file() and (tmp_path / "b_1.png").is_file()
    assert sorted(p.name for p in (tmp_path / "b_steps").iterdir()) == [
        "00001_0.png",
        "00001_1.png",
        "00002_0.png",
        "00002_1.png",
    ]
    assert read_image_metadata(tmp_path / "b_1.png")["image_index"] == 1


def whole_then_stopped(args, part, model_files, tmp_path, capsys, monkeypatch):
    """Runs `args` to the end into whole.png, then again into `part` with a Ctrl-C at step 3;
    returns the whole image's path and the stopped run's (exit code, stderr)."""
    from vqclip.generate.run import Run

    whole = tmp_path / "whole.png"
    assert generate([*args, "-o", str(whole)], model_files, tmp_path, capsys)[0] == 0
    real_step = Run.step

    def interrupt_at_3(self):
        if self.step_index == 2:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Run, "step", interrupt_at_3)
    stopped = generate([*args, "-o", str(part)], model_files, tmp_path, capsys)
    monkeypatch.setattr(Run, "step", real_step)
    return whole, stopped


def test_ctrl_c_checkpoints_and_resume_finishes_the_same_image(
    model_files, tmp_path, capsys, monkeypatch
):
    args = ["a tree", "-i", "4", "-sd", "1", "-aug", "Af", "Pe"]
    part = tmp_path / "part.png"
    whole, (code, err) = whole_then_stopped(args, part, model_files, tmp_path, capsys, monkeypatch)
    assert code == 130 and "--resume" in err
    assert not part.exists()
    code = main(
        ["generate", "--resume", str(tmp_path / "part.run"), "-o", str(part), "--no-progress"]
    )
    assert code == 0
    assert np.array_equal(pixels(part), pixels(whole))


def test_resume_without_o_finishes_the_image_the_run_was_writing(
    model_files, tmp_path, capsys, monkeypatch
):
    """After a stop that printed no resume command (kill -9), `--resume DIR` alone writes the
    first run's -o, wherever it is run from, not output.png in the working folder."""
    args = ["a tree", "-i", "4", "-sd", "3", "--checkpoint-every", "1"]
    part = tmp_path / "kept" / "part.png"
    part.parent.mkdir()
    whole, (code, _) = whole_then_stopped(args, part, model_files, tmp_path, capsys, monkeypatch)
    assert code == 130
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_dir = tmp_path / "kept" / "part.run"
    assert main(["generate", "--resume", str(run_dir), "--no-progress"]) == 0, capsys.readouterr()
    assert np.array_equal(pixels(part), pixels(whole))
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([""], "prompt is empty"),
        (["a:1|"], "empty"),
        (["x", "-ii", "/nonexistent/pic.png"], "pic.png"),
        (["x", "-s", "1", "1"], "smaller than one latent token"),
        (["x", "-o", "/proc/version/out.png"], "output"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(model_files, tmp_path, capsys, args, message):
    code, err = generate(args, model_files, tmp_path, capsys)
    assert code != 0
    assert message in err
    assert "Traceback" not in err


def test_not_an_image_is_a_clear_error(model_files, tmp_path, capsys):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    code, err = generate(["x", "-ip", str(fake)], model_files, tmp_path, capsys)
    assert code == 2 and "notes.png" in err


def test_unknown_model_and_missing_weights_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    assert main(["generate", "x", "--model", "no_such_pair", "--no-progress"]) == 2
    assert "no_such_pair" in capsys.readouterr().err
    assert main(["generate", "x", "--vqgan", "vqgan_imagenet_f16_1638", "--no-progress"]) == 2
    assert "vqgan_imagenet_f16_16384" in capsys.readouterr().err  # did you mean
    assert main(["generate", "x", "-o", str(tmp_path / "o.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "http" in err and str(tmp_path / "cache") in err


def test_the_maskgit_pair_offline_names_every_missing_file_in_one_message(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    out = tmp_path / "husky.png"
    argv = ["generate", "a husky in the snow", "--model", "maskgit", "-o", str(out)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not out.exists()
    assert err.count("vqclip: error") == 1 and "offline mode is on (VQCLIP_OFFLINE=1)" in err
    for name in ("MaskGIT_ImageNet_256.pth", "vqgan_imagenet_f16_1024.ckpt", "clip_vit_b32"):
        assert name in err
    assert "/llvictorll/Maskgit-pytorch/resolve/main/MaskGIT_ImageNet_256.pth" in err
    assert "heibox.uni-heidelberg.de" in err  # the VQGAN's own host
    assert "Or, once online: vqclip models download maskgit\n" in err


def test_nan_loss_keeps_last_good_image(model_files, tmp_path, capsys, monkeypatch):
    from vqclip.generate.run import GenerationError, Run

    real_step = Run.step

    def nan_at_2(self):
        if self.step_index == 1:
            raise GenerationError("the loss became [nan] at step 2")
        return real_step(self)

    monkeypatch.setattr(Run, "step", nan_at_2)
    out = tmp_path / "nan.png"
    code, err = generate(["x", "-i", "5", "-o", str(out)], model_files, tmp_path, capsys)
    assert code == 3 and "nan" in err
    assert read_image_metadata(out)["step"] == 1


@needs_video
def test_video_of_the_progress(model_files, tmp_path, capsys):
    out = tmp_path / "v.png"
    code, err = generate(["x", "-i", "3", "--video", "-o", str(out)], model_files, tmp_path, capsys)
    assert code == 0, err
    video = tmp_path / "v.mp4"
    assert video.stat().st_size > 0 and video.read_bytes()[4:8] == b"ftyp"
    assert not list(tmp_path.glob(".*part*"))


def test_video_without_imageio_ffmpeg_says_how_to_install(
    model_files, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)
    before = set(tmp_path.iterdir())
    code, err = generate(
        ["x", "-i", "5", "--video", "-o", str(tmp_path / "v.png")], model_files, tmp_path, capsys
    )
    assert code == 2 and "vqclip[video]" in err
    assert set(tmp_path.iterdir()) == before  # refused before the first step: no run, no image


def test_init_image_is_encoded_and_anchored(model_files, tmp_path, capsys):
    init = tmp_path / "init.png"
    Image.fromarray(np.full((32, 32, 3), (200, 30, 30), np.uint8)).save(init)
    out = tmp_path / "i.png"
    code, err = generate(
        ["x", "-ii", str(init), "-iw", "1", "-i", "2", "-o", str(out)],
        model_files,
        tmp_path,
        capsys,
    )
    assert code == 0, err
    config = read_image_metadata(out)["config"]
    assert config["init"] == "image" and config["init_image"] == str(init)


def test_model_pair_supplies_its_settings_unless_a_flag_overrides(
    tmp_path, capsys, monkeypatch, tiny_vqgan, tiny_clip
):
    from vqclip.clip import save_clip
    from vqclip.vqgan import save_vqgan
    from vqclip.weights import registry

    save_vqgan(tiny_vqgan, tmp_path / "v.safetensors")
    save_clip(tiny_clip, tmp_path / "c.safetensors")
    pair = registry.ModelPair(
        str(tmp_path / "v.safetensors"),
        (str(tmp_path / "c.safetensors"),),
        (("size", (32, 32)), ("iterations", 2), ("cutn", 3)),
    )
    monkeypatch.setitem(registry.PAIRS, "tinypair", pair)
    base = ["generate", "x", "--model", "tinypair", "--precision", "fp32", "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "a.png")]) == 0
    config = read_image_metadata(tmp_path / "a.png")["config"]
    assert (config["size"], config["iterations"], config["cutn"]) == ([32, 32], 2, 3)
    assert config["vqgan"] == pair.vqgan and config["clip"] == list(pair.clips)
    assert main([*base, "-i", "1", "-o", str(tmp_path / "b.png")]) == 0
    assert read_image_metadata(tmp_path / "b.png")["config"]["iterations"] == 1
