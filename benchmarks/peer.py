"""vqclip's step against nerdyrodent's VQGAN-CLIP `generate.py`, side by side, same machine.

The peer runs UNMODIFIED from a checkout on disk, arranged as its README says (nothing is
downloaded):

    VQGAN-CLIP/                    github.com/nerdyrodent/VQGAN-CLIP
    VQGAN-CLIP/CLIP/               github.com/openai/CLIP
    VQGAN-CLIP/taming-transformers/ github.com/CompVis/taming-transformers

with its own interpreter (`--python`, a venv with torch, torchvision and the peer's
dependencies; see docs/performance.md). Both sides use the same architectures with random
weights, which this script writes to a temporary folder first: VQGAN ImageNet f16 16384 as a
taming checkpoint ({"state_dict": ...} .ckpt with taming's key names, and its model YAML whose
loss is taming's weightless DummyLoss, so no LPIPS/VGG weights are needed) and CLIP ViT-B/32 in
OpenAI's names and form (fp16 tensors in a TorchScript archive, as OpenAI ships it), which the
peer's `clip.load(path, jit=False)` rebuilds with `build_model`. They are vqclip's own models
saved as they are: vqclip's VQGAN and CLIP use taming's and OpenAI's names, and a check in the
peer's interpreter loads them into taming's VQModel and OpenAI's CLIP strictly before anything
is timed (taming's own loader uses strict=False and would silently keep random weights under a
wrong name).

For each size, and alternating over `--reps` repetitions (the order flips every repetition, so
a drift in the machine's load hits both sides alike), it runs

- the peer: `generate.py -p ... -i N -s W H -cuts C -m CLIP.pt -conf VQGAN.yaml -ckpt
  VQGAN.ckpt -se N+1 -sd 0 -cd DEVICE -o OUT.png`, as a subprocess in the checkout;
- `vqclip bench -s W H -cuts C --threads T --device DEVICE --timed-steps S --warmup W
  [--precision P] --json FILE`, as a subprocess, once per `--precision` (`auto`, vqclip's
  default: bf16 on a CPU with native bf16, and `fp32`; `auto` is skipped where it means fp32).

Both get the same thread count: `--threads T` for vqclip, OMP_NUM_THREADS=T and
MKL_NUM_THREADS=T for the peer (torch reads them at start). With `--device cpu` the peer also
gets CUDA_VISIBLE_DEVICES="" so that `clip.load` keeps CLIP in fp32 on the CPU. OMP_WAIT_POLICY
is left to each side unless `--omp-wait-policy` sets it for both: the peer's libgomp then spins,
and vqclip (vqclip.omp) spins on a quiet machine but lets idle threads sleep where other
processes use the CPUs; the JSON lines record vqclip's choice and the script warns when it
slept, since the peer's spinning threads run several times slower beside another job.

How the peer's steps are timed. The peer prints a tqdm counter to stderr ("1it [...]", "2it
[...]"), refreshed and flushed after every step that takes longer than tqdm's 0.1 s
`mininterval`. This script reads the peer's stderr (stdout merged in) unbuffered and stamps each
counter value with the time it arrived (the first arrival of each value). Its loop runs
`train(i)` for i = 0..N and prints counter i+1 after `train(i)`; so the gap between counters i
and i+1 is exactly step i, with no start-up in it (imports, model loading, prompt encoding: all
before counter 0; the i=0 step's extra decode and PNG save for its first check-in, since `-se
N+1` puts no other check-in inside the run, falls before counter 1). The first `--warmup` steps
(at least 1) are dropped, steps warmup..N-1 are timed (the last step, N, ends the run without a
counter), and the median over them is reported like `vqclip bench`'s median: N = warmup + steps.
If tqdm skipped a counter (steps faster than 0.1 s, e.g. on a GPU), a gap of k counters counts
as k steps of 1/k of it. On a GPU the peer never synchronises inside a step, so its per-step
gaps can run ahead of the device; the mean over the timed window (`s_per_it_mean`) is then the
figure to read, with a larger `--steps`. Timing from the stderr stamps, rather than from two
runs of different lengths, needs one run per measurement and is not disturbed by the start-up's
variance (tens of seconds of imports and loading on a busy machine).

Peak memory: the peak resident set of each child process, from `os.wait4` (the child's own
rusage, not RUSAGE_CHILDREN's maximum over all children), the same measure for both sides; on
a CPU it includes the peer's checkpoint loading. A child's `ru_maxrss` starts from its
launcher's resident set at the fork, so this script writes the random weights in a separate
process and stays small itself (about 0.3 GB with torch imported, below either side's peak);
until 2026-12-07 it wrote them itself, held 1.4 GB, and every vqclip figure at 128/8 read
1.4 GB where the bench's own peak was 1.2 GB. `vqclip bench`'s own `peak_mem_mb` (VmHWM, the
program's own high-water mark) is in the JSON lines too. On a GPU these are host figures; GPU
memory is not compared.

Output: one JSON line per run (stdout), then one JSON line per size and vqclip precision with
the medians over the repetitions, and a Markdown table with s/it, peak MB and the ratios
peer/vqclip (above 1: vqclip is faster / smaller).

    python benchmarks/peer.py --peer /path/to/VQGAN-CLIP --python /path/to/peer-venv/bin/python
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

PROMPT = "a watercolour painting of a lighthouse at dawn"
CLIP_FILE = "ViT-B-32.pt"
VQGAN_CKPT = "vqgan_imagenet_f16_16384.ckpt"
VQGAN_YAML = "vqgan_imagenet_f16_16384.yaml"

# torch >= 2.0 removed torch._six, which taming/data/utils.py (imported by taming's main.py,
# which its models import) still reads. This sitecustomize, put first on the peer's PYTHONPATH,
# supplies it only where torch has none: the peer's sources stay as published.
TORCH_SIX_SHIM = '''\
"""Written by vqclip's benchmarks/peer.py: torch._six for taming-transformers on torch >= 2."""
import importlib.abc
import importlib.util
import sys


