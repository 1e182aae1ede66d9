"""What every door's workers share: which devices they run on, and how often a job that keeps
killing its worker is tried before it is recorded as failed."""

from __future__ import annotations

# A job whose worker died this many times while running it (out of memory, a crash in a
# kernel, a lost node) is failed instead of being tried forever: the web service's queue and
# Ray's actors count the same way.
MAX_ATTEMPTS = 3


def worker_devices(count: int | None = None, names: list[str] | None = None) -> list[str]:
    """One device per worker: the devices named (each checked now, before any job runs), else
    every GPU once (`count` workers spread over them), else Apple MPS, else the CPU."""
    import torch

    from vqclip.devices import resolve_device

    if names:
        return [str(resolve_device(name)) for name in names]
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(count or gpus)]
    if torch.backends.mps.is_available():
        return ["mps"] * (count or 1)
    return ["cpu"] * (count or 1)
