"""Turn what a user typed (a registry name, an alias, or a file path) into a loaded model.

A registry model loads from its converted copy (`model.safetensors` + `model.json` in its cache
folder) when `vqclip models convert` has made one, since that skips unpickling a training
checkpoint; otherwise its original files are fetched if needed and loaded. A path is loaded as is.
The model modules are imported lazily, so listing or downloading weights does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqclip.errors import ConfigError
from vqclip.weights.cache import (
    check_file,
    converted_paths,
    is_converted,
    sha256_file,
    sidecar_path,
    write_sidecar,
)
from vqclip.weights.download import ensure_files
from vqclip.weights.registry import PACKAGED, PACKAGED_DIR, WeightSpec, find_spec, get_spec
from vqclip.weights.spec import VQGAN_FORMATS

if TYPE_CHECKING:
    import torch

    from vqclip.clip import CLIP
    from vqclip.vqgan import VQGAN

PathLike = str | os.PathLike
_KNOWN_SUFFIXES = (".ckpt", ".safetensors", ".bin", ".pt", ".pth", ".yaml", ".yml", ".json")


def _local_file(name_or_path: PathLike) -> Path | None:
    """The file `name_or_path` names, None if it is a registry name; errors for bad paths."""
    text = str(name_or_path)
    if text in PACKAGED:
        return PACKAGED_DIR / PACKAGED[text]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix.lower() in (".txt", ".yaml", ".yml", ".json"):
            raise ConfigError(
                f"{path} is a {path.suffix} file, not model weights: give a .ckpt, .safetensors, "
                ".bin or .pt file (a VQGAN's taming YAML config goes to --vqgan-config)"
            )
        return path
    if find_spec(text) is not None:  # a registry name wins over a folder of that name
        return None
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass the checkpoint file inside it")
    if path.suffix in _KNOWN_SUFFIXES or os.sep in text:
        raise ConfigError(f"no such file: {path}")
    return None


def vqgan_config_for(
    checkpoint: Path, config: PathLike | None = None, flag: str = "--vqgan-config"
) -> Path | None:
    """The config to load a VQGAN checkpoint with: `config`, or one found beside the checkpoint.

    Our .safetensors carry their JSON beside them (the loader finds it), so they need none. For a
    taming .ckpt: `<stem>.yaml` beside it (nerdyrodent's layout), else the newest
    `configs/*-project.yaml` of a taming log folder (`<run>/checkpoints/last.ckpt`).
    """
    if config is not None:
        path = Path(config).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if checkpoint.suffix == ".safetensors":
        return None
    for suffix in (".yaml", ".yml"):
        beside = checkpoint.with_suffix(suffix)
        if beside.is_file():
            return beside
    if checkpoint.parent.name == "checkpoints":
        found = sorted((checkpoint.parent.parent / "configs").glob("*-project.yaml"))
        if found:
            return found[-1]
    raise ConfigError(
        f"no config found for {checkpoint}: looked for {checkpoint.with_suffix('.yaml').name} "
        f"beside it. Pass the taming YAML with {flag} (vqclip models: --config; config= "
        "in Python)."
    )


def _state_dict_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    from vqclip.safeload import load_torch_checkpoint

    obj = load_torch_checkpoint(path)
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return list(obj)


def detect_kind(path: Path) -> str:
    """Whether `path` holds a "vqgan" or a "clip", from its suffix or else its tensor names."""
    if path.suffix == ".ckpt":
        return "vqgan"
    keys = _state_dict_keys(path)
    if any(k.startswith(("encoder.", "quantize.", "first_stage_model.")) for k in keys):
        return "vqgan"
    if any(k.startswith("visual.") or k == "token_embedding.weight" for k in keys):
        return "clip"
    raise ConfigError(f"cannot tell whether {path} holds a VQGAN or a CLIP model")


def clip_config_for(spec: WeightSpec) -> dict[str, Any]:
    """The CLIP config of a registry model: its preset's sizes plus the spec's mean/std."""
    from vqclip.clip import CLIP_PRESETS

    if spec.preset not in CLIP_PRESETS:
        raise ConfigError(
            f"{spec.name} needs CLIP preset {spec.preset!r}, which vqclip.clip does not define "
            f"(known: {', '.join(sorted(CLIP_PRESETS))})"
        )
    return {**CLIP_PRESETS[spec.preset], "mean": spec.mean, "std": spec.std}


def _fix_hint(spec: WeightSpec) -> str:
    return f"Run `vqclip models convert {spec.name}` again."


def load_vqgan_by_name(
    name_or_path: PathLike,
    config: PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    download: bool = True,
    progress: bool = True,
) -> VQGAN:
    """Load a VQGAN from a registry name/alias or a checkpoint path (`config`: its YAML)."""
    from vqclip.vqgan import load_vqgan

    path = _local_file(name_or_path)
    if path is not None:
        return load_vqgan(path, vqgan_config_for(path, config), device=device)
    spec = get_spec(str(name_or_path), kind="vqgan")
    if config is None and spec.preset is None and is_converted(spec):
        weights, _ = converted_paths(spec)
        check_file(weights, fix_hint=_fix_hint(spec))
        return load_vqgan(weights, None, device=device)
    return _load_original_vqgan(spec, config, device, download=download, progress=progress)


def _load_original_vqgan(
    spec: WeightSpec,
    config: PathLike | None,
    device: str | torch.device,
    *,
    download: bool,
    progress: bool,
) -> VQGAN:
    from vqclip.vqgan import load_vqgan

    if spec.preset == "amused" and config is not None:
        raise ConfigError(
            f"{spec.name} reads its own config.json; --vqgan-config is for taming checkpoints"
        )
    files = ensure_files(spec, download=download, progress=progress)
    if spec.preset == "amused":
        from vqclip.vqgan.amused_vq import load_amused_vq

        return load_amused_vq(files["checkpoint"], config=files["config"]).to(device)
    yaml = vqgan_config_for(files["checkpoint"], config) if config else files["config"]
    return load_vqgan(files["checkpoint"], yaml, device=device)


def load_clip_by_name(
    name_or_path: PathLike,
    device: str | torch.device = "cpu",
    *,
    quick_gelu: bool | None = None,
    download: bool = True,
    progress: bool = True,
) -> CLIP:
    """Load a CLIP from a registry name/alias or a state-dict file (.safetensors / .bin).

    For a registry model the architecture and activation come from its spec; `quick_gelu`
    only applies to files, where it overrides what the loader infers.
    """
    from vqclip.clip import load_clip

    path = _local_file(name_or_path)
    if path is not None:
        return load_clip(path, None, quick_gelu=quick_gelu, device=device)
    spec = get_spec(str(name_or_path), kind="clip")
    config = clip_config_for(spec)
    if is_converted(spec):
        weights, _ = converted_paths(spec)
        check_file(weights, fix_hint=_fix_hint(spec))
    else:
        weights = ensure_files(spec, download=download, progress=progress)["checkpoint"]
    return load_clip(weights, config, quick_gelu=spec.quick_gelu, device=device)


def convert(
    name_or_path: PathLike,
    *,
    config: PathLike | None = None,
    out: PathLike | None = None,
    quick_gelu: bool | None = None,
    progress: bool = True,
) -> Path:
    """Load a model from its original files and write it as safetensors + JSON; return the path.

    The default output for a registry model is its cache folder's converted copy, which later
    loads then use; for a file it is `<stem>.safetensors` beside it. `quick_gelu` is for CLIP
    files, whose activation cannot be read from the weights (see `load_clip`).
    """
    path = _local_file(name_or_path)
    spec = None if path is not None else get_spec(str(name_or_path))
    if out is not None:
        target = Path(out).expanduser()
    elif spec is not None:
        target = converted_paths(spec)[0]
    elif path.suffix == ".safetensors":
        raise ConfigError(f"{path} is already a .safetensors file; pass --out for the copy")
    else:
        target = path.with_suffix(".safetensors")
    if target.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {target}")

    kind = spec.kind if spec is not None else detect_kind(path)
    if spec is not None and (kind == "prior" or spec.preset in VQGAN_FORMATS):
        raise ConfigError(
            f"{spec.name} loads from its own files as they are; convert is for taming VQGAN and "
            "CLIP checkpoints"
        )
    if kind == "clip" and config is not None:
        raise ConfigError("--config (a taming YAML) is for VQGAN checkpoints, not CLIP")
    if kind == "vqgan" and quick_gelu is not None:
        raise ConfigError("--quick-gelu is for CLIP files, not VQGAN checkpoints")
    cache_copy = spec is not None and target == converted_paths(spec)[0]
    if cache_copy:
        # A stale hash must not outlive the copy it described, even if this run fails.
        sidecar_path(target).unlink(missing_ok=True)
    if kind == "vqgan":
        from vqclip.vqgan import save_vqgan

        if spec is not None:
            model = _load_original_vqgan(spec, config, "cpu", download=True, progress=progress)
        else:
            model = load_vqgan_by_name(path, config)
        save_vqgan(model, target)
    else:
        from vqclip.clip import load_clip, save_clip

        if spec is not None:
            weights = ensure_files(spec, progress=progress)["checkpoint"]
            model = load_clip(weights, clip_config_for(spec), quick_gelu=spec.quick_gelu)
        else:
            model = load_clip(path, None, quick_gelu=quick_gelu)
        save_clip(model, target)
    if cache_copy:
        # Later loads trust this copy only while it matches the hash recorded now.
        write_sidecar(target, sha256_file(target))
    return target


def load_models(
    vqgan: PathLike, clips: Sequence[PathLike], vqgan_config: PathLike | None = None
) -> tuple:
    """(vqgan, [clips]) by registry names or paths, on the CPU. When weights are missing, one
    WeightsNotFoundError lists every missing file, not only the first."""
    from vqclip.errors import WeightsNotFoundError

    loaders = [lambda: load_vqgan_by_name(vqgan, config=vqgan_config)]
    loaders += [lambda name=name: load_clip_by_name(name) for name in clips]
    models, missing = [], []
    for load in loaders:
        try:
            models.append(load())
        except WeightsNotFoundError as e:
            missing.append(str(e))
    if missing:
        raise WeightsNotFoundError("\n".join(missing))
    return models[0], models[1:]
