"""The shipped toy model pair (a VQGAN and two CLIP guides) and the judge, and their paths.

They load through the same public loaders users' files go through: the taming .ckpt + .yaml (or
its safetensors conversion) for the VQGAN, safetensors + JSON for the guides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vqclip.clip import CLIP
from vqclip.errors import WeightsNotFoundError
from vqclip.toy.judge import Judge, load_judge
from vqclip.vqgan import VQGAN

WEIGHTS_DIR = Path(__file__).parent / "weights"
VQGAN_CKPT = "toy_vqgan.ckpt"  # taming format, with toy_vqgan.yaml beside it
VQGAN_YAML = "toy_vqgan.yaml"
VQGAN_SAFETENSORS = "toy_vqgan.safetensors"  # converted, with toy_vqgan.json beside it
CLIP_FILES = ("toy_clip_a.safetensors", "toy_clip_b.safetensors")
JUDGE_FILE = "toy_judge.safetensors"


@dataclass
class ToyModels:
    vqgan: VQGAN
    clips: list[CLIP]
    judge: Judge
    vqgan_path: Path
    clip_paths: list[Path]


def toy_paths(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """Every shipped file by role; WeightsNotFoundError if one is missing."""
    paths = {
        "vqgan_ckpt": weights_dir / VQGAN_CKPT,
        "vqgan_yaml": weights_dir / VQGAN_YAML,
        "vqgan": weights_dir / VQGAN_SAFETENSORS,
        "judge": weights_dir / JUDGE_FILE,
    }
    paths.update({f"clip_{i}": weights_dir / name for i, name in enumerate(CLIP_FILES)})
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise WeightsNotFoundError(
            f"toy weights missing: {', '.join(missing)}; they ship with vqclip (reinstall it), "
            "or retrain them from a source checkout (research/README.md)"
        )
    return paths


def load_toy_models(weights_dir: Path = WEIGHTS_DIR, *, taming: bool = False) -> ToyModels:
    """Load the toy VQGAN (the safetensors copy, or with `taming` the .ckpt), guides and judge."""
    from vqclip.weights.resolve import load_clip_by_name, load_vqgan_by_name

    paths = toy_paths(weights_dir)
    vqgan_path = paths["vqgan_ckpt"] if taming else paths["vqgan"]
    clip_paths = [paths[f"clip_{i}"] for i in range(len(CLIP_FILES))]
    return ToyModels(
        vqgan=load_vqgan_by_name(vqgan_path),
        clips=[load_clip_by_name(p) for p in clip_paths],
        judge=load_judge(paths["judge"]),
        vqgan_path=vqgan_path,
        clip_paths=clip_paths,
    )
