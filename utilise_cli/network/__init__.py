"""The U-TILISE network and its checkpoints."""

from .allocator import one_heap, release_freed_memory, reuse_freed_memory
from .checkpoint import load_model, read_checkpoint, resolve_device, save_checkpoint
from .config import NetworkConfig
from .utilise import UTILISE

__all__ = ["NetworkConfig", "UTILISE", "load_model", "one_heap", "read_checkpoint", "release_freed_memory",
           "resolve_device", "reuse_freed_memory", "save_checkpoint"]
