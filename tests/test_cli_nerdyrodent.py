"""nerdyrodent/VQGAN-CLIP's command lines run as they are (their README and scripts, with
`--model toy` where a model would download and fewer steps and pixels), and every flag of their
generate.py reaches the option it means here."""

import importlib.util
import json
import shlex

import numpy as np
import pytest
from PIL import Image

from vqclip.cli import build_parser, main
from vqclip.cli.nerdyrodent import translate
from vqclip.output import read_image_metadata

FAST = ["--model", "toy", "-s", "32", "32", "-cuts", "2", "--no-progress"]
FAST += ["--device", "cpu", "--precision", "fp32"]

STORY = (
    "A painting of a sunflower|photo:-1 ^ a painting of a rose ^ a painting of a tulip ^ "
    "a painting of a daisy flower ^ a photograph of daffodil"
)

# (their command line, scaled down; the settings the image must carry, or the words of the
# message it must end with). The -i/-cpe/-zse figures are theirs divided by about 100.
RUNS = [
    # README "Run"
    ('-p "A painting of an apple in a fruit bowl" -i 2', {"iterations": 2}),
    # README "Multiple prompts"
    (
        '-p "A painting of an apple in a fruit bowl | psychedelic | surreal:0.5 | weird:0.25" -i 2',
        {
            "prompts": [
                "A painting of an apple in a fruit bowl | psychedelic | surreal:0.5 | weird:0.25"
            ]
        },
    ),
    (
        '-p "A picture of a bedroom with a portrait of Van Gogh" '
        '-ip "samples/VanGogh.jpg | samples/Bedroom.png" -i 2',
        {"image_prompts": ["samples/VanGogh.jpg | samples/Bedroom.png"]},
    ),
    # README "Style Transfer"
    (
        '-p "A painting in the style of Picasso" -ii samples/VanGogh.jpg -i 4 -se 2 -opt AdamW '
        "-lr 0.25",
        {"init_image": "samples/VanGogh.jpg", "init": "image", "optimiser": "adamw", "lr": 0.25},
    ),
    # README "Using the CPU"
    ('-p "A painting of an apple in a fruit bowl" -cd cpu -i 2', {"device": "cpu"}),
    # opt_tester.sh (their -d takes a value there)
    (
        '-p "A cute, smiling, Nerdy Rodent" -in pixels -o out/001-RAdam-0.1-0.5.png -opt RAdam '
        "-lr 0.1 -i 3 -se 3 -s 32 32 --seed 5 -d True -iw 1 -nps 666 -npw 0.5 -d True",
        {"optimiser": "radam", "init": "pixels", "seed": 5, "noise_prompt_seeds": [666]},
    ),
    # video_styler.sh
    (
        '-p "A painting in the style of Picasso" -ii samples/Bedroom.png -o steps/0001.png '
        "-opt AdamW -lr 0.2 -i 2 -se 2 -s 32 32 -sd 7 -d True",
        {"seed": 7, "init_image": "samples/Bedroom.png"},
    ),
    # zoom.sh, its first line (-flag=value)
    (
        '-p="A painting of a red telephone box" -opt="Adam" -lr=0.1 -i=2 -se=2 --seed=9 '
        '-o="Telephone.png"',
        {"seed": 9, "optimiser": "adam", "iterations": 2},
    ),
    # their cut methods, underscore long forms and the interpolation flags
    (
        '--prompts "a nerdy rodent" --num_cuts 3 --cut_power 0.5 --cut_method latest '
        "--learning_rate 0.2 --init_weight 0.5 --iterations 2 -ofps 60 -ifps 15",
        {"cut_method": "whole", "cut_pow": 0.5, "lr": 0.2, "init_weight": 0.5},
    ),
    # zoom.sh, its feedback line: -o is the init image, refused
    (
        '-p="A painting of a red telephone box" -opt="Adam" -i=2 --seed=9 -ii="Telephone.png" '
        '-o="Telephone.png"',
        "give another -o",
    ),
    # their optimisers that vqclip does not have
    ('-p "a rodent" -opt DiffGrad -i 2', "-opt radam"),
    ('-p "a rodent" -opt AdamP -i 2', "-opt adam"),
    # video_styler's folder mode
    ('-p "a rodent" -vsd frames', "vqclip batch"),
]


@pytest.fixture
def models(tiny_vqgan, tiny_clip, tiny_clip_b):
    """Tiny random models in the toy pair's shape (a VQGAN and two CLIPs), for speed."""
    from vqclip.jobs import ModelCache

    return ModelCache(lambda config: (tiny_vqgan, [tiny_clip, tiny_clip_b][: len(config.clip)]))


NOTES = {
    "--cut_method latest": "vqclip's closest is -cutm whole",
    "-ofps 60": "-ofps/-ifps ignored",
    "-d True": "-d is not needed",
}


