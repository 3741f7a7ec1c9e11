"""The Mamba-1 selective scan's launch plan: one frozen value, chosen once at import.

``SelectiveScanPlan`` holds every launch setting of the scan (layouts, warps, when to split time
into chunks, which load paths the kernels take); its methods turn a shape into a launch. The ops
in fused.py take ``plan=`` (default ``DEFAULT_PLAN``); tests and the benchmarks pass variants
made with ``dataclasses.replace``. The settings change speed, never results. DESIGN.md has the
measurements behind the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

from hybridlab.kernels import knobs
from hybridlab.kernels.launch import cdiv, next_pow2


@dataclass(frozen=True)
class Layout:
    """A forward launch: ``elems`` = BLOCK_D * NP elements per program (sets BLOCK_D), ``warps``
    per program, the state in rows of 2**``rows_log`` states per thread (0: Triton's layout, 4
    states per thread and a channel on NP/4 lanes; tiles._to_rows)."""
    elems: int
    warps: int
    rows_log: int


@dataclass(frozen=True)
class SelectiveScanPlan:
    #: the forward's layout by padded state width NP: <= 16, 32, >= 64
    small: Layout
    mid: Layout
    big: Layout
    #: NP >= 64 with grad on a grid too small for one warp per 8 channels that may not split in
    #: time: more lanes per channel instead (Triton's layout on several warps)
    big_wide: Layout
    #: the forward's softplus is tiles._softplus_fwd up to this padded N, tiles._softplus above
    cheap_softplus_max_np: int
    #: the per-channel tile math passes through tiles._pin, so Triton does not recompute it in the
    #: state's layout on each of a channel's lanes
    pin_tile_math: bool
    #: the forward reads B and C from fp32 time-major copies (fused._time_major), one (NP,) vector
    #: per step: in Triton's layout, and (``bc_time_major_rows``) in rows on grids not split in time
    bc_time_major: bool
    bc_time_major_rows: bool
    #: time-major B and C loaded a tile ahead, where a thread's tile of them is small (bc_prefetch)
    bc_prefetch: bool
    #: y summed across a channel's 4 lanes by a reduce-scatter (tiles._sum_lanes8), where the
    #: layout is the one its PTX is written for
    reduce_scatter: bool
    #: the backward: elements per program (sets BLOCK_D), warps, B and C time-major (reusing the
    #: forward's copies), its one-tile-ahead loads up to this N (above: too many registers)
    bwd_elems: int
    bwd_warps: int
    bwd_bc_time_major: bool
    bwd_prefetch_max_n: int
    #: time is split into chunks (a states-only pass, a carry, the real pass) when the grid has
    #: fewer than ``chunk_below`` warps: up to ``target_warps`` warps, chunks of >= ``min_chunk``
    #: steps. With grad only when the backward's grid is that small too: it runs the forward's
    #: chunks, and a chunked backward costs more than the split saves.
    chunk_below: int
    target_warps: int
    min_chunk: int
    #: the GPU's approximate PTX in the forward (softplus, gate, reduce-scatter); the interpreter
    #: cannot run PTX and takes their tl twins
    fast_ptx: bool

    def layout(self, NP: int) -> tuple[int, int, int]:
        """(elements per program, warps, ROWS_LOG) of the forward for a padded state width NP."""
        lay = self.big if NP > 32 else self.mid if NP == 32 else self.small
        return lay.elems, lay.warps, min(lay.rows_log, NP.bit_length() - 1)   # at most NP per thread

    def forward_grid(self, b: int, d: int, L: int, NP: int, G: int, save: bool) -> tuple[int, int, int, int, int]:
        """(warps, ROWS_LOG, BLOCK_D, CHUNK, NC) of the forward: time is split into NC chunks of
        CHUNK steps when the grid is small; with grad (save) only if the backward's grid, which
        runs the same chunks, is small too."""
        elems, warps, rows_log = self.layout(NP)
        BDs = self.block_d(d, NP, G, elems)
        CH, NC = self.chunks(L, cdiv(d, BDs) * b * warps)
        bwd_warps = cdiv(d, self.block_d(d, NP, G, self.bwd_elems)) * b * self.bwd_warps
        if NC == 1 or not save or bwd_warps < self.chunk_below:
            return warps, rows_log, BDs, CH, NC
        if NP > 32:             # a small grid that may not split: more lanes per channel
            warps, rows_log = self.big_wide.warps, self.big_wide.rows_log
            BDs = self.block_d(d, NP, G, self.big_wide.elems)
        return warps, rows_log, BDs, cdiv(L, 8) * 8, 1

    def chunks(self, L: int, warps: int) -> tuple[int, int]:
        """(CHUNK, NC): time split into NC chunks of CHUNK steps (a multiple of 8) for a grid of
        ``warps`` warps."""
        if warps >= self.chunk_below:
            return cdiv(L, 8) * 8, 1
        nc = max(1, min(cdiv(self.target_warps, max(1, warps)), L // max(8, self.min_chunk)))
        ch = cdiv(cdiv(L, nc), 8) * 8
        return ch, cdiv(L, ch)

    def block_d(self, d: int, NP: int, G: int, elems: int) -> int:
        """Channels per program: ``elems`` / NP, a power of two, dividing a group's channels."""
        bd = max(1, min(elems // NP, next_pow2(d)))
        return pow2_divisor(d // G, bd) if G > 1 else bd

    def reads_bc_time_major(self, rows_log: int, NC: int) -> bool:
        """Whether the forward reads B and C time-major: in Triton's layout, and in rows when time
        is not split into chunks (on split grids in rows, the copies measured slower)."""
        return self.bc_time_major_rows and NC == 1 if rows_log else self.bc_time_major

    def prefetches_bc(self, bc_t: bool, rows_log: int, NP: int, NC: int) -> bool:
        """Whether the forward loads time-major B and C a tile ahead: where a thread's tile of them
        is small (at most 4 states per thread), and not on a grid split in time, whose many
        programs want the registers for occupancy."""
        return self.bc_prefetch and bc_t and NP <= 16 and rows_log <= 2 and NC == 1

    def reduces_by_scatter(self, rows_log: int, NP: int, BLOCK_D: int, warps: int) -> bool:
        """Whether the forward sums y by the reduce-scatter: only for the layout its PTX is written
        for, Triton's for an (8, 16) state in one warp (4 lanes per channel)."""
        return self.reduce_scatter and rows_log == 0 and NP == 16 and BLOCK_D == 8 and warps == 1


def pow2_divisor(x: int, cap: int) -> int:
    """Largest power of two <= cap that divides x."""
    p = 1
    while p * 2 <= cap and x % (p * 2) == 0:
        p *= 2
    return p


DEFAULT_PLAN = SelectiveScanPlan(
    small=Layout(128, 1, 0),        # n <= 16: one warp per 8 channels in Triton's layout
    mid=Layout(256, 1, 3),          # n = 32: rows of 8
    big=Layout(512, 1, 4),          # n >= 64: rows of 16, one warp per 8 channels on 4 lanes each
    big_wide=Layout(512, 4, 0),     # 16 lanes per channel
    cheap_softplus_max_np=32,
    pin_tile_math=True,
    bc_time_major=True,
    bc_time_major_rows=True,
    bc_prefetch=True,
    reduce_scatter=True,
    bwd_elems=128,
    bwd_warps=1,
    bwd_bc_time_major=True,
    bwd_prefetch_max_n=32,
    chunk_below=1024,               # b4 d2048 n16 (1024 one-warp programs) runs unsplit
    target_warps=16384,             # b1 l32768: ~64 chunks
    min_chunk=256,
    fast_ptx=not knobs.INTERPRET,
)
