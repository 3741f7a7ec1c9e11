"""Kernels for the SSM mixers: each a fused Triton kernel beside its pure-torch reference.

Call the ops from here; ``dispatch.py`` picks the implementation (Triton on CUDA, reference
on CPU, ``HYBRIDLAB_KERNELS`` overrides). Signatures are documented in each folder's
``reference.py``.
"""
from .dispatch import backend_for, implementation, make_op

selective_scan = make_op("selective_scan")               # Mamba-1 scan
selective_state_update = make_op("selective_state_update")  # Mamba-1 decode step
ssd = make_op("ssd")                                     # Mamba-2 chunked SSD
ssd_state_update = make_op("ssd_state_update")           # Mamba-2 decode step
mamba3 = make_op("mamba3")                               # Mamba-3 chunked (SISO / MIMO)
mamba3_state_update = make_op("mamba3_state_update")     # Mamba-3 decode step
causal_conv1d = make_op("causal_conv1d")                 # depthwise causal conv
causal_conv1d_update = make_op("causal_conv1d_update")   # its one-step update
rmsnorm_gated = make_op("rmsnorm_gated")                 # RMSNorm fused with silu gate

__all__ = [
    "backend_for", "implementation", "selective_scan", "selective_state_update", "ssd",
    "ssd_state_update", "mamba3", "mamba3_state_update", "causal_conv1d",
    "causal_conv1d_update", "rmsnorm_gated",
]