def _images(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "samples").mkdir()
    for name in ("VanGogh.jpg", "Bedroom.png"):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "samples" / name)


def _output(line: str) -> str:
    words = shlex.split(line)
    for i, word in enumerate(words):
        if word.startswith("-o="):
            return word[3:]
        if word == "-o":
            return words[i + 1]
    return "output.png"


@pytest.mark.parametrize("line, expected", RUNS, ids=[f"nr{i}" for i in range(len(RUNS))])
def test_their_command_lines_run_or_name_the_vqclip_way(line, expected, models, tmp_path, capsys):
    _images(tmp_path)
    if "Telephone.png" in line and "-ii" in line:  # the feedback loop: its first image exists
        assert main(["generate", "x", "-i", "1", "-o", "Telephone.png", *FAST], models=models) == 0
        capsys.readouterr()
    code = main(["generate", *shlex.split(line), *FAST], models=models)
    err = capsys.readouterr().err
    if isinstance(expected, str):
        assert code == 2, err
        assert expected in err and "Traceback" not in err
        return
    assert code == 0, err
    config = read_image_metadata(tmp_path / _output(line))["config"]
    for name, value in expected.items():
        assert config[name] == value, name
    for flag, note in NOTES.items():
        assert (note in err) == (flag in line), note


def test_their_zoom_video_runs_the_equivalent_animate(models, tmp_path, capsys):
    line = (
        f'-p "{STORY}" -cpe 20 -zvid -i 100 -zse 5 -vl 2 -zsc 1.005 -zsx 1 -zsy -1 -opt Adagrad '
        "-lr 0.15 -se 50"
    )
    has_ffmpeg = importlib.util.find_spec("imageio_ffmpeg") is not None
    no_video = [] if has_ffmpeg else ["--no-video"]
    code = main(["generate", *shlex.split(line), *FAST, *no_video], models=models)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # Frame 0 runs the 5 steps before the first zoom, then 19 frames of 5: their 100 steps;
    # their -cpe counts steps (20 = 4 frames of 5); 20 frames in 2 s: 10 fps.
    expected = (
        f"vqclip animate '{STORY}' -o output -i 5 --steps-per-frame 5 --frames 20 --zoom 1.005 "
        "--fps 10 --shift 1 -1 -cpe 4 --model toy"
    )
    assert expected in captured.out
    assert "--optimiser adagrad" in captured.out and "--learning-rate 0.15" in captured.out
    frames = sorted((tmp_path / "output" / "frames").glob("*.png"))
    assert len(frames) == 20
    assert (tmp_path / "output" / "video.mp4").is_file() == has_ffmpeg


@pytest.mark.parametrize("flag", ["--resume", "--checkpoint-dir"])
def test_a_zoom_video_refuses_a_generate_checkpoint_before_any_work(flag, models, tmp_path, capsys):
    """-zvid runs `vqclip animate`, which has its own checkpoints: --resume r.run would have
    started a fresh animation without a word."""
    (tmp_path / "r.run").mkdir()
    argv = ["generate", "a rodent", "-zvid", "-i", "4", "-zse", "2", flag, "r.run", *FAST]
    code = main(argv, models=models)
    captured = capsys.readouterr()
    assert code == 2 and f"-zvid with {flag}" in captured.err and "Traceback" not in captured.err
    assert "same -zvid command" in captured.err and "output/" in captured.err
    assert not (tmp_path / "output").exists() and "vqclip animate" not in captured.out


def test_a_zoom_video_from_a_png_takes_the_png_settings(models, tmp_path, capsys):
    """--from-png with -zvid: the prompt, seed and other settings come from the image, as they
    do without -zvid, instead of a request for a prompt the image holds."""
    made = ["generate", "a green star", "-i", "2", "-sd", "5", "-o", "star.png", *FAST]
    assert main([*made, "-cutp", "0.5"], models=models) == 0
    capsys.readouterr()
    argv = ["generate", "--from-png", "star.png", "-zvid", "-i", "4", "-zse", "2", "-o", "film.png"]
    argv += ["--no-progress", "--no-video"]
    code = main(argv, models=models)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "--from-png star.png" in captured.out
    stored = json.loads((tmp_path / "film" / "animation.json").read_text())["config"]
    assert stored["prompts"] == ["a green star"] and stored["seed"] == 5
    assert stored["cut_pow"] == 0.5 and stored["iterations"] == 2  # frame 0: the first zoom's
    assert len(list((tmp_path / "film" / "frames").glob("*.png"))) == 2


def test_video_length_without_a_video_is_noted_as_ignored(models, tmp_path, capsys):
    code = main(["generate", "a rodent", "-i", "2", "-vl", "10", *FAST], models=models)
    err = capsys.readouterr().err
    assert code == 0 and "-vl ignored" in err
    assert not (tmp_path / "output").exists()