class _TorchSix(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "torch._six" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.string_classes = (str, bytes)
        module.int_classes = int
        module.inf = float("inf")
        module.nan = float("nan")


sys.meta_path.append(_TorchSix())  # last: a torch that has torch._six keeps its own
'''

# Run in the peer's interpreter, in its checkout: taming's VQModel from the YAML, the
# checkpoint loaded strictly (less the loss's keys, which DummyLoss does not have), and OpenAI's
# clip.load, whose build_model loads strictly. Prints one JSON line with the versions.
PEER_CHECK = """\
import json, sys
sys.path.append("taming-transformers")
import torch
from omegaconf import OmegaConf
from taming.models import vqgan
from CLIP import clip
import kornia
config = OmegaConf.load(sys.argv[1])
model = vqgan.VQModel(**config.model.params)
sd = torch.load(sys.argv[2], map_location="cpu")["state_dict"]
result = model.load_state_dict(sd, strict=False)
missing = [k for k in result.missing_keys if not k.startswith("loss.")]
if missing or result.unexpected_keys:
    sys.exit(f"VQGAN names differ from taming's: missing {missing[:5]}, "
             f"unexpected {result.unexpected_keys[:5]}")
perceptor = clip.load(sys.argv[3], jit=False, device="cpu")[0]
print(json.dumps({"torch": torch.__version__, "kornia": kornia.__version__,
                  "clip_input_resolution": perceptor.visual.input_resolution,
                  "vqgan_params": sum(p.numel() for p in model.parameters())}))
"""

COUNTER = re.compile(r"^\s*(\d+)it \[")


def write_weights(folder: Path, vqgan=None, clip=None) -> dict[str, Path]:
    """Random weights of the real architectures in the peer's formats, into `folder`:
    the taming .ckpt + YAML and OpenAI's CLIP state dict. `vqgan`/`clip` (vqclip models)
    replace the real sizes (tests)."""
    from vqclip.bench import build_models
    from vqclip.vqgan.io import save_taming

    if vqgan is None or clip is None:
        vqgan, clips = build_models(("ViT-B-32",))  # ImageNet f16 16384, ViT-B/32, seed 0
        clip = clips[0]
    paths = {
        "ckpt": folder / VQGAN_CKPT,
        "yaml": folder / VQGAN_YAML,
        "clip": folder / CLIP_FILE,
    }
    save_taming(vqgan, paths["ckpt"], paths["yaml"])
    # OpenAI's names, in fp16, in a TorchScript archive as OpenAI ships them (clip.load casts
    # to fp32 on a CPU). Not a plain state dict: clip.load tries torch.jit.load first, which
    # reads the whole open file, and its fallback torch.load then starts at the file's end.
    state_dict = {k: v.detach().to(torch.float16) for k, v in clip.state_dict().items()}
    with warnings.catch_warnings():  # torch.jit's deprecation notices: the format is OpenAI's
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torchscript_weights(state_dict), paths["clip"])
    return paths


def torchscript_weights(state_dict: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    """A scripted module whose state_dict() is `state_dict`: a tree of empty modules holding
    the tensors under their dotted names (no code; `build_model` reads only the tensors)."""
    root = torch.nn.Module()
    for key, value in state_dict.items():
        *path, name = key.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        module.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))
    return torch.jit.script(root)


def _read_counters(stream, stamps: dict[int, float], log: list[bytes]) -> None:
    """Stamp each tqdm counter value with the time it first arrived; keep all bytes."""
    buffer = b""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        now = time.perf_counter()
        log.append(chunk)
        buffer += chunk
        *parts, buffer = re.split(rb"[\r\n]", buffer)
        for part in parts:
            match = COUNTER.match(part.decode("utf-8", "replace"))
            if match:
                stamps.setdefault(int(match.group(1)), now)


def _wait(proc: subprocess.Popen) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of `proc` itself, from wait4."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # KiB on Linux


def step_times(stamps: dict[int, float], warmup: int) -> list[float]:
    """Per-step seconds from the counters' arrival times: the gap between counters i and i+1
    is step i; steps before `warmup` are dropped; a gap over k counters is k steps."""
    ns = sorted(n for n in stamps if n >= warmup)
    times = []
    for a, b in itertools.pairwise(ns):
        times.extend([(stamps[b] - stamps[a]) / (b - a)] * (b - a))
    return times


def run_peer(args, paths: dict[str, Path], size, cutn: int, out: Path) -> dict:
    iterations = args.warmup + args.steps
    cmd = [
        args.python,
        "generate.py",
        "-p",
        PROMPT,
        "-i",
        str(iterations),
        "-s",
        str(size[0]),
        str(size[1]),
        "-cuts",
        str(cutn),
        "-m",
        str(paths["clip"]),
        "-conf",
        str(paths["yaml"]),
        "-ckpt",
        str(paths["ckpt"]),
        "-se",
        str(iterations + 1),  # a check-in (decode + PNG) only at i=0, before the timed steps
        "-sd",
        "0",
        "-cd",
        args.device,
        "-o",
        str(out),
    ]
    env = _peer_env(args, paths)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=args.peer, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    stamps: dict[int, float] = {}
    log: list[bytes] = []
    _read_counters(proc.stdout, stamps, log)  # until the peer closes its output
    proc.stdout.close()
    code, peak_mb = _wait(proc)
    wall = time.perf_counter() - start
    text = b"".join(log).decode("utf-8", "replace")
    if code != 0:
        raise SystemExit(f"the peer failed ({code}): {' '.join(cmd)}\n{text[-3000:]}")
    times = step_times(stamps, args.warmup)
    if not times:
        raise SystemExit(f"no step times in the peer's output:\n{text[-3000:]}")
    window = [n for n in sorted(stamps) if n >= args.warmup]
    return {
        "s_per_it": statistics.median(times),
        "s_per_it_mean": (stamps[window[-1]] - stamps[window[0]]) / (window[-1] - window[0]),
        "s_per_it_all": times,
        "startup_s": stamps[min(stamps)] - start,
        "peak_rss_mb": peak_mb,
        "wall_s": wall,
        "iterations": iterations,
    }


def _thread_env(args) -> dict[str, str]:
    """The environment of both sides: the same threads, the same OpenMP wait policy if given."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def _peer_env(args, paths: dict[str, Path]) -> dict[str, str]:
    env = _thread_env(args)
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(paths["shim"]), env.get("PYTHONPATH")])),
    )
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_vqclip(args, size, cutn: int, precision: str, json_path: Path) -> dict:
    cmd = [
        sys.executable,
        "-c",  # the `vqclip` command of this interpreter
        "import sys; from vqclip.cli import console; sys.argv[0] = 'vqclip'; console()",
        "bench",
        "-s",
        str(size[0]),
        str(size[1]),
        "-cuts",
        str(cutn),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--timed-steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--json",
        str(json_path),
    ]
    if precision != "auto":
        cmd += ["--precision", precision]
    env = _thread_env(args)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = proc.stdout.read().decode("utf-8", "replace")
    proc.stdout.close()
    code, peak_mb = _wait(proc)
    if code != 0:
        raise SystemExit(f"vqclip bench failed ({code}): {' '.join(cmd)}\n{text[-3000:]}")
    result = json.loads(json_path.read_text())
    return {
        "s_per_it": result["s_per_it"],
        "s_per_it_all": result["s_per_it_all"],
        "precision": result["precision"],
        "peak_rss_mb": peak_mb,
        "bench_peak_mem_mb": result["peak_mem_mb"],
        # OMP_WAIT_POLICY / GOMP_SPINCOUNT as vqclip ran (vqclip.omp chooses when unset)
        "omp_wait": result.get("omp_wait"),
        "wall_s": time.perf_counter() - start,
        "torch": result["torch"],
    }


def check_peer(args, paths: dict[str, Path]) -> dict:
    """Load the random weights in the peer's interpreter strictly; its versions."""
    proc = subprocess.run(
        [args.python, "-c", PEER_CHECK, str(paths["yaml"]), str(paths["ckpt"]), str(paths["clip"])],
        cwd=args.peer,
        env=_peer_env(args, paths),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the peer cannot load the random weights:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> tuple[tuple[int, int], int]:
    """'128x128/8' -> ((128, 128), 8)."""
    match = re.fullmatch(r"(\d+)x(\d+)/(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WxH/CUTN, e.g. 256x256/32")
    w, h, cutn = map(int, match.groups())
    return (w, h), cutn


def summarise(runs: list[dict]) -> list[dict]:
    """Medians over the repetitions: per size, the peer against each vqclip precision."""
    rows = []
    keys = sorted({(tuple(r["size"]), r["cutn"]) for r in runs})
    for size, cutn in keys:
        same = [r for r in runs if tuple(r["size"]) == size and r["cutn"] == cutn]
        peer = [r for r in same if r["side"] == "peer"]
        peer_s = statistics.median(r["s_per_it"] for r in peer)
        peer_mb = statistics.median(r["peak_rss_mb"] for r in peer)
        for precision in sorted({r["precision"] for r in same if r["side"] == "vqclip"}):
            ours = [r for r in same if r["side"] == "vqclip" and r["precision"] == precision]
            ours_s = statistics.median(r["s_per_it"] for r in ours)
            ours_mb = statistics.median(r["peak_rss_mb"] for r in ours)
            rows.append(
                {
                    "summary": True,
                    "size": list(size),
                    "cutn": cutn,
                    "reps": len(peer),
                    "peer_s_per_it": peer_s,
                    "peer_peak_rss_mb": peer_mb,
                    "vqclip_precision": precision,
                    "vqclip_s_per_it": ours_s,
                    "vqclip_peak_rss_mb": ours_mb,
                    "ratio_s_per_it": peer_s / ours_s,
                    "ratio_peak_mb": peer_mb / ours_mb,
                }
            )
    return rows


def markdown(rows: list[dict], threads: int, device: str) -> str:
    lines = [
        f"device {device}, {threads} threads; peer: generate.py in fp32; ratio = peer / vqclip",
        "",
        "| size | cutn | reps | peer s/it | peer peak MB | vqclip precision | vqclip s/it "
        "| vqclip peak MB | s/it ratio | peak MB ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size'][0]}x{r['size'][1]} | {r['cutn']} | {r['reps']} | "
            f"{r['peer_s_per_it']:.3f} | {r['peer_peak_rss_mb']:.0f} | {r['vqclip_precision']} | "
            f"{r['vqclip_s_per_it']:.3f} | {r['vqclip_peak_rss_mb']:.0f} | "
            f"{r['ratio_s_per_it']:.2f}x | {r['ratio_peak_mb']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from vqclip.devices import resolve_precision
    from vqclip.jobs.threads import default_threads

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", required=True, type=Path, help="the VQGAN-CLIP checkout")
    p.add_argument("--python", required=True, help="the peer's interpreter (its venv's python)")
    p.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[((128, 128), 8), ((256, 256), 32)],
        metavar="WxH/CUTN",
        help="sizes and cutout counts (default: 128x128/8 256x256/32)",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions, alternating the sides")
    p.add_argument("--steps", type=int, default=5, help="timed steps per run, median reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, each side")
    p.add_argument("--threads", type=int, help="threads for both (default: physical cores)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N], for both")
    p.add_argument(
        "--precision",
        nargs="+",
        default=["auto", "fp32"],
        help="vqclip's precisions (default: auto, vqclip's default, and fp32)",
    )
    p.add_argument(
        "--omp-wait-policy",
        choices=["PASSIVE", "ACTIVE"],
        help="OMP_WAIT_POLICY for both (default: unset; the peer then spins as libgomp does, "
        "vqclip chooses by the machine's load at start)",
    )
    p.add_argument(
        "--workdir", type=Path, help="keep the weights and outputs here (else a temp dir)"
    )
    p.add_argument("--json", type=Path, help="also write all JSON lines to this file")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.reps < 1:
        # the peer's step 0 holds its first check-in (a decode and a PNG save): never timed
        p.error("--warmup, --steps and --reps must be at least 1")
    if not (args.peer / "generate.py").is_file():
        p.error(f"{args.peer}/generate.py not found: --peer is nerdyrodent's VQGAN-CLIP checkout")
    for sub in ("CLIP/clip", "taming-transformers/taming"):
        if not (args.peer / sub).is_dir():
            p.error(f"{args.peer / sub} not found: clone it inside the checkout (its README)")
    args.peer = args.peer.resolve()
    args.threads = args.threads or default_threads()
    precisions = list(dict.fromkeys(args.precision))
    device = torch.device(args.device)
    same = resolve_precision("auto", device) == torch.float32
    if "auto" in precisions and "fp32" in precisions and same:
        precisions.remove("auto")  # the same runs twice

    with tempfile.TemporaryDirectory(prefix="vqclip-peer-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"# writing random weights to {work}", file=sys.stderr, flush=True)
        # In a child process: this one then stays small, and a child's peak RSS from wait4
        # (which starts from its launcher's RSS at the fork) is the child's own.
        with concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            paths = pool.submit(write_weights, work).result()
        paths["shim"] = work / "shim"
        paths["shim"].mkdir(exist_ok=True)
        (paths["shim"] / "sitecustomize.py").write_text(TORCH_SIX_SHIM)
        versions = check_peer(args, paths)
        header = {"peer": str(args.peer), "peer_versions": versions, "threads": args.threads}
        lines = [header]
        print(json.dumps(header), flush=True)

        runs = []
        for rep in range(args.reps):
            for size, cutn in args.sizes:
                sides = ["peer", *precisions]
                for side in sides if rep % 2 == 0 else sides[::-1]:
                    base = {"rep": rep, "size": list(size), "cutn": cutn, "side": side}
                    if side == "peer":
                        out = work / f"peer_{size[0]}x{size[1]}_{cutn}_{rep}.png"
                        # clip.load keeps CLIP in fp16 on a GPU, fp32 on the CPU
                        precision = "fp32" if args.device == "cpu" else "fp32, CLIP fp16"
                        record = {**base, "precision": precision}
                        record.update(run_peer(args, paths, size, cutn, out))
                    else:
                        out = work / f"vqclip_{size[0]}x{size[1]}_{cutn}_{side}_{rep}.json"
                        record = {
                            **base,
                            "side": "vqclip",
                            **run_vqclip(args, size, cutn, side, out),
                        }
                        record["requested"] = side
                    runs.append(record)
                    lines.append(record)
                    print(json.dumps(record), flush=True)
        slept = [
            r
            for r in runs
            if r["side"] == "vqclip"
            and (r.get("omp_wait") or {}).get("OMP_WAIT_POLICY") == "PASSIVE"
        ]
        if slept and not args.omp_wait_policy and "OMP_WAIT_POLICY" not in os.environ:
            print(
                f"# warning: {len(slept)} vqclip run(s) found the machine busy and let idle "
                "OpenMP threads sleep, while the peer's spun (libgomp's default, 2-3x slower "
                "beside another job): not comparable; rerun on a quiet machine or with "
                "--omp-wait-policy",
                file=sys.stderr,
            )
        rows = summarise(runs)
        for row in rows:
            lines.append(row)
            print(json.dumps(row), flush=True)
        print()
        print(markdown(rows, args.threads, args.device))
        if args.json:
            args.json.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
