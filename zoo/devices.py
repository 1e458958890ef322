"""Where per-tensor math runs: `--device cpu`, `cuda` (every visible GPU), `cuda:N`, `auto`
(every GPU, else the CPU) or a comma list (`cuda:0,cuda:2`). Streaming operators (merges,
expansions) deal tensors out to the devices round robin, so a large model's tensors are
worked on by all GPUs at once while each tensor stays whole on one of them."""
from __future__ import annotations

import torch

from .errors import ZooError


def resolve_devices(spec: str) -> list[torch.device]:
    """The devices a `--device` value names, checked to exist (one-line error otherwise)."""
    spec = (spec or "cpu").strip()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    devices = []
    for part in (p.strip() for p in spec.split(",")):
        try:
            dev = torch.device(part)
        except RuntimeError:
            raise ZooError(f"device {part!r} is not a device (cpu, cuda, cuda:N, auto, or a comma list)") from None
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise ZooError(f"device {part!r} requested but no CUDA GPU is available (use --device cpu or auto)")
            if dev.index is None:
                devices += [torch.device("cuda", i) for i in range(count)]
                continue
            if dev.index >= count:
                raise ZooError(f"device {part!r} requested but only {count} GPU(s) are visible")
        devices.append(dev)
    return list(dict.fromkeys(devices))


def resolve_device(spec: str) -> torch.device:
    """The first device of `spec` (for work that runs on one device)."""
    return resolve_devices(spec)[0]


def workers_for(devices: list[torch.device], requested: int) -> int:
    """At least four worker threads per GPU: while one thread's tensor is on the GPU, others
    read theirs from disk, copy to the device or write back (those steps hold the CPU)."""
    gpus = sum(d.type == "cuda" for d in devices)
    return max(requested, 4 * gpus)