def test_video_length_sets_the_frames_of_the_progress_video(tmp_path):
    args = build_parser().parse_args(["generate", "x", "-vid", "-vl", "2", "-i", "600"])
    notes = translate(args)
    assert args.frame_every == 10  # 60 frames: 2 s at 30 fps
    assert any("--frame-every" in n for n in notes)


# Every flag of their generate.py (its argparse list), a value, and the option it must set.
THEIR_FLAGS = [
    ("-p", "'a b'", "prompts", ["a b"]),
    ("--prompts", "'a b'", "prompts", ["a b"]),
    ("-ip", "x.png", "image_prompts", ["x.png"]),
    ("--image_prompts", "x.png", "image_prompts", ["x.png"]),
    ("-i", "7", "iterations", 7),
    ("--iterations", "7", "iterations", 7),
    ("-se", "5", "save_every", 5),
    ("--save_every", "5", "save_every", 5),
    ("-s", "48 32", "size", [48, 32]),
    ("--size", "48 32", "size", [48, 32]),
    ("-ii", "x.png", "init_image", "x.png"),
    ("--init_image", "x.png", "init_image", "x.png"),
    ("-in", "gradient", "init", "gradient"),
    ("--init_noise", "pixels", "init", "pixels"),
    ("-iw", "0.5", "init_weight", 0.5),
    ("--init_weight", "0.5", "init_weight", 0.5),
    ("-m", "ViT-B/16", "clip", ["ViT-B/16"]),
    ("--clip_model", "ViT-B/16", "clip", ["ViT-B/16"]),
    ("-conf", "m.yaml", "vqgan_config", "m.yaml"),
    ("--vqgan_config", "m.yaml", "vqgan_config", "m.yaml"),
    ("-ckpt", "m.ckpt", "vqgan", "m.ckpt"),
    ("--vqgan_checkpoint", "m.ckpt", "vqgan", "m.ckpt"),
    ("-nps", "1 2", "noise_prompt_seeds", [1, 2]),
    ("--noise_prompt_seeds", "1 2", "noise_prompt_seeds", [1, 2]),
    ("-npw", "0.5 1", "noise_prompt_weights", [0.5, 1.0]),
    ("--noise_prompt_weights", "0.5 1", "noise_prompt_weights", [0.5, 1.0]),
    ("-lr", "0.2", "lr", 0.2),
    ("--learning_rate", "0.2", "lr", 0.2),
    ("-cutm", "nrupdated", "cut_method", "nrupdated"),
    ("--cut_method", "Original", "cut_method", "original"),
    ("-cuts", "9", "cutn", 9),
    ("--num_cuts", "9", "cutn", 9),
    ("-cutp", "2", "cut_pow", 2.0),
    ("--cut_power", "2", "cut_pow", 2.0),
    ("-sd", "4", "seed", 4),
    ("--seed", "4", "seed", 4),
    ("-opt", "RMSprop", "optimiser", "rmsprop"),
    ("--optimiser", "Adamax", "optimiser", "adamax"),
    ("-o", "x.png", "output", "x.png"),
    ("--output", "x.png", "output", "x.png"),
    ("-vid", None, "video", True),
    ("--video", None, "video", True),
    ("-zvid", None, "nr_zoom_video", True),
    ("--zoom_video", None, "nr_zoom_video", True),
    ("-zs", "3", "nr_zoom_start", 3),
    ("--zoom_start", "3", "nr_zoom_start", 3),
    ("-zse", "3", "nr_zoom_save_every", 3),
    ("--zoom_save_every", "3", "nr_zoom_save_every", 3),
    ("-zsc", "1.1", "nr_zoom_scale", 1.1),
    ("--zoom_scale", "1.1", "nr_zoom_scale", 1.1),
    ("-zsx", "2", "nr_zoom_shift_x", 2),
    ("--zoom_shift_x", "2", "nr_zoom_shift_x", 2),
    ("-zsy", "2", "nr_zoom_shift_y", 2),
    ("--zoom_shift_y", "2", "nr_zoom_shift_y", 2),
    ("-cpe", "3", "change_prompt_every", 3),
    ("--change_prompt_every", "3", "change_prompt_every", 3),
    ("-vl", "3", "nr_video_length", 3.0),
    ("--video_length", "3", "nr_video_length", 3.0),
    ("-ofps", "30", "nr_output_video_fps", 30.0),
    ("--output_video_fps", "30", "nr_output_video_fps", 30.0),
    ("-ifps", "15", "nr_input_video_fps", 15.0),
    ("--input_video_fps", "15", "nr_input_video_fps", 15.0),
    ("-d", None, "nr_deterministic", True),
    ("--deterministic", "True", "nr_deterministic", True),
    ("-aug", "Ji Sh", "augments", ["Ji", "Sh"]),
    ("--augments", "ji sh", "augments", ["Ji", "Sh"]),
    ("-vsd", "frames", "nr_video_style_dir", "frames"),
    ("--video_style_dir", "frames", "nr_video_style_dir", "frames"),
    ("-cd", "cuda:1", "device", "cuda:1"),
    ("--cuda_device", "cuda:1", "device", "cuda:1"),
]

