"""The Mamba-2 SSD's launch plan: one frozen value, chosen once at import.

``SSDPlan`` holds every launch setting of the SSD kernels (row blocks, the chunk cap,
autotuning, the state kernels' tiles and when they run); its methods turn a shape into those
choices. The ops in fused.py take ``plan=`` (default ``DEFAULT_PLAN``, built from the
HYBRIDLAB_SSD_* knobs); tests and the benchmarks pass variants made with
``dataclasses.replace``. Mamba-3 runs these kernels with its own plan's ``ssd``. The settings
change speed, never results (up to rounding). DESIGN.md has the measurements behind them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridlab.kernels import knobs
from hybridlab.kernels.launch import cdiv

#: fp32 inputs on the GPU (tf32x3 dots keep fp32 operand tiles in shared memory): chunks of at
#: most FP32_MAX_CHUNK steps and row blocks of at most FP32_MAX_BLOCK_T, else chunk_state_fwd /
#: chunk_state_bwd (Q=256: 256 KB) and chunk_bwd (BT=64: 320 KB) exceed the 227 KB of shared
#: memory an sm_90 program may have (128 / 32 need 128 KB and 144 KB). bf16 is unaffected.
FP32_MAX_CHUNK, FP32_MAX_BLOCK_T = 128, 32


@dataclass(frozen=True)
class SSDPlan:
    #: largest row block inside a chunk (BT)
    block_t_max: int
    #: the longest chunk the kernels run: a caller's longer chunk_size runs at this
    max_chunk: int
    #: autotune the dot kernels over their launch configs (GPU only). Off: each kernel launches
    #: with its config number ``config`` (its last where it has fewer), with no benchmark per
    #: new shape
    autotune: bool
    config: int
    #: the backward splits a group's heads over programs until the grid has this many
    head_split_target: int
    #: state passing (a short recurrence over chunks): elements of the P x N state per program,
    #: and its warps
    state_block: int
    state_warps: int
    #: the chunk states as one sequential kernel per direction (fused_state.py) once the grid of
    #: (batch, head, state tile) has ``seq_state_min`` programs (0: never), with tiles of at most
    #: 64 rows (P) and ``seq_state_bn`` columns (N), walking ``seq_state_rows`` sequence rows per
    #: step. Below it, the split path's parallel chunk kernels keep the GPU busy.
    seq_state_min: int
    seq_state_bn: int
    seq_state_rows: int
    #: the forward's sequential state walk is cut into segments of chunks, walked in parallel,
    #: until (batch, head, state tile, segment) has this many programs
    seq_state_fill: int
    #: the Triton interpreter: one warp per program, exact fp32 dots ("ieee"), no fp32 caps
    interpret: bool

    def warps(self, n: int) -> int:
        """``n`` warps, or one under the interpreter."""
        return 1 if self.interpret else n

    def chunk(self, chunk_size: int) -> int:
        """A caller's chunk_size as the kernels run it: a power of two in [16, max_chunk]."""
        return min(self.max_chunk, 256, max(16, _pow2(chunk_size)))

    def kernel_chunk(self, chunk_size: int, dtype) -> int:
        """The chunk the kernels run for ``dtype``: ``chunk``, fp32 on the GPU at most FP32_MAX_CHUNK."""
        Q = self.chunk(chunk_size)
        return min(Q, FP32_MAX_CHUNK) if dtype == torch.float32 and not self.interpret else Q

    def block_t(self, Q: int, dtype) -> int:
        """The row block inside a chunk of Q rows."""
        bt = min(Q, self.block_t_max)
        return min(bt, FP32_MAX_BLOCK_T) if dtype == torch.float32 and not self.interpret else bt

    def prec(self, dtype) -> str:
        """The dots' input precision. fp32 operands: "tf32x3" on the GPU (three tensor-core passes,
        ~1e-6 relative, so the fp32 tests' 1e-4 holds; "ieee" compiles each 64x128 dot to
        unrolled FMAs, and the GPU tests stalled on the first fp32 call at such tiles); "ieee" in
        the interpreter. 16-bit operands ignore the setting."""
        if dtype == torch.float32:
            return "ieee" if self.interpret else "tf32x3"
        return "tf32"

    def state_tiles(self, P: int, N: int) -> tuple[int, int, int]:
        """(BP, BN, tiles): the sequential state kernels' tiles of the P x N state."""
        BP, BN = max(16, min(64, _pow2(P))), max(16, min(self.seq_state_bn, _pow2(N)))
        return BP, BN, cdiv(P, BP) * cdiv(N, BN)

    def seq_state_tiles(self, b: int, H: int, P: int, N: int):
        """(BP, BN, tiles) of the sequential state kernels, or None where the split path runs."""
        BP, BN, tiles = self.state_tiles(P, N)
        return (BP, BN, tiles) if self.seq_state_min and b * H * tiles >= self.seq_state_min else None

    def state_walk(self, b: int, H: int, P: int, N: int, nchunks: int, packed: bool):
        """(BP, BN, tiles, chunks per segment, segments) of the forward's sequential state walk,
        or None where the split path runs. Packed sequences (seq_idx) walk in one segment."""
        BP, BN, tiles = self.state_tiles(P, N)
        progs = b * H * tiles
        nseg = 1 if packed or progs >= self.seq_state_fill else min(nchunks, cdiv(self.seq_state_fill, progs))
        cps = cdiv(nchunks, nseg)
        nseg = cdiv(nchunks, cps)
        return (BP, BN, tiles, cps, nseg) if self.seq_state_min and progs * nseg >= self.seq_state_min else None

    def heads_per_program(self, b: int, nchunks: int, nb: int, G: int, hpg: int) -> int:
        """The backward's heads per program: the largest divisor of the heads per group whose grid
        still has >= head_split_target programs."""
        for d in range(hpg, 0, -1):
            if hpg % d == 0 and b * nchunks * nb * G * (hpg // d) >= self.head_split_target:
                return d
        return 1


def _pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


DEFAULT_PLAN = SSDPlan(
    block_t_max=knobs.SSD_BLOCK_T,
    max_chunk=knobs.SSD_MAX_CHUNK,          # half of 256 halves the within-chunk work
    autotune=knobs.AUTOTUNE,
    config=0,
    head_split_target=528,                  # ~4 waves of programs
    state_block=256,                        # more, smaller programs hide more latency
    state_warps=2,
    seq_state_min=knobs.SSD_SEQ_STATE,
    seq_state_bn=knobs.SSD_SEQ_STATE_BN,
    seq_state_rows=knobs.SSD_SEQ_STATE_ROWS,
    seq_state_fill=knobs.SSD_SEQ_STATE_FILL,
    interpret=knobs.INTERPRET,
)
