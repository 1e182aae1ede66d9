"""What `vqclip generate` promises under faults: interrupts, full disks, bad files, bad input."""

import json
import os
import signal
import stat

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from vqclip.cli import main
from vqclip.generate.checkpoint import STATE_FILE, load_run_state, save_run_state
from vqclip.output import read_image_metadata

ARGS = ["a tree", "-i", "4", "-sd", "1", "-aug", "Af", "Pe"]


def generate(args, model_files, capsys):
    fixed = ["-cuts", "4", "-s", "32", "32", "--device", "cpu", "--precision", "fp32"]
    # Prompts first: --clip takes one or more values and would swallow a prompt after it.
    code = main(["generate", *args, *fixed, "--no-progress", *model_files])
    return code, capsys.readouterr().err


def sigint_at_the_first_draw(monkeypatch) -> list:
    """A real SIGINT to this process at the masked prior's first draw; the returned list
    grows by one at every draw."""
    from vqclip.prior.masked import MaskedResampler

    draws = []
    real = MaskedResampler._draw

    def draw(self, logits, generator):
        draws.append(1)
        if len(draws) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, logits, generator)

    monkeypatch.setattr(MaskedResampler, "_draw", draw)
    return draws


def pixels(path):
    return np.asarray(Image.open(path))


@pytest.fixture
def whole(model_files, tmp_path, capsys):
    """The image of an unbroken run of ARGS."""
    path = tmp_path / "whole.png"
    assert generate([*ARGS, "-o", str(path)], model_files, capsys)[0] == 0
    return pixels(path)


def resume(run_dir, out, capsys):
    code = main(["generate", "--resume", str(run_dir), "-o", str(out), "--no-progress"])
    return code, capsys.readouterr().err


def test_interrupt_inside_a_step_after_the_cutouts_drew_resumes_bit_for_bit(
    model_files, tmp_path, capsys, monkeypatch, whole
):
    """A KeyboardInterrupt that lands mid-step, after that step's cutouts advanced the run's
    random generator: the checkpoint must still be the state of the last finished step."""
    from vqclip.generate.cutouts import MakeCutouts

    real = MakeCutouts.forward
    calls = {"n": 0}

    def cut_then_interrupt(self, images, generator):
        out = real(self, images, generator)
        calls["n"] += 1
        if calls["n"] == 3:  # inside step 3, after its random draws
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(MakeCutouts, "forward", cut_then_interrupt)
    part = tmp_path / "part.png"
    code, err = generate([*ARGS, "-o", str(part)], model_files, capsys)
    assert code == 130 and "--resume" in err, err
    assert load_run_state(tmp_path / "part.run")["step"] == 2
    monkeypatch.setattr(MakeCutouts, "forward", real)
    assert resume(tmp_path / "part.run", part, capsys)[0] == 0
    assert np.array_equal(pixels(part), whole)


def test_sigint_mid_step_finishes_the_step_then_checkpoints(
    model_files, tmp_path, capsys, monkeypatch, whole
):
    """A real SIGINT delivered inside a step: the step completes, the checkpoint is written at
    its end, and the resumed run ends with the unbroken run's image."""
    from vqclip.generate.run import Run

    real = Run._forward

    def forward_with_sigint(self):
        out = real(self)
        if self.step_index == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Run, "_forward", forward_with_sigint)
    part = tmp_path / "part.png"
    code, err = generate([*ARGS, "-o", str(part)], model_files, capsys)
    assert code == 130 and "stopping after this step" in err, err
    assert load_run_state(tmp_path / "part.run")["step"] == 2
    monkeypatch.setattr(Run, "_forward", real)
    assert resume(tmp_path / "part.run", part, capsys)[0] == 0
    assert np.array_equal(pixels(part), whole)


def test_interrupt_during_the_update_checkpoints_the_step_before(model_files, tmp_path, capsys):
    from unittest import mock

    part = tmp_path / "part.png"
    with mock.patch("torch.optim.Adam.step", side_effect=KeyboardInterrupt):
        code, err = generate([*ARGS, "-o", str(part)], model_files, capsys)
    assert code == 130 and "--resume" in err and "Traceback" not in err, err
    assert load_run_state(tmp_path / "part.run")["step"] == 0  # the first step, undone