# vqclip's own short flags, which none of theirs may shadow (argparse's prefix and joined-value
# rules: `-ifps` once read as `-i fps`).
OURS = [
    ("-i", "7", "iterations", 7),
    ("-in", "pixels", "init", "pixels"),
    ("-ii", "x.png", "init_image", "x.png"),
    ("-ip", "x.png", "image_prompts", ["x.png"]),
    ("-iw", "2", "init_weight", 2.0),
    ("-b", "2", "batch_size", 2),
    ("-s", "16 16", "size", [16, 16]),
    ("-se", "2", "save_every", 2),
    ("-sd", "2", "seed", 2),
    ("-cuts", "2", "cutn", 2),
    ("-cutp", "2", "cut_pow", 2.0),
    ("-cutm", "overview", "cut_method", "overview"),
]


@pytest.mark.parametrize("flag, value, dest, parsed", THEIR_FLAGS + OURS)
def test_every_flag_of_theirs_reaches_its_option(flag, value, dest, parsed):
    from vqclip.cli import _check_joined_flags

    argv = ["generate", "a prompt", flag, *([] if value is None else shlex.split(value))]
    parser = build_parser()
    _check_joined_flags(parser, argv)
    args = parser.parse_args(argv)
    assert getattr(args, dest) == parsed
    assert args.prompt == ["a prompt"]  # nothing of the value spilled into the prompt


def test_choices_ignore_case_and_bad_ones_are_named(capsys):
    args = build_parser().parse_args(["generate", "x", "-opt", "ADAMW", "-in", "Pixels"])
    assert (args.optimiser, args.init) == ("adamw", "pixels")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "x", "-opt", "lion"])
    assert "invalid choice 'lion' (choose from adam, adamw" in capsys.readouterr().err


def test_their_flags_are_hidden_from_the_option_help_but_accepted(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--help"])
    out = capsys.readouterr().out
    starts = ("-cuts CUTN", "--clip NAME", "-cd", "-m ")
    rows = [row for row in out.splitlines() if row.lstrip().startswith(starts)]
    assert len(rows) == 2 and not any("_" in row for row in rows)  # one spelling per option
    assert "-zvid" in out and "nerdyrodent" in out  # their flags without an option here


def test_radam_runs(models):
    import torch

    from vqclip.generate.config import GenerateConfig
    from vqclip.generate.run import Run

    config = GenerateConfig(prompts=("x",), size=(32, 32), iterations=2, cutn=2, optimiser="radam")
    run = Run(config, vqgan=models.get(config)[0], clips=models.get(config)[1], device="cpu")
    before = run.z.detach().clone()
    run.run()
    assert isinstance(run.optimiser, torch.optim.RAdam)
    assert not torch.equal(before, run.z.detach())


def test_their_model_flags_load_the_files_they_name(model_files, tmp_path, capsys):
    vqgan, clip = model_files[1], model_files[3]
    line = f'-p "a rodent" -ckpt {vqgan} -m {clip} -cd cpu -i 1 -s 32 32 -cuts 2 --no-progress'
    assert main(["generate", *shlex.split(line)]) == 0, capsys.readouterr().err
    config = read_image_metadata(tmp_path / "output.png")["config"]
    assert (config["vqgan"], config["clip"], config["device"]) == (vqgan, [clip], "cpu")
    # their defaults, which their download script fills and vqclip has no reason to find
    missing = "-p rodent -conf checkpoints/vqgan_imagenet_f16_16384.yaml"
    missing += " -ckpt checkpoints/vqgan_imagenet_f16_16384.ckpt"
    args = build_parser().parse_args(["generate", *shlex.split(missing)])
    notes = translate(args)
    assert (args.vqgan, args.vqgan_config) == ("vqgan_imagenet_f16_16384", None)
    assert notes == [
        "checkpoints/vqgan_imagenet_f16_16384.ckpt is not here; using the registry's "
        "vqgan_imagenet_f16_16384 (vqclip models path vqgan_imagenet_f16_16384)"
    ]
    args = build_parser().parse_args(["generate", "x", "-ckpt", "checkpoints/mine.ckpt"])
    assert translate(args) == [] and args.vqgan == "checkpoints/mine.ckpt"  # its own error
