"""The memory model M (an MDN-RNN), its loss, trainer and diagnostics."""

from worldvae.memory.config import MemoryConfig
from worldvae.memory.io import load_memory, read_memory_config
from worldvae.memory.losses import mdn_nll
from worldvae.memory.model import MDNRNN, MDNOutput, mixture_noise, sample_next

__all__ = [
    "MDNRNN",
    "MDNOutput",
    "MemoryConfig",
    "load_memory",
    "mdn_nll",
    "mixture_noise",
    "read_memory_config",
    "sample_next",
]