# The toy pair (its models and its masked prior, which redraws, steered by the guides: two
# draws a round) scaled down to seconds: redraws at steps 2 and 4 and after the last, each of one
# candidate in 4 rounds (the pair's own: 4 candidates, 32 rounds; 20 s and more a redraw).
TOY = ["a red circle", "--model", "toy", "-i", "4", "--prior-resample-every", "2", "-sd", "1"]
TOY += ["--prior-candidates", "1", "--prior-draw-steps", "4", "-s", "32", "32", "-cuts", "2"]
TOY += ["--device", "cpu", "--precision", "fp32", "--no-progress"]


def toy(out, capsys, *more):
    code = main(["generate", *TOY, *more, "-o", str(out)])
    return code, capsys.readouterr().err


def test_ctrl_c_inside_a_redraw_stops_at_once_and_checkpoints_the_step_before(
    tmp_path, capsys, monkeypatch
):
    """A real SIGINT inside the prior's redraw of step 2: the redraw ends after the round under
    way, not its 8 draws; the checkpoint is step 1's, the exit code 130, and the resumed run
    ends with the unbroken run's image."""
    whole = tmp_path / "whole.png"
    assert toy(whole, capsys)[0] == 0
    draws = sigint_at_the_first_draw(monkeypatch)
    part = tmp_path / "part.png"
    code, err = toy(part, capsys)
    assert code == 130 and "writing a checkpoint" in err and "--resume" in err, err
    assert len(draws) == 2  # the round under way: its tentative draw and its draw
    assert load_run_state(tmp_path / "part.run")["step"] == 1 and not part.exists()
    monkeypatch.undo()  # the real draws again
    assert resume(tmp_path / "part.run", part, capsys)[0] == 0
    assert np.array_equal(pixels(part), pixels(whole))


def test_ctrl_c_in_the_last_step_writes_the_checkpoint_it_promises(
    model_files, tmp_path, capsys, monkeypatch, whole
):
    """A SIGINT during the last step: the message promises a checkpoint, so there is one (of
    the finished run) and the exit code is 130, not 0; resuming it writes the image."""
    from vqclip.generate.run import Run

    real = Run._forward

    def forward_with_sigint(self):
        if self.step_index == 3:  # the last of ARGS's 4 steps
            os.kill(os.getpid(), signal.SIGINT)
        return real(self)

    monkeypatch.setattr(Run, "_forward", forward_with_sigint)
    part = tmp_path / "part.png"
    code, err = generate([*ARGS, "-o", str(part)], model_files, capsys)
    assert code == 130 and "writing a checkpoint" in err and "--resume" in err, err
    assert load_run_state(tmp_path / "part.run")["step"] == 4
    monkeypatch.setattr(Run, "_forward", real)
    assert resume(tmp_path / "part.run", part, capsys)[0] == 0
    assert np.array_equal(pixels(part), whole)


