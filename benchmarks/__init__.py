"""The kernel lab: benchmarks and tools for hybridlab's fused kernels, run from a checkout.

Not part of the installed package (``hybridlab/`` never imports from here):

- ``kernels/``  the side-by-side bench, ``python -m benchmarks.kernels`` (docs/benchmarking.md)
- ``peer.py``   loads the peer, mamba-ssm, from the git-ignored ``.peer/``
- ``mamba3.py`` Mamba-3 SISO and MIMO timed at the target shapes, any rank
- ``gpu/``      scripts for the GPU machine: the whole run, profiles, variants, Nsight Compute
- ``kernel_regs.py``, ``sass_scoreboards.py``: registers, spills and SASS of the sm_90 builds,
  on any machine
"""
