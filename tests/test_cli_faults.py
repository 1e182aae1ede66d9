"""Ways a user could lose or misread work with `vqclip generate`, each refused or made safe."""

import fcntl
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.errors import ConfigError
from vqclip.generate.checkpoint import STATE_FILE
from vqclip.generate.config import build_config
from vqclip.generate.run import Run
from vqclip.output import read_image_metadata

ARGS = ["a tree", "-i", "3", "-sd", "1"]


def generate(args, model_files, capsys):
    fixed = ["-cuts", "4", "-s", "32", "32", "--device", "cpu", "--precision", "fp32"]
    code = main(["generate", *args, *fixed, "--no-progress", "--threads", "1", *model_files])
    return code, capsys.readouterr().err


def interrupt_at(monkeypatch, step_index):
    real = Run.step

    def step(self):
        if self.step_index == step_index:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Run, "step", step)


def test_a_checkpoint_dir_with_a_users_files_is_refused(model_files, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "notes.txt").write_text("my notes")
    code, err = generate(
        [*ARGS, "-o", str(tmp_path / "o.png"), "--checkpoint-dir", str(mine)], model_files, capsys
    )
    assert code == 2 and "notes.txt" in err and "not a vqclip checkpoint" in err
    assert (mine / "config.json").read_text() == "{}"
    # vqclip's own file names in a folder vqclip did not make are the user's too
    (mine / "notes.txt").unlink()
    (mine / "output.json").write_text('{"mine": 1}')
    code, err = generate(
        [*ARGS, "-o", str(tmp_path / "o.png"), "--checkpoint-dir", str(mine)], model_files, capsys
    )
    assert code == 2 and "config.json" in err and "not a vqclip checkpoint" in err
    assert (mine / "config.json").read_text() == "{}"
    assert (mine / "output.json").read_text() == '{"mine": 1}'
    # a folder vqclip wrote its checkpoint into is vqclip's: its files are not foreign
    from vqclip.cli.generate import _check_run_dir

    ours = tmp_path / "ours"
    args = [*ARGS, "-o", str(tmp_path / "p.png"), "--checkpoint-dir", str(ours)]
    assert generate(args, model_files, capsys)[0] == 0
    assert {"state.bin", "config.json"} <= {p.name for p in ours.iterdir()}
    assert _check_run_dir(ours, given=True) == ours


def test_ctrl_c_with_a_file_where_the_checkpoint_goes_keeps_the_work(
    model_files, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "part.run").write_text("a file of the user's")
    interrupt_at(monkeypatch, 2)
    code, err = generate([*ARGS, "-o", str(tmp_path / "part.png")], model_files, capsys)
    assert code == 130 and "is a file" in err
    moved = list((tmp_path / "tmp" / "vqclip-rescued").glob("*part.run"))
    assert len(moved) == 1 and (moved[0] / STATE_FILE).is_file()
    assert f"--resume {moved[0]}" in err
    assert (tmp_path / "part.run").read_text() == "a file of the user's"


def test_the_output_may_not_be_the_init_image(model_files, tmp_path, capsys):
    init = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(init)
    before = init.read_bytes()
    code, err = generate([*ARGS, "-ii", str(init), "-o", str(init)], model_files, capsys)
    assert code == 2 and "init image" in err and "overwrite" in err
    assert init.read_bytes() == before


def test_the_output_may_not_be_the_png_whose_settings_are_reused(model_files, tmp_path, capsys):
    first = tmp_path / "first.png"
    assert generate([*ARGS, "-o", str(first)], model_files, capsys)[0] == 0
    before = first.read_bytes()
    code = main(["generate", "--from-png", str(first), "-o", str(first), "--no-progress"])
    assert code == 2 and "--from-png" in capsys.readouterr().err
    assert first.read_bytes() == before


