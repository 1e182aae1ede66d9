"""A short chaos soak (benchmarks/chaos_soak.py): random SIGKILL/SIGTERM/SIGINT of `vqclip batch`
and `vqclip serve` while toy jobs run; every accepted job ends done, pixel-equal to an unbroken
run. The 10-minute figures are in the closing notes and docs/web.md."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parents[1] / "benchmarks" / "chaos_soak.py"


@pytest.mark.parametrize("door", ["batch", "serve"])
def test_a_short_soak_loses_nothing(tmp_path, door):
    report = tmp_path / "soak.json"
    argv = ["--door", door, "--minutes", "0.3", "--every", "3", "--jobs", "3"]
    argv += ["--iterations", "12", "--work", str(tmp_path / "work"), "--json", str(report)]
    subprocess.run([sys.executable, str(SCRIPT), *argv], check=True, timeout=900)
    figures = json.loads(report.read_text())
    assert sum(figures["kills"].values()) >= 1
    assert figures["lost"] == 0 and figures["done"] == figures["accepted"] >= 1
    assert figures["equal_to_unbroken"] == figures["done"]
