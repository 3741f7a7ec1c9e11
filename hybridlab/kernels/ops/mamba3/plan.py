"""Mamba-3's launch plan: one frozen value, chosen once at import.

``Mamba3Plan`` holds the launch settings of the Mamba-3 kernels (the rotation, the per-step prep,
MIMO's row kernels) and, as ``ssd``, the plan of the SSD kernels it runs on. The ops in fused.py
take ``plan=`` (default ``DEFAULT_PLAN``, built from the HYBRIDLAB_MAMBA3_* knobs); tests and
the benchmarks pass variants made with ``dataclasses.replace``. The settings change speed, never
results (up to rounding). DESIGN.md has the measurements behind them.
"""
from __future__ import annotations

from dataclasses import dataclass

from hybridlab.kernels import knobs

from ..ssd.plan import DEFAULT_PLAN as SSD_DEFAULT_PLAN
from ..ssd.plan import SSDPlan


@dataclass(frozen=True)
class Mamba3Plan:
    #: the SSD kernels' plan
    ssd: SSDPlan
    #: the SSD chunk Mamba-3 asks for (rounded and capped by ``ssd.kernel_chunk``); None: 64 for
    #: SISO where the SSD's sequential chunk-state kernels run (their cost does not grow with
    #: the number of chunks, and shorter chunks cut the within-chunk work), else 128. The
    #: caller's chunk_size does not matter: it changes nothing but rounding.
    ssd_chunk: int | None
    #: steps per rotation / prep program: the in-chunk angle cumsum happens in registers
    angle_chunk: int
    #: rotation chunks per step of the angle-offset scan (fused_prep.angle_scan_kernel), whose
    #: float64 cumsum runs over blocks of this many chunks, carrying the running total
    scan_chunks: int
    #: SISO's forward rotation: warps per program and a register cap per thread (0: none; a
    #: cap lets two programs share an SM)
    rotate_fwd_warps: int
    rotate_fwd_maxnreg: int
    #: the backward rotation: rotation pairs per program (all of n=128's 64 pairs spill) and
    #: warps, SISO's and MIMO's
    rotate_bwd_pairs: int
    rotate_bwd_warps: int
    mimo_rotate_bwd_warps: int
    #: MIMO's forward rotation (each step's score block on top of SISO's work): warps per program
    mimo_rotate_fwd_warps: int
    #: MIMO's output kernels: rows (t, r) per program (more spill in the backward) and warps
    mimo_out_rows: int
    mimo_out_warps: int
    #: steps per program of MIMO's v-row kernels (v = x W_x and its gradient)
    mimo_v_steps: int
    #: the rotations' cos and sin from the GPU's approximate instructions (fused_rotate._cos_sin);
    #: the interpreter cannot run inline PTX and takes libdevice's
    fast_trig: bool
    #: the Triton interpreter: one warp per program, exact fp32 products ("ieee")
    interpret: bool

    def warps(self, n: int) -> int:
        """``n`` warps, or one under the interpreter."""
        return 1 if self.interpret else n

    @property
    def mma_prec(self) -> str:
        """The fp32 tensor-core products' precision (MIMO's step scores in the forward rotation,
        the angle totals in fused_prep.py): three tf32 passes on the GPU (~1e-6 relative), exact
        in the interpreter; 16-bit operands ignore it. (With exact fp32 products prep_bwd_kernel
        spills on sm_90; with tf32x3 it does not at 8 warps.)"""
        return "ieee" if self.interpret else "tf32x3"

    def rotate_fwd_options(self) -> dict:
        """SISO's forward rotation launch options."""
        if self.interpret:
            return {"num_warps": 1}
        cap = {"maxnreg": self.rotate_fwd_maxnreg} if self.rotate_fwd_maxnreg else {}
        return {"num_warps": self.rotate_fwd_warps, **cap}

    def siso_chunk(self, seq_states: bool) -> int:
        """The SSD chunk SISO asks for (seq_states: the grid takes the SSD's sequential
        chunk-state kernels, fused_state.py)."""
        if self.ssd_chunk is None:
            return 64 if seq_states else 128
        return self.ssd_chunk

    def mimo_chunk(self) -> int:
        """The SSD chunk MIMO asks for (its l*R rows)."""
        return 128 if self.ssd_chunk is None else self.ssd_chunk


DEFAULT_PLAN = Mamba3Plan(
    ssd=SSD_DEFAULT_PLAN,
    ssd_chunk=knobs.MAMBA3_SSD_CHUNK,
    angle_chunk=knobs.MAMBA3_ANGLE_CHUNK or 64,
    scan_chunks=64,
    rotate_fwd_warps=knobs.MAMBA3_ROTATE_FWD_WARPS,
    rotate_fwd_maxnreg=knobs.MAMBA3_ROTATE_FWD_MAXNREG,
    rotate_bwd_pairs=knobs.MAMBA3_ROTATE_PAIRS or 16,
    rotate_bwd_warps=knobs.MAMBA3_ROTATE_BWD_WARPS or 4,
    mimo_rotate_bwd_warps=knobs.MAMBA3_ROTATE_BWD_WARPS or 8,
    mimo_rotate_fwd_warps=16,
    mimo_out_rows=knobs.MAMBA3_MIMO_ROWS or 16,
    mimo_out_warps=knobs.MAMBA3_MIMO_WARPS or 2,
    mimo_v_steps=32,
    fast_trig=not knobs.INTERPRET,
    interpret=knobs.INTERPRET,
)
