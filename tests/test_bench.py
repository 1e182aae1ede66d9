import json
import subprocess
import sys

import pytest
import torch

from vqclip.bench import STAGES, BenchConfig, format_table, matrix_peak_flops, run_bench
from vqclip.errors import ConfigError


def test_bench_reports_speed_memory_flops_and_stages(tiny_vqgan, tiny_clip):
    config = BenchConfig(
        size=(32, 32),
        cutn=4,
        device="cpu",
        precision="fp32",
        steps=3,
        warmup=1,
        clip=("ViT-B-32",),
        peak_size=256,
        peak_seconds=0.05,
    )
    result = run_bench(config, models=(tiny_vqgan, [tiny_clip]))
    assert len(result["s_per_it_all"]) == 3
    assert result["it_per_s"] == pytest.approx(1 / result["s_per_it"])
    assert result["flops_per_it"] > 0 and result["peak_mem_mb"] > 0
    assert set(result["stage_s"]) == set(STAGES)
    assert all(v > 0 for v in result["stage_s"].values())
    # The stages partition the step: their sum is the mean step time (median is close to it).
    mean = sum(result["s_per_it_all"]) / 3
    assert sum(result["stage_s"].values()) == pytest.approx(mean, rel=0.05)
    json.dumps(result)
    assert "32x32" in format_table([result])
    assert result["cpu"]["best"] in result["device_name"]  # a CPU's kind is in its name
    # The share of this machine's own bf16 matrix peak goes with the FLOP rate it came from.
    assert result["peak_bf16_tflops"] > 0
    assert 0 < result["peak_fraction"] <= 1.5
    assert result["peak_fraction"] == pytest.approx(
        result["achieved_tflops"] / result["peak_bf16_tflops"]
    )
    assert f"{100 * result['peak_fraction']:.0f}% of" in format_table([result])


def test_matrix_peak_probe_counts_the_products_it_ran(monkeypatch):
    calls = []
    real_matmul = torch.Tensor.__matmul__

    def counting(a, b):
        calls.append(a.shape)
        return real_matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", counting)
    flops = matrix_peak_flops(torch.device("cpu"), size=64, seconds=0.05)
    assert all(shape == (64, 64) for shape in calls) and len(calls) > 2
    # flops = 2 * 64^3 * (timed products) / elapsed, with elapsed >= 0.05 s
    assert 0 < flops <= 2 * 64**3 * (len(calls) - 2) / 0.05


def test_bench_rejects_a_probe_without_size_or_time():
    with pytest.raises(ConfigError, match="peak_size"):
        BenchConfig(peak_seconds=0)


def test_bench_rejects_unknown_clip():
    with pytest.raises(ConfigError, match="ViT-X"):
        BenchConfig(clip=("ViT-X",))


def test_bench_command_prints_a_table_and_writes_json(models, tmp_path, capsys):
    from vqclip.cli import main

    out = tmp_path / "r.json"
    code = main(
        [
            "bench",
            "-s",
            "32",
            "32",
            "-cuts",
            "2",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--peak-size",
            "256",
            "--peak-seconds",
            "0.05",
            "--json",
            str(out),
        ],
        models=models,
    )
    assert code == 0
    assert "| 32x32 | 2 | 1 |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert {"s_per_it", "it_per_s", "peak_mem_mb", "flops_per_it", "stage_s"} <= set(result)
    assert result["threads"] == 1 and 0 < result["peak_fraction"] <= 1.5


def test_bench_takes_generates_declared_flags_and_checks(capsys):
    from vqclip.cli import main

    assert main(["bench", "-cuts", "0", "--device", "cpu"]) == 2
    assert "cutn=0: must be at least 1" in capsys.readouterr().err
    assert main(["bench", "--threads", "0", "--device", "cpu"]) == 2
    assert "threads=0: must be at least 1" in capsys.readouterr().err


def test_bench_rejects_a_prior_it_cannot_time():
    with pytest.raises(ConfigError, match="bench times MaskGIT's and aMUSEd's priors"):
        BenchConfig(prior="vqgan_faceshq")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prior", "side", "precision"),
    [("maskgit_imagenet_256", 32, "fp32"), ("amused_256", 64, "bf16")],
)
def test_bench_times_a_prior_s_pair_and_one_redraw(prior, side, precision):
    """Random weights at the prior's real size (MaskGIT's transformer; aMUSEd's U-ViT, VQ model
    and text tower), a tiny image keeping it quick."""
    config = BenchConfig(
        prior=prior, size=(side, side), cutn=2, steps=1, warmup=0,
        device="cpu", precision=precision, peak_size=64, peak_seconds=0.05,
    )  # fmt: skip
    result = run_bench(config)
    assert result["prior"] == prior and result["redraw_s"] > 0
    assert f"one redraw by {prior} at {side}x{side}" in format_table([result])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_peak_memory_is_the_programs_own_not_its_launchers():
    # A process started by fork + exec inherits its parent's ru_maxrss: a launcher holding
    # 600 MB made every child report at least that. The bench's figure is the child's own.
    ballast = torch.ones(600 * 2**20 // 4)  # this process holds 600 MB more than the child needs
    code = (
        "import torch; from vqclip.bench import _peak_memory_mb; "
        "print(_peak_memory_mb(torch.device('cpu')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    own = float(done.stdout)
    assert 0 < own < ballast.numel() * 4 / 2**20
