"""Registry of interchangeable blocks. Importing this package registers the built-in blocks."""
from .base import Block, BlockConfig, ForwardContext, LayerContext, dtype_bytes
from .registry import block_types, get_block, register_block

# Built-in blocks register themselves on import; one module per block.
from . import mamba1, mamba2, mamba3, attention, mlp, moe, shared_attention, parallel  # noqa: E402,F401

__all__ = [
    "Block", "BlockConfig", "ForwardContext", "LayerContext", "dtype_bytes",
    "block_types", "get_block", "register_block",
]
