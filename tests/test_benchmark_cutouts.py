"""benchmarks/cutouts.py: its timings are figures, not tests; what is tested is that the
interleaved comparison with another checkout loads that checkout's own modules and compares
the same draws."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cutouts.py"
TINY = ["--size", "32", "--cutn", "2", "--cut-size", "16", "--runs", "1"]


def _run(*args):
    if not SCRIPT.is_file():
        pytest.skip("benchmarks/cutouts.py is not in this checkout")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_checkout_against_its_own_source_gives_the_same_pixels():
    record = _run("--baseline", str(ROOT / "src"))
    assert record["max_pixel_diff"] == 0.0
    assert record["baseline_ms"] > 0 and record["this_ms"] > 0 and record["speedup"] > 0


def test_a_changed_baseline_is_what_gets_compared(tmp_path):
    # A baseline whose cutouts add 1 to every pixel: the comparison must see its pixels.
    src = tmp_path / "src"
    package = src / "vqclip" / "generate"
    package.mkdir(parents=True)
    for name in ("augments.py", "cutouts.py"):
        text = (ROOT / "src" / "vqclip" / "generate" / name).read_text(encoding="utf-8")
        if name == "cutouts.py":
            text = text.replace("return self.cut_with_boxes(images, generator)[0]",
                                "return self.cut_with_boxes(images, generator)[0] + 1")  # fmt: skip
        (package / name).write_text(text, encoding="utf-8")
    assert _run("--baseline", str(src))["max_pixel_diff"] == pytest.approx(1.0, abs=1e-5)


def test_a_folder_without_vqclip_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--baseline", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "no vqclip/generate/cutouts.py" in done.stderr
