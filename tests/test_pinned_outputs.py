"""Stored slices of a toy run: a change that alters every image fails here even when it stays
deterministic (diffusers' habit).

The values come from `Run` on the shipped toy pair, CPU, fp32, one thread, seed 0. They agree
to ~5e-4 across CPU kinds (AMX, AVX-512 and AVX2 kernels were compared, the last two emulated
with ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA), so the tolerances are 2e-3 on pixels and 1e-4
relative on losses. When a change is meant to alter images (new defaults, another cutout
draw), rerun this test's `_run()` by hand, paste the new values, and say so in the commit.

The toy pair's final redraw by its token prior is turned off here: it draws discrete tokens, and
a last-bit difference between CPU kernels flips a draw (on AVX2 kernels the pixels then move by
0.13), so the slice pins the loop's continuous part, which agrees across kinds.
"""

import pytest
import torch

from vqclip.generate.config import build_config
from vqclip.generate.run import Run
from vqclip.prior.plugin import extensions_for

LOSSES = [3.1285884380340576, 3.008241891860962, 3.102759838104248]
PIXELS = [  # image[0, :, 30, 28:32]
    [0.5094910264015198, 0.4329770803451538, 0.4036867618560791, 0.40159666538238525],
    [0.47930386662483215, 0.45980191230773926, 0.4620007574558258, 0.45203596353530884],
    [0.4032447636127472, 0.45466381311416626, 0.4769926965236664, 0.49425214529037476],
]
MEAN = 0.5195059776306152


def _run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = build_config(
            {"prompt": "a red circle on a blue background", "model": "toy", "iterations": 3}
            | {"prior_final_passes": 0}
            | {"seed": 0, "threads": 1, "precision": "fp32", "device": "cpu", "cutn": 8}
            | {"size": [64, 64]}
        )
        run = Run(config, extensions=extensions_for(config))
        losses = [float(step.total[0]) for step in run.iterate()]
        return losses, run.image()[0]
    finally:
        torch.set_num_threads(threads)


def test_a_toy_run_matches_its_stored_slice():
    losses, image = _run()
    assert losses == pytest.approx(LOSSES, rel=1e-4)
    assert torch.allclose(image[:, 30, 28:32], torch.tensor(PIXELS), atol=2e-3)
    assert float(image.mean()) == pytest.approx(MEAN, abs=2e-3)
