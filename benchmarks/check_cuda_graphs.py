"""GPU check: the CUDA-graph step gives the same losses as the eager step (tiny random models
of the real architecture family), then times both. Run on a CUDA machine."""

import torch

from vqclip.bench import build_models
from vqclip.generate import GenerateConfig, Run


def losses(graphs: bool) -> list[float]:
    vqgan, clips = build_models(("ViT-B-32",))
    config = GenerateConfig(
        prompts=("a red circle",),
        size=(256, 256),
        cutn=32,
        seed=1,
        iterations=5,
        device="cuda",
        precision="bf16",
        cuda_graphs=graphs,
    )
    return [s.total.item() for s in Run(config, vqgan=vqgan, clips=clips).iterate()]


if __name__ == "__main__":
    eager, graphed = losses(False), losses(True)
    print("eager  ", [round(x, 5) for x in eager])
    print("graphed", [round(x, 5) for x in graphed])
    assert torch.allclose(torch.tensor(eager), torch.tensor(graphed), rtol=1e-3), "mismatch"
    print("ok: graphed losses match eager")
