"""What a run is using besides time: the process's resident memory, on CUDA
the allocator's allocated and reserved bytes, and the GPU's utilisation where
``nvidia-ml-py`` is installed (optional, never required).  Sampled every few
seconds by the loop and written as a ``resources`` record."""
from __future__ import annotations

import os
from typing import Any

EVERY_S = 10.0  # seconds between samples


def rss_mb() -> float | None:
    """Current resident memory of this process (Linux ``/proc``; else the peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except (ImportError, OSError):
            return None


def sample(device: Any = None) -> dict[str, float | None]:
    """rss_mb always; cuda_allocated_mb, cuda_reserved_mb and gpu_util on a CUDA device."""
    out: dict[str, float | None] = {"rss_mb": rss_mb(), "cuda_allocated_mb": None,
                                    "cuda_reserved_mb": None, "gpu_util": None}
    if device is None or getattr(device, "type", None) != "cuda":
        return out
    import torch

    out["cuda_allocated_mb"] = torch.cuda.memory_allocated(device) / 2**20
    out["cuda_reserved_mb"] = torch.cuda.memory_reserved(device) / 2**20
    out["gpu_util"] = _gpu_util(device)
    return out


def _gpu_util(device: Any) -> float | None:
    try:
        import pynvml  # nvidia-ml-py: optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # no driver, no permission: a figure we simply lack
        return None