def test_ctrl_c_once_the_run_is_done_says_its_image_is_written(
    model_files, tmp_path, capsys, monkeypatch
):
    import vqclip.output

    real = vqclip.output.save_image_or_rescue

    def save_after_sigint(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(vqclip.output, "save_image_or_rescue", save_after_sigint)
    out = tmp_path / "out.png"
    code, err = generate([*ARGS, "-o", str(out)], model_files, capsys)
    assert code == 0 and "writing its image" in err and "checkpoint" not in err, err
    assert out.is_file() and not (tmp_path / "out.run").exists()


def test_ctrl_c_while_the_models_load_promises_no_checkpoint(
    tiny_vqgan, tiny_clip, tmp_path, capsys
):
    from vqclip.jobs import ModelCache

    def loading(config):
        os.kill(os.getpid(), signal.SIGINT)
        return tiny_vqgan, [tiny_clip] * len(config.clip)

    out = ["-o", str(tmp_path / "o.png"), "--no-progress"]
    code = main(["generate", "x", "--model", "toy", *out], models=ModelCache(loader=loading))
    err = capsys.readouterr().err
    assert code == 130 and "stopping before the first step" in err, err
    assert "checkpoint" not in err and not (tmp_path / "o.run").exists()


def test_ctrl_c_during_a_start_drawn_from_the_prior_stops_after_its_round(
    tmp_path, capsys, monkeypatch
):
    """`--init prior` draws the start while the run is built (minutes at real sizes): a Ctrl-C
    then ends the draw after the round under way, not after all of them."""
    draws = sigint_at_the_first_draw(monkeypatch)
    out = ["-o", str(tmp_path / "o.png"), "--no-progress", "-i", "3"]
    code = main(["generate", "a red circle", "--model", "toy", "--init", "prior", *out])
    err = capsys.readouterr().err
    assert code == 130 and "stopped before the first step; nothing to keep" in err, err
    assert len(draws) <= 2  # the round under way (its draw for the guides); 16+ rounds left
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.run").exists()


def test_interrupt_while_models_load_is_a_clean_exit(tmp_path, capsys):
    from vqclip.jobs import ModelCache

    def interrupted(config):
        raise KeyboardInterrupt

    out = ["-o", str(tmp_path / "o.png")]
    code = main(["generate", "x", "--model", "toy", *out], models=ModelCache(loader=interrupted))
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_ctrl_c_while_modules_import_is_noted_and_acted_on_after():
    """An interrupt inside `import torch` can leave a half-imported module or be swallowed by C
    code: during the imports it is only noted, and raised once they are done."""
    from vqclip.cli import _ImportGuard

    # Python's own handler, as in a terminal (a shell's background job inherits SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        guard = _ImportGuard()
        os.kill(os.getpid(), signal.SIGINT)  # would raise here without the guard
        with pytest.raises(KeyboardInterrupt):
            guard.release()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_unwritable_output_at_the_end_rescues_the_image(model_files, tmp_path, capsys, monkeypatch):
    """The output folder fills up during the run: the image goes to the rescue folder, the
    message says where, and the exit code says something went wrong."""
    import tempfile

    import vqclip.output

    out = tmp_path / "full" / "out.png"
    real = vqclip.output.atomic_write_bytes

    def full_disk(path, data):
        if out.parent in path.parents:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(vqclip.output, "atomic_write_bytes", full_disk)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    code, err = generate(["x", "-i", "2", "-sd", "3", "-o", str(out)], model_files, capsys)
    assert code == 1 and "No space left on device" in err
    rescued = list((tmp_path / "tmp" / "vqclip-rescued").glob("*out.png"))
    assert len(rescued) == 1 and str(rescued[0]) in err
    assert read_image_metadata(rescued[0])["config"]["seed"] == 3


def _special_file(kind: str, tmp_path) -> str:
    """A path in tmp_path that is no place for an image (never the machine's own /dev/full: a
    regression that wrote there would replace the device node, as root)."""
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "full":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except PermissionError:
            pytest.skip("making a device node needs root")
    elif kind == "folder":
        path.mkdir()
    else:
        return kind
    return str(path)


@pytest.mark.parametrize("kind", ["full", "fifo", "folder", "x.gif", "noext"])
def test_outputs_that_cannot_hold_an_image_are_refused_before_the_run(
    model_files, tmp_path, capsys, monkeypatch, kind
):
    from vqclip.jobs import ModelCache

    output = _special_file(kind, tmp_path)
    fixed = ["-cuts", "4", "-s", "32", "32", "--no-progress", *model_files]
    code = main(["generate", "x", "-o", output, *fixed], models=ModelCache(loader=pytest.fail))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert output in err


def test_checkpoint_that_cannot_be_written_is_a_warning(model_files, tmp_path, capsys):
    out = tmp_path / "o.png"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the checkpoint folder should be")
    args = ["x", "-i", "2", "--checkpoint-every", "1", "--checkpoint-dir", str(blocked / "run")]
    code, err = generate([*args, "-o", str(out)], model_files, capsys)
    assert code == 0, err
    assert "could not write the run checkpoint" in err and out.is_file()


def _checkpoint(model_files, tmp_path, capsys) -> tuple:
    """A run stopped after 2 of 4 steps; its checkpoint folder."""
    run_dir = tmp_path / "ck"
    args = [*ARGS[:2], "2", *ARGS[3:], "--checkpoint-every", "1", "--checkpoint-dir", str(run_dir)]
    assert generate([*args, "-o", str(tmp_path / "ck.png")], model_files, capsys)[0] == 0
    return run_dir, load_run_state(run_dir)


def test_corrupted_checkpoint_is_refused(model_files, tmp_path, capsys):
    run_dir, _ = _checkpoint(model_files, tmp_path, capsys)
    path = run_dir / STATE_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\x00" * 16
    path.write_bytes(bytes(data))
    code, err = resume(run_dir, tmp_path / "r.png", capsys)
    assert code == 2 and "corrupted" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s: s.update(rng=torch.zeros(3, dtype=torch.uint8)), "does not fit"),
        (lambda s: s.pop("optimiser"), "lacks ['optimiser']"),
        (lambda s: s.update(z=torch.zeros(1, 2, 3)), "shape"),
        (lambda s: s.update(step="two"), "step"),
        (lambda s: s["config"].update(iterations="many"), "iterations"),
    ],
)
def test_checkpoint_whose_state_does_not_fit_is_refused(
    model_files, tmp_path, capsys, tamper, message
):
    run_dir, state = _checkpoint(model_files, tmp_path, capsys)
    tamper(state)
    save_run_state(state, run_dir)
    code, err = resume(run_dir, tmp_path / "r.png", capsys)
    assert code == 2 and message in err and "Traceback" not in err