def test_a_prompt_with_a_byte_that_is_not_utf8_is_refused_before_the_run(
    model_files, tmp_path, capsys
):
    out = tmp_path / "o.png"
    bad = "a red \udcff circle"  # how Python hands over argv's byte 0xff
    code, err = generate([bad, "-i", "2", "-o", str(out)], model_files, capsys)
    assert code == 2 and "b'\\xff'" in err and "not UTF-8" in err and "Traceback" not in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["models"]
    with pytest.raises(ConfigError, match="not UTF-8"):  # every door builds this config
        build_config({"model": "toy", "prompt": bad})


def test_the_output_may_not_be_an_image_prompt(model_files, tmp_path, capsys):
    picture = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(picture)
    code, err = generate([*ARGS, "-ip", str(picture), "-o", str(picture)], model_files, capsys)
    assert code == 2 and "image prompt" in err


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(
    model_files, tmp_path, capsys
):
    out = tmp_path / "same.png"
    with open(tmp_path / ".same.png.lock", "a") as held:  # the first run's lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, err = generate([*ARGS, "-o", str(out)], model_files, capsys)
    assert code == 2 and "another vqclip run is writing" in err and not out.exists()
    assert generate([*ARGS, "-o", str(out)], model_files, capsys)[0] == 0
    assert not (tmp_path / ".same.png.lock").exists()


def test_the_resume_command_is_quoted_for_the_shell(model_files, tmp_path, capsys, monkeypatch):
    interrupt_at(monkeypatch, 1)
    out = tmp_path / "my out.png"
    code, err = generate([*ARGS, "-o", str(out)], model_files, capsys)
    assert code == 130
    assert f"-o '{out}'" in err and f"--resume '{tmp_path / 'my out.run'}'" in err


def test_a_16_bit_png_is_read_at_its_own_brightness(tmp_path):
    from vqclip.generate.prompts import load_image

    grey = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I")
    assert abs(float(load_image(path).mean()) - 0.5) < 0.01


def test_all_zero_clip_weights_are_refused(model_files, tmp_path, capsys):
    code, err = generate(
        [*ARGS, "-o", str(tmp_path / "o.png"), "--clip-weights", "0"], model_files, capsys
    )
    assert code == 2 and "clip_weights" in err and "all zero" in err


def test_an_image_that_stops_early_exits_4_and_says_so(model_files, tmp_path, capsys, monkeypatch):
    real = Run._check_finite

    def nan_for_image_1(self, total):
        if self.step_index == 1:
            total = total.clone()
            total[1] = float("nan")
        return real(self, total)

    monkeypatch.setattr(Run, "_check_finite", nan_for_image_1)
    out = tmp_path / "b.png"
    code, err = generate(["one", "two", "-i", "3", "-o", str(out)], model_files, capsys)
    assert code == 4 and "image 1 at step 2" in err
    assert read_image_metadata(tmp_path / "b_1.png")["stopped_at_step"] == 2
    assert "stopped_at_step" not in read_image_metadata(tmp_path / "b_0.png")


@pytest.mark.parametrize("threads", [1, 2])
def test_from_png_reuses_the_stored_thread_count(model_files, tmp_path, capsys, threads):
    first = tmp_path / "first.png"
    fixed = ["-cuts", "4", "-s", "32", "32", "--device", "cpu", "--precision", "fp32"]
    code = main(
        ["generate", *ARGS, "-o", str(first), "--threads", str(threads), *fixed, *model_files]
    )
    assert code == 0
    assert read_image_metadata(first)["config"]["threads"] == threads
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(first), "-o", str(again), "--no-progress"]) == 0
    assert read_image_metadata(again)["config"]["threads"] == threads
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


