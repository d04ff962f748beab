"""What the machine offers the network, told without importing torch where it can be: native bf16 on the CPU,
and whether torch could find a GPU at all. ``utilise fill --dry-run`` plans from these answers."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX-512 BF16), from the kernel's CPU flags."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device_type: str) -> str:
    """'auto' -> bf16 autocast where the hardware does bf16 natively (CUDA GPUs that support it, CPUs with AMX
    or AVX-512 BF16), else fp32; any other value as it is. ``device_type``: 'cpu' or 'cuda' (only that one
    asks torch)."""
    if precision != "auto":
        return precision
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def no_gpu_for_torch() -> bool:
    """True where torch will surely find no GPU: the torch installed has no CUDA (or ROCm) libraries, every GPU
    is hidden (CUDA_VISIBLE_DEVICES empty or -1), or, on Linux, no NVIDIA or AMD GPU driver shows a device.
    False where one may be there: then only torch can say (``torch.cuda.is_available()``)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return True
    libraries = Path(next(iter(spec.submodule_search_locations))) / "lib"
    if not any(next(libraries.glob(pattern), None) for pattern in ("*torch_cuda*", "*torch_hip*")):
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return True
    if sys.platform.startswith("linux"):
        return not (Path("/dev/nvidia0").exists() or Path("/dev/kfd").exists()
                    or any(Path("/proc/driver/nvidia/gpus").glob("*")))
    return False