def _png_with(tmp_path, text: str):
    path = tmp_path / "settings.png"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("vqclip", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"step": 3}), "no 'config'"),
        (json.dumps({"config": {"prompts": ["x"], "size": "abc"}}), "size='abc'"),
        (json.dumps({"config": {"prompts": ["x"], "iterations": "10"}}), "iterations='10'"),
        (json.dumps({"config": {"prompts": ["x"], "seed": 1.5}}), "seed=1.5"),
        (json.dumps({"config": {"prompts": 5}}), "prompts=5"),
        (json.dumps({"config": {"prompts": ["x"], "clip": None}}), "clip=None"),
        (json.dumps({"config": {"prompts": ["x"], "augments": 3}}), "augments=3"),
        (json.dumps({"config": {"prompts": ["x"], "colour": "red"}}), "unknown settings"),
    ],
)
def test_from_png_with_bad_settings_is_a_clear_error(tmp_path, capsys, text, message):
    png = _png_with(tmp_path, text)
    code = main(["generate", "--from-png", str(png), "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_from_png_applies_explicit_flags_on_top(model_files, tmp_path, capsys):
    first = tmp_path / "first.png"
    assert generate(["x", "-i", "2", "-sd", "5", "-o", str(first)], model_files, capsys)[0] == 0
    again = tmp_path / "again.png"
    code = main(["generate", "--from-png", str(first), "-i", "3", "-sd", "9", "-o", str(again)])
    assert code == 0, capsys.readouterr().err
    config = read_image_metadata(again)["config"]
    assert (config["iterations"], config["seed"], config["cutn"]) == (3, 9, 4)


def test_prompt_syntax_errors_come_before_the_models_load(tmp_path, capsys):
    from vqclip.jobs import ModelCache

    argv = ["generate", "a cat:heavy:1:2|", "-o", str(tmp_path / "o.png")]
    code = main(argv, models=ModelCache(loader=pytest.fail))
    err = capsys.readouterr().err
    assert code == 2 and "'|'" in err


def test_a_text_file_as_vqgan_names_the_config_flag(tmp_path, capsys):
    notes = tmp_path / "model.txt"
    notes.write_text("hello")
    code = main(["generate", "x", "--vqgan", str(notes), "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--vqgan-config" in err


def test_jpeg_output_carries_its_settings_and_files_get_normal_permissions(
    model_files, tmp_path, capsys
):
    old = os.umask(0o022)
    try:
        out = tmp_path / "o.jpg"
        code, err = generate(["x", "-i", "1", "-sd", "4", "-o", str(out)], model_files, capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    with Image.open(out) as img:
        assert img.format == "JPEG"
    assert read_image_metadata(out)["config"]["seed"] == 4
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_a_prompt_longer_than_the_context_is_cut_with_a_warning(model_files, tmp_path, capsys):
    long = " ".join(["lighthouse"] * 100)
    code, err = generate([long, "-i", "1", "-o", str(tmp_path / "o.png")], model_files, capsys)
    assert code == 0 and "warning" in err and "it was cut to" in err


def test_toy_pair_settings_name_no_installed_paths(tmp_path, capsys):
    out = tmp_path / "toy.png"
    code = main(["generate", "a red circle", "--model", "toy", "-i", "1", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    config = read_image_metadata(out)["config"]
    assert config["vqgan"] == "toy_vqgan" and config["clip"] == ["toy_clip_a", "toy_clip_b"]
    assert "site-packages" not in json.dumps(config) and "/src/" not in json.dumps(config)


def test_missing_weights_lists_every_file_and_suggests_the_toy_pair(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VQCLIP_OFFLINE", "1")
    code = main(["generate", "x", "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "vqgan_imagenet_f16_16384" in err and "clip_vit_b32_openai" in err
    assert "--model toy" in err