def test_an_unknown_joined_flag_is_named_not_read_as_a_value(tmp_path, capsys):
    code = main(["generate", "x", "-iter", "25", "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown flag -iter" in err and "invalid int" not in err


@pytest.mark.parametrize("kind", ["folder", "loop", "dangling"])
def test_from_png_says_what_is_wrong_with_the_path(tmp_path, capsys, kind):
    import os

    path = tmp_path / "x.png"
    if kind == "folder":
        path.mkdir()
    elif kind == "loop":
        os.symlink(path, path)
    else:
        os.symlink(tmp_path / "gone.png", path)
    code = main(["generate", "--from-png", str(path), "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    expected = {"folder": "is a folder", "loop": "loops back", "dangling": "does not exist"}
    assert code == 2 and expected[kind] in err


def test_all_negative_clip_weights_are_warned_about(model_files, tmp_path, capsys):
    code, err = generate(
        [*ARGS, "-i", "1", "-o", str(tmp_path / "o.png"), "--clip-weights", "-1"],
        model_files,
        capsys,
    )
    assert code == 0 and "warning: clip_weights=[-1.0]: every CLIP's weight is negative" in err


def test_a_weights_cache_that_is_a_file_is_named_as_the_problem(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("VQCLIP_HOME", str(home))
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    code = main(["generate", "x", "-o", str(tmp_path / "o.png"), "-i", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot hold them" in err and "not a folder" in err
    assert "put them here" not in err


def test_a_video_that_cannot_be_put_in_place_leaves_no_part_file(tmp_path):
    pytest.importorskip("imageio_ffmpeg")  # the optional `video` extra
    from vqclip.output import VideoWriter

    target = tmp_path / "v.mp4"
    target.mkdir()  # a folder in the way
    writer = VideoWriter(target, fps=10)
    for _ in range(3):
        writer.add(torch.rand(3, 16, 16))
    with pytest.raises(OSError):
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_a_very_large_init_image_gets_vqclips_warning_not_pils(tmp_path, monkeypatch):
    from vqclip.errors import VQClipWarning
    from vqclip.generate.prompts import load_image

    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 2 + 1)  # 64x64 is "very large" now
    with pytest.warns(VQClipWarning, match="very large") as caught:
        load_image(path)
    assert not any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # past twice the limit: refused
    with pytest.raises(ConfigError, match="is not an image that can be read"):
        load_image(path)


def sized(size_flags, model_files, capsys, out):
    fixed = ["-cuts", "4", "--device", "cpu", "--precision", "fp32", "--threads", "1"]
    argv = ["generate", *ARGS, *size_flags, *fixed, "--no-progress", *model_files, "-o", out]
    return main(argv), capsys.readouterr().err


def test_a_size_rounded_down_is_reported_as_the_size_written(model_files, tmp_path, capsys):
    """The tiny VQGAN's factor is 2: 17x17 makes a 16x16 image, and every line says 16x16."""
    out = tmp_path / "odd.png"
    code, err = sized(["-s", "17", "17"], model_files, capsys, str(out))
    assert code == 0, err
    assert Image.open(out).size == (16, 16)
    assert "size 17x17 rounded down to 16x16" in err
    wrote = next(line for line in err.splitlines() if line.startswith("wrote "))
    assert "(16x16, 3 steps" in wrote, wrote


def test_coarse_scales_are_not_reported_as_the_size(model_files, tmp_path, capsys):
    """--scales 0.01 1 starts on a one-token grid and ends at the whole 64x64: no note that the
    size was rounded down to the first scale's."""
    out = tmp_path / "scaled.png"
    code, err = sized(["-s", "64", "64", "--scales", "0.01", "1"], model_files, capsys, str(out))
    assert code == 0, err
    assert Image.open(out).size == (64, 64)
    assert "rounded down" not in err
    assert ": 64x64 (from 2x2, 2 scales), 3 steps" in err
    assert "(64x64, 3 steps" in err


@pytest.mark.parametrize("kind", ["loop", "dangling", "folder"])
def test_an_init_image_path_says_what_is_wrong_with_it(model_files, tmp_path, capsys, kind):
    import os

    path = tmp_path / "init.png"
    if kind == "loop":
        os.symlink(path, path)
    elif kind == "dangling":
        os.symlink(tmp_path / "gone.png", path)
    else:
        path.mkdir()
    code, err = generate(
        [*ARGS, "-ii", str(path), "-o", str(tmp_path / "o.png")], model_files, capsys
    )
    expected = {
        "loop": "is a symbolic link that loops back on itself",
        "dangling": "is a symbolic link to a file that does not exist",
        "folder": "is a folder",
    }
    assert code == 2 and expected[kind] in err and "Traceback" not in err, err
