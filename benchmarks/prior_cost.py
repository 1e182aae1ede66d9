"""What the token prior costs at real sizes, with random weights: seconds per step of the plain
loop, of the loop with the prior's loss, of the loop resampling every step (so the difference
is one resampling), and the time of `--init prior` (one grid drawn token by token with the
key-value cache, K candidates decoded and seen by the guides).

The prior is a causal GPT of the size given by --prior-shape (default 48 layers of 1536
channels over 16384 codes and 256 positions, class-conditional: the size of taming's 1.4B
ImageNet transformer); the VQGAN is ImageNet f16 16384 and the guide CLIP ViT-B-32, all random
(speed does not depend on weight values). One JSON line per figure, then a table.

    python benchmarks/prior_cost.py --device cuda            # the README's GPU figures
    python benchmarks/prior_cost.py --device cpu --size 64 --cutn 4 --prior-shape 2,64,2 --steps 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(run, device: torch.device, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        run.step()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        run.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prior-shape", default="48,1536,16", help="layers,channels,heads")
    parser.add_argument("--candidates", default="1,4", help="--prior-candidates to time init at")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()

    from vqclip.bench import PROMPT, _device_name, build_models
    from vqclip.generate import GenerateConfig, Run
    from vqclip.prior.io import Condition, TokenPrior
    from vqclip.prior.plugin import extensions_for
    from vqclip.prior.transformer import TokenTransformer, TransformerConfig

    layers, channels, heads = (int(v) for v in args.prior_shape.split(","))
    vqgan, clips = build_models(("ViT-B-32",))
    gpt_config = TransformerConfig(
        vocab_size=16384, block_size=256, n_layer=layers, n_head=heads, n_embd=channels
    )
    gpt = TokenTransformer(gpt_config).eval().requires_grad_(False)
    params = sum(p.numel() for p in gpt.parameters())
    prior = TokenPrior(gpt, Condition("class", n_classes=1000), "random")
    base = GenerateConfig(
        prompts=(PROMPT,),
        size=(args.size, args.size),
        cutn=args.cutn,
        clip=("ViT-B-32",),
        device=args.device,
        precision=args.precision,
        iterations=1000,
        seed=0,
    )
    variants = {
        "plain": {},
        "prior loss": {"prior": "random", "prior_weight": 1.0, "prior_class": 0},
        "resample every step": {
            "prior": "random",
            "prior_weight": 0.0,
            "prior_class": 0,
            "prior_resample_every": 1,
        },
    }
    results = []
    device = None
    for label, changes in variants.items():
        config = base.replace(**changes)
        extensions = extensions_for(config, prior=prior)
        run = Run(config, vqgan=vqgan, clips=clips, extensions=extensions)
        device = run.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = timed_steps(run, device, args.warmup, args.steps)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        results.append(
            {"what": label, "s": statistics.median(times), "all": times, "peak_mb": peak}
        )
        print(json.dumps(results[-1]), flush=True)
        del run
    for k in (int(v) for v in args.candidates.split(",")):
        config = base.replace(prior="random", prior_class=0, init="prior", prior_candidates=k)
        times = []
        for _ in range(2):  # the first also builds the kernels; the second is reported
            sync(device)
            start = time.perf_counter()
            Run(config, vqgan=vqgan, clips=clips, extensions=extensions_for(config, prior=prior))
            sync(device)
            times.append(time.perf_counter() - start)
        results.append(
            {
                "what": f"init prior, {k} candidates (Run built)",
                "s": times[-1],
                "all": times,
                "peak_mb": None,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    start = time.perf_counter()
    Run(base, vqgan=vqgan, clips=clips)
    sync(device)
    results.append(
        {
            "what": "Run built, random init",
            "s": time.perf_counter() - start,
            "all": [],
            "peak_mb": None,
        }
    )
    head = (
        f"{_device_name(device)}, torch {torch.__version__}, {args.size}x{args.size}, cutn "
        f"{args.cutn}, ViT-B-32, precision {args.precision}; prior {layers} layers x {channels} "
        f"channels ({params / 1e9:.2f}B parameters, fp32)"
    )
    print(head)
    print("| what | seconds | peak GPU memory (MiB) |\n|---|---|---|")
    for r in results:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else ""
        print(f"| {r['what']} | {r['s']:.3f} | {peak} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"setting": head, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
