"""Choosing the torch device: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import functools
import os

import torch

from vqclip.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda > mps > cpu; a named device must exist, else a ConfigError says so."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: not a device name; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: this torch build or machine has no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r}: Apple MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r}: unsupported; use auto, cpu, cuda, cuda:N or mps")
    return device


def default_size(device: torch.device) -> tuple[int, int]:
    """The image size when none is given: 512x512 on a GPU with 10 GB free, else 256x256."""
    if device.type == "cuda" and available_memory_bytes(device) >= 10 * 2**30:
        return (512, 512)
    return (256, 256)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory the run may use: free GPU memory on CUDA, available RAM otherwise."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


CPU_FEATURES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # the fastest first


def cpu_description(cpuinfo: str | None = None) -> dict[str, object]:
    """The CPU's model and which of `CPU_FEATURES` it has (from /proc/cpuinfo on Linux), so
    figures from different kinds of machine are never compared as if alike. `best` is the
    fastest matrix feature present ("amx_bf16" on a Xeon with AMX), or "none"."""
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())
        if value
    )
    flags = set(fields.get("flags", "").split())
    have = [f for f in CPU_FEATURES if f in flags]
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "features": have,
        "best": have[0] if have else "none",
    }


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 / AMX: bf16 matmuls run several times faster than fp32 there."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype of the decoder and CLIP. `auto`: bf16 on CUDA (fp16 where bf16 is
    missing) and on CPUs with native bf16, fp32 elsewhere (Apple MPS included)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"precision={name!r}: choose auto, fp32, bf16 or fp16")
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("precision='fp16': not supported on CPU; use bf16 or fp32")
    return _DTYPES[name]


@functools.lru_cache(maxsize=256)
def _cached_constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


def constant(values, device: torch.device | str, dtype: torch.dtype = torch.float32):
    """A small constant tensor on `device`, copied there once and then reused.

    Inside the generation step, `torch.tensor(..., device="cuda")` copies from pageable host
    memory, which makes the host wait for the GPU's queue to drain: a sync per call. The
    returned tensor is shared between callers: never modify it in place.
    """
    values = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in values)
    return _cached_constant(values, torch.device(device), dtype)
