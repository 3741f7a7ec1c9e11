"""Mamba-1 selective scan in Triton: the launches and the autograd function.

Same signatures and semantics as ``reference.py`` (math in fp32, also for fp64 inputs).
NOTES.md has the design; docs/kernel-tuning.md the measurements. The kernels live beside:
``fused_fwd.py`` and ``fused_bwd.py`` (the scans), ``tiles.py`` (their Triton helpers),
``fused_step.py`` (the decode step). This file chooses each launch's layout and grid (the
knobs below) and holds the time-major copy of B and C.

One program per (batch, channel block[, time chunk]) keeps the (BLOCK_D, N) state in registers
and walks time in 8-step tiles: (BLOCK_D, 8) tile loads one tile ahead, per-channel math on the
tile (kept off the state's repeated lanes: ``_pin``), ``tl.split`` into 8 columns and an
unrolled recurrence (``_fwd_seq_kernel``; the state in rows of 8 or 16 states per thread at
n >= 32, ``_to_rows``; B and C read per step from time-major copies, ``_time_major``, a tile
ahead where registers allow, ``bc_prefetch``; at n16 y is summed across a channel's lanes by a
reduce-scatter, ``_sum_lanes8``). Small grids split time into chunks (a states-only pass,
``_chunk_carry_kernel``, the real pass). The backward (``_bwd_seq_kernel``) walks the
tiles in reverse from per-tile checkpoints, recomputing the 8 states in registers; dB/dC are
reduced over the channel block per tile and added with fp32 atomics.

The first version (``tl.associative_scan`` over time tiles, ~6x slower: time landed across the
lanes) is described in NOTES.md and docs/kernel-tuning.md; it is no longer in the code.

seq_idx (b, l) int marks packed sequences: where the id changes the decay is 0 (state restarts).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from hybridlab.kernels import knobs
from hybridlab.kernels.grad_mode import wants_grad
from hybridlab.kernels.launch import FastKernel, cdiv, next_pow2

from .fused_bwd import _bwd_carry_kernel, _bwd_seq_kernel
from .fused_fwd import _chunk_carry_kernel, _fwd_seq_kernel
from .fused_step import _pow2_divisor, selective_state_update  # noqa: F401  (the decode op lives beside)
from .tiles import _softplus, _softplus_fwd, _to_rows  # noqa: F401  (tests check them through this module)

_INTERPRET = knobs.INTERPRET
#: the forward's inline PTX (softplus, gate, y's reduce-scatter: _ex2_ftz, _silu, _sum_lanes8);
#: the interpreter cannot run PTX and takes their tl twins
FAST_PTX = not _INTERPRET


# ----------------------------------------------------------------------------------------------
# host side
# The launches go through FastKernel (launch.py): a Triton JIT launch takes 28-61 us of host time,
# and the forward's wall time includes the host time before its one big kernel starts.
_fast_fwd_seq_kernel = FastKernel(_fwd_seq_kernel)
_fast_chunk_carry_kernel = FastKernel(_chunk_carry_kernel)
_fast_bwd_carry_kernel = FastKernel(_bwd_carry_kernel)
_fast_bwd_seq_kernel = FastKernel(_bwd_seq_kernel)


#: Tuning knobs. *_ELEMS: BLOCK_D * N-padded elements per program (sets BLOCK_D), *_WARPS: warps
#: per program, *_ROWS_LOG: the forward's state in rows of 2**ROWS_LOG states per thread
#: (_to_rows; 0: Triton's layout, 4 states per thread, channels on NP/4 lanes). Measured on the
#: H100 (scripts/gpu/ss_bench.py, 2026-11-23 15:3x-16:4x; selective_scan/NOTES.md):
#: - n <= 16 unsplit: one warp per 8 channels in Triton's layout, both ways (b4: 0.487 ms against
#:   0.641 in rows of 8 and 0.504 in rows of 4);
#: - n = 32: rows of 8, one warp per 8 to 16 channels (b4 n32 0.764 against 1.135); n <= 16 with
#:   time split into chunks (small grids: b1 l32768) was in rows of 8 too (1.313 against 1.420)
#:   until B and C were time-major (SEQ_SPLIT_IN_ROWS);
#: - n >= 64: rows of 16, one warp per 8 channels on 4 lanes each (b4 n64 1.286 against 2.248
#:   in Triton's layout with 4 warps, 16 lanes per channel; n128 4.322 against 5.843).
SEQ_ELEMS, SEQ_WARPS, SEQ_ROWS_LOG = 128, 1, 0
SEQ_ELEMS_MID, SEQ_WARPS_MID, SEQ_ROWS_LOG_MID = 256, 1, 3        # n = 32 (or split, below)
#: n <= 16 split in time takes the MID launch (rows of 8) instead of Triton's layout: no longer,
#: since Triton's layout reads B and C time-major there (b1 l32768 n16 forward 1.199 ms in rows,
#: without time-major B and C, against 1.051; f+b 4.622 against 4.446; H200, 2026-11-23)
SEQ_SPLIT_IN_ROWS = False
SEQ_ELEMS_BIG_N, SEQ_WARPS_BIG_N, SEQ_ROWS_LOG_BIG_N = 512, 1, 4  # N padded >= 64
#: n >= 64 with grad on a grid too small for one warp per 8 channels that may not split (see
#: below): Triton's layout, 16 lanes per channel (b1 l32768 n64 f+b 21.7 ms against 24.3 in rows)
SEQ_ELEMS_BIG_N_WIDE, SEQ_WARPS_BIG_N_WIDE = 512, 4
#: the forward's softplus is _softplus_fwd up to this padded N, _softplus above (n64 in rows:
#: 1.299 ms with _softplus_fwd against 1.286)
SEQ_CHEAP_SOFTPLUS_MAX_NP = 32
#: the per-channel tile math (softplus, dt*u; the backward's gated dy) passes through _pin:
#: without it Triton recomputes that math in the state's layout, where a channel's lanes each
#: repeat it, and once more in the load's layout (n16 forward tile loop: 509 SASS instructions
#: without, 438 with; b4 n16 0.487 -> 0.473 ms, n64 1.277 -> 1.216, H100 2026-11-23 18:0x)
SEQ_PIN_TILE_MATH = True
#: the forward in Triton's layout (ROWS_LOG 0) reads B and C from fp32 time-major copies
#: (_time_major), one (NP,) vector per step, instead of (NP, 8) bf16 tiles that Triton passes
#: through shared memory to split into steps (tile loop 438 -> 360; b4 n16 0.487 -> 0.462 ms)
SEQ_BC_TIME_MAJOR = True
#: the same for the state in rows on a grid not split in time (tile loop n32 674 -> 599, n64
#: 1181 -> 1055 SASS instructions; b4 n64 1.487 -> 1.059 ms, n32 0.759 -> 0.702). Split in time
#: (b1 l32768 n16) it lost, 1.202 -> 2.050 ms (H100, 2026-11-23 18:30, BENCHMARKS.md), so it is
#: off there (bc_time_major).
SEQ_BC_TIME_MAJOR_ROWS = True
#: time-major B and C loaded a tile ahead, like u, dt and z (bc_prefetch). Read a tile at a time
#: at the top of the loop, they were the stall: 47% of the warp stall samples sat on the first
#: uses of B and C (Nsight Compute, b4 n16, H100). Ahead, in a second set of 64 registers with
#: the loop unrolled by 2: b4 n16 0.428 -> 0.407 ms (H200, 2026-11-23; without the unroll the
#: moves between the sets made it 0.441, each step's loaded after its own use 0.458)
SEQ_BC_PREFETCH = True
#: (u, dt and z two tiles ahead instead of one, SEQ_UDZ_TWO_AHEAD, lost and is gone: b4 n16
#: forward 0.400 ms against 0.395, f+b 1.814 against 1.838, H100 2026-11-23; NOTES.md)
#: y summed across a channel's 4 lanes by a reduce-scatter (_sum_lanes8) instead of a shuffle
#: all-reduce per step and a layout change (n16, Triton's layout)
SEQ_REDUCE_SCATTER = True
SEQ_BWD_ELEMS, SEQ_BWD_WARPS = 128, 1
#: the backward reads B and C time-major too (_time_major): f+b b1 l32768 n16 4.622 -> 4.504 ms,
#: b4 n64 10.064 -> 9.215 (H200, 2026-11-23, scripts/gpu/ss_bench.py)
SEQ_BWD_BC_TIME_MAJOR = True
SEQ_BWD_PREFETCH_MAX_N = 32                         # above: no prefetch (255 registers, spills)
#: v2 splits time into chunks (a pass for each chunk's end state, a carry, then the real pass)
#: when the grid has fewer than SEQ_CHUNK_BELOW warps: up to SEQ_TARGET_WARPS warps, chunks of
#: >= SEQ_MIN_CHUNK steps. (b4 d2048 n16 is faster unsplit, 1024 warps; b1 l32768 wants ~64
#: chunks.) With grad, only when the backward's grid is that small too: the backward runs the
#: forward's chunks, and a chunked backward costs more than the split saves (b1 l32768 n64 f+b
#: 25.1 ms split against 21.7 unsplit in Triton's layout).
SEQ_CHUNK_BELOW, SEQ_TARGET_WARPS, SEQ_MIN_CHUNK = 1024, 16384, 256


def fwd_launch(NP: int, split: bool) -> tuple[int, int, int]:
    """(elements per program, warps, ROWS_LOG) of the forward for a padded state width NP, with
    time split into chunks (a small grid) or not."""
    if NP > 32:
        elems, warps, rows = SEQ_ELEMS_BIG_N, SEQ_WARPS_BIG_N, SEQ_ROWS_LOG_BIG_N
    elif NP == 32 or (split and SEQ_SPLIT_IN_ROWS):
        elems, warps, rows = SEQ_ELEMS_MID, SEQ_WARPS_MID, SEQ_ROWS_LOG_MID
    else:
        elems, warps, rows = SEQ_ELEMS, SEQ_WARPS, SEQ_ROWS_LOG
    return elems, warps, min(rows, NP.bit_length() - 1)      # at most NP states per thread


def fwd_grid(b: int, d: int, L: int, NP: int, G: int, save: bool) -> tuple[int, int, int, int, int]:
    """(warps, ROWS_LOG, BLOCK_D, CHUNK, NC) of the forward: time is split into chunks when the
    grid is small (then with the split launch, and its own chunks); with grad (save) only if the
    backward's grid, which runs the same chunks, is small too."""
    elems, warps, rows_log = fwd_launch(NP, split=False)
    BDs = _seq_block_d(d, NP, G, elems)
    CH, NC = _seq_chunks(L, cdiv(d, BDs) * b * warps)
    bwd_warps = cdiv(d, _seq_block_d(d, NP, G, SEQ_BWD_ELEMS)) * b * SEQ_BWD_WARPS
    if NC > 1 and save and bwd_warps >= SEQ_CHUNK_BELOW and NP > 32:
        # a small grid that may not split: n >= 64 takes more lanes per channel instead
        warps, rows_log = SEQ_WARPS_BIG_N_WIDE, 0
        BDs = _seq_block_d(d, NP, G, SEQ_ELEMS_BIG_N_WIDE)
    if NC == 1 or (save and bwd_warps >= SEQ_CHUNK_BELOW):
        return warps, rows_log, BDs, cdiv(L, 8) * 8, 1
    elems, warps, rows_log = fwd_launch(NP, split=True)
    BDs = _seq_block_d(d, NP, G, elems)
    CH, NC = _seq_chunks(L, cdiv(d, BDs) * b * warps)
    return warps, rows_log, BDs, CH, NC


def _np(n: int) -> int:
    """N padded to a power of two (>= 2): the state tile's width."""
    return max(2, next_pow2(n))


def _bc_view(M: torch.Tensor):
    """B/C (b,n,l) or (b,g,n,l) -> (tensor, G, strides b, g, n, l)."""
    if M.dim() == 3:
        return M, 1, (M.stride(0), 0, M.stride(1), M.stride(2))
    return M, M.shape[1], tuple(M.stride())


@triton.jit
def _pack_one(src, dst, bg, G, n, L, Lp, s_b, s_g, s_n, s_l, pid_t, NP: tl.constexpr,
              BLOCK_T: tl.constexpr):
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = tl.arange(0, NP)
    x = tl.load(src + (bg // G) * s_b + (bg % G) * s_g + offs_n[None, :] * s_n + offs_t[:, None] * s_l,
                mask=(offs_t < L)[:, None] & (offs_n < n)[None, :], other=0.0)
    tl.store(dst + bg * Lp * NP + offs_t[:, None] * NP + offs_n[None, :], x.to(tl.float32),
             mask=(offs_t < Lp)[:, None])


@triton.jit
def _time_major_kernel(B_ptr, C_ptr, Bt_ptr, Ct_ptr, G, n, L, Lp,
                       sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                       NP: tl.constexpr, BLOCK_T: tl.constexpr):
    """Program (time block, batch * group, B or C): its fp32 time-major rows, zeros past n and L."""
    pid_t, bg = tl.program_id(0), tl.program_id(1)
    if tl.program_id(2) == 0:
        _pack_one(B_ptr, Bt_ptr, bg, G, n, L, Lp, sB_b, sB_g, sB_n, sB_l, pid_t, NP, BLOCK_T)
    else:
        _pack_one(C_ptr, Ct_ptr, bg, G, n, L, Lp, sC_b, sC_g, sC_n, sC_l, pid_t, NP, BLOCK_T)


_fast_time_major_kernel = FastKernel(_time_major_kernel)


def _time_major(B: torch.Tensor, C: torch.Tensor, G: int, NP: int, extra_tile: bool = False):
    """B and C (b, n, l) / (b, g, n, l) -> fp32 (b, G, Lp, NP) copies (zeros past n and l), each
    with its strides b, g, n, l, in one launch: the forward in Triton's layout loads each step's
    (NP,) vector in one 16-byte load per lane, straight into the state's layout (see
    SEQ_BC_TIME_MAJOR)."""
    (Bv, _, sB), (Cv, _, sC) = _bc_view(B), _bc_view(C)
    b, n, L = B.shape[0], B.shape[-2], B.shape[-1]
    # whole 8-step tiles: the kernel's loads are unmasked. extra_tile, for a forward that loads
    # a tile ahead (SEQ_BC_PREFETCH) over an even number of tiles: zeros up to a whole pair of
    # tiles, and one tile more
    Lp = cdiv(L, 16) * 16 + 8 if extra_tile else cdiv(L, 8) * 8
    Bt, Ct = (torch.empty(b, G, Lp, NP, device=B.device, dtype=torch.float32) for _ in range(2))
    BLOCK_T = max(8, min(128, 2048 // NP))
    _fast_time_major_kernel[(cdiv(Lp, BLOCK_T), b * G, 2)](
        Bv, Cv, Bt, Ct, G, n, L, Lp, *sB, *sC, NP=NP, BLOCK_T=BLOCK_T, num_warps=4)
    strides = (G * Lp * NP, Lp * NP, 1, NP)
    return (Bt, strides), (Ct, strides)


def _f32c(t):
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, save):
    b, d, L = u.shape
    n = A.shape[1]
    B, G, sB = _bc_view(B)
    C, Gc, sC = _bc_view(C)
    if G != Gc or d % G:
        raise ValueError(f"B and C need the same number of groups dividing d={d}: {G} vs {Gc}")
    NP = _np(n)
    D_, bias_, h0_ = _f32c(D), _f32c(delta_bias), _f32c(initial_state)
    seq = seq_idx.to(torch.int32).contiguous() if seq_idx is not None else None
    out = torch.empty(b, d, L, device=u.device, dtype=u.dtype)
    last = torch.empty(b, d, n, device=u.device, dtype=torch.float32)
    zz = z if z is not None else u
    warps, rows_log, BDs, CH, NC = fwd_grid(b, d, L, NP, G, save)
    bc_t = bc_time_major(rows_log, NC)
    bc_pf = bc_prefetch(bc_t, rows_log, NP, NC)
    if bc_t:
        (B, sB), (C, sC) = _time_major(B, C, G, NP, extra_tile=bc_pf)
    nd = cdiv(d, BDs)
    ck_t = 8                                    # a checkpoint per 8-step tile
    f32 = dict(device=u.device, dtype=torch.float32)
    ckpt = torch.empty(b, cdiv(L, ck_t), d, n, **f32) if save else last
    args = (L, d, n, d // G, CH, NC,
            *u.stride(), *delta.stride(), *zz.stride(), *sB, *sC, *A.stride(),
            *(seq.stride() if seq is not None else (0, 0)))
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                 SOFTPLUS=bool(delta_softplus), HAS_SEQ=seq is not None, BLOCK_D=BDs, NP=NP,
                 CKPT_T=ck_t, FAST=FAST_PTX, ROWS_LOG=rows_log,
                 CHEAP_SP=NP <= SEQ_CHEAP_SOFTPLUS_MAX_NP, PIN=SEQ_PIN_TILE_MATH, BC_T=bc_t,
                 BC_PF=bc_pf, RS=reduce_scatter(rows_log, NP, BDs, warps),
                 num_warps=warps)
    dummy = last
    P = None
    hin = h0_
    if NC > 1:      # pass 1: each chunk's own end state and decay; carry; pass 2 below
        S, P = torch.empty(b, NC, d, n, **f32), torch.empty(b, NC, d, n, **f32)
        # the backward's carry needs every chunk's decay, the forward's all but the last
        _fast_fwd_seq_kernel[(nd, b, NC if save else NC - 1)](
            u, delta, A, B, C, D_ if D_ is not None else dummy, zz,
            bias_ if bias_ is not None else dummy, dummy, seq if seq is not None else dummy,
            out, last, dummy, S, P, *args, HAS_HIN=False, SAVE_CKPT=False, STATES_ONLY=True,
            **flags)
        hin = torch.empty(b, NC, d, n, **f32)
        if h0_ is not None:
            hin[:, 0] = h0_
        else:
            hin[:, 0] = 0.0
        _chunk_carry(P, S, hin, reverse=False)
    _fast_fwd_seq_kernel[(nd, b, NC)](
        u, delta, A, B, C, D_ if D_ is not None else dummy, zz,
        bias_ if bias_ is not None else dummy, hin if hin is not None else dummy,
        seq if seq is not None else dummy, out, last, ckpt, dummy, dummy,
        *args, HAS_HIN=hin is not None, SAVE_CKPT=save, STATES_ONLY=False, **flags)
    # the time-major B and C copies, for a backward that reads them too (SEQ_BWD_BC_TIME_MAJOR)
    time_major = (B, sB, C, sC) if bc_t else None
    return out, last, (ckpt if save else None), seq, (CH, NC, P), time_major


def _chunk_carry(P, S, X, reverse):
    b, NC, d, n = P.shape
    BLOCK = min(1024, next_pow2(d * n))
    _fast_chunk_carry_kernel[(b, cdiv(d * n, BLOCK))](P, S, X, NC, d * n, REVERSE=reverse,
                                                         BLOCK=BLOCK, num_warps=4)


def bc_time_major(rows_log: int, NC: int) -> bool:
    """Whether the forward reads B and C from time-major copies (SEQ_BC_TIME_MAJOR*): in Triton's
    layout, and in rows when time is not split into chunks."""
    return SEQ_BC_TIME_MAJOR_ROWS and NC == 1 if rows_log else SEQ_BC_TIME_MAJOR


def bc_prefetch(bc_t: bool, rows_log: int, NP: int, NC: int) -> bool:
    """Whether the forward loads time-major B and C a tile ahead (SEQ_BC_PREFETCH): where a
    thread's tile of them is small (at most 4 states per thread: 64 registers), and not on a grid
    split in time, whose many programs want the registers for occupancy (b1 l32768 n16: 1.222 ms
    with, 1.051 without)."""
    return SEQ_BC_PREFETCH and bc_t and NP <= 16 and rows_log <= 2 and NC == 1


def reduce_scatter(rows_log: int, NP: int, BLOCK_D: int, warps: int) -> bool:
    """Whether the forward sums y across lanes by the reduce-scatter (SEQ_REDUCE_SCATTER): for the
    layout it is written for, Triton's for a (8, 16) state in one warp (4 lanes per channel)."""
    return SEQ_REDUCE_SCATTER and rows_log == 0 and NP == 16 and BLOCK_D == 8 and warps == 1


def _seq_chunks(L, warps):
    """(CHUNK, NC): split time into NC chunks (CHUNK a multiple of 8 steps), see SEQ_CHUNK_BELOW."""
    if warps >= SEQ_CHUNK_BELOW:
        return cdiv(L, 8) * 8, 1
    nc = max(1, min(cdiv(SEQ_TARGET_WARPS, max(1, warps)), L // max(8, SEQ_MIN_CHUNK)))
    ch = cdiv(cdiv(L, nc), 8) * 8
    return ch, cdiv(L, ch)


def _seq_block_d(d, NP, G, elems):
    bd = max(1, min(elems // NP, next_pow2(d)))
    return _pow2_divisor(d // G, bd) if G > 1 else bd


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus):
        # selective_scan calls this only when a gradient is wanted (grad_mode.wants_grad)
        out, last, ckpt, seq, (CH, NC, P), time_major = _fwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, True)
        ctx.chunk, ctx.nc = CH, NC
        Bt = Ct = None
        if time_major is not None and SEQ_BWD_BC_TIME_MAJOR:    # the backward reuses them
            Bt, ctx.sBt, Ct, ctx.sCt = time_major
        ctx.set_materialize_grads(False)      # no zero-filled dlast when last_state is unused
        ctx.softplus = bool(delta_softplus)
        ctx.has_h0 = initial_state is not None
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq, ckpt, P, Bt, Ct)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, seq, ckpt, P, Bt, Ct = ctx.saved_tensors
        b, d, L = u.shape
        n = A.shape[1]
        if dout is None:
            dout = torch.zeros(b, d, L, device=u.device, dtype=u.dtype)
        Bv, G, sB = _bc_view(B)
        Cv, _, sC = _bc_view(C)
        NP = _np(n)
        dev = u.device
        f32 = dict(device=dev, dtype=torch.float32)
        du = torch.empty(b, d, L, device=dev, dtype=u.dtype)
        ddelta = torch.empty(b, d, L, device=dev, dtype=delta.dtype)
        dz = torch.empty(b, d, L, device=dev, dtype=z.dtype) if z is not None else None
        dB = torch.zeros(b, G, n, L, **f32)
        dC = torch.zeros(b, G, n, L, **f32)
        NC = ctx.nc                                     # rows of the dA, dD, d bias partials
        dA = torch.empty(b * NC, d, n, **f32)
        dD = torch.empty(b * NC, d, **f32) if D is not None else None
        dbias = torch.empty(b * NC, d, **f32) if delta_bias is not None else None
        dh0 = torch.empty(b, d, n, **f32) if ctx.has_h0 else None
        D_, bias_ = _f32c(D), _f32c(delta_bias)
        dlast_ = _f32c(dlast)
        zz = z if z is not None else u
        dummy = dA
        bc_t = SEQ_BWD_BC_TIME_MAJOR
        Bk, Ck, sBk, sCk = Bv, Cv, sB, sC
        if bc_t and Bt is not None:         # the forward's copies
            Bk, Ck, sBk, sCk = Bt, Ct, ctx.sBt, ctx.sCt
        elif bc_t:
            (Bk, sBk), (Ck, sCk) = _time_major(B, C, G, NP)
        strides = (*u.stride(), *delta.stride(), *zz.stride(), *sBk, *sCk, *A.stride(),
                   *(seq.stride() if seq is not None else (0, 0)), *dout.stride())
        flags = dict(
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.softplus, HAS_SEQ=seq is not None, WANT_DH0=ctx.has_h0)
        outs = (du, ddelta, dz if dz is not None else dummy, dB, dC, dA,
                dD if dD is not None else dummy, dbias if dbias is not None else dummy,
                dh0 if dh0 is not None else dummy)
        ins = (u, delta, A, Bk, Ck, D_ if D_ is not None else dummy, zz,
               bias_ if bias_ is not None else dummy, seq if seq is not None else dummy, ckpt, dout)
        BDs = _seq_block_d(d, NP, G, SEQ_BWD_ELEMS)
        nd = cdiv(d, BDs)
        xin = dlast_
        if NC > 1:      # pass 1: each chunk's own adjoint carry; carry right to left
            Y = torch.empty(b, NC, d, n, **f32)
            _fast_bwd_carry_kernel[(nd, b, NC - 1)](
                delta, A, Cv, zz, bias_ if bias_ is not None else dummy,
                seq if seq is not None else dummy, dout, Y, L, d, n, d // G, ctx.chunk, NC,
                *delta.stride(), *zz.stride(), *sC, *A.stride(),
                *(seq.stride() if seq is not None else (0, 0)), *dout.stride(),
                HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus,
                HAS_SEQ=seq is not None, BLOCK_D=BDs, NP=NP, PIN=SEQ_PIN_TILE_MATH,
                num_warps=SEQ_BWD_WARPS)
            xin = torch.empty(b, NC, d, n, **f32)
            if dlast_ is not None:
                xin[:, NC - 1] = dlast_
            else:
                xin[:, NC - 1] = 0.0
            _chunk_carry(P, Y, xin, reverse=True)
        _fast_bwd_seq_kernel[(nd, b, NC)](
            *ins, xin if xin is not None else dummy, *outs,
            L, d, n, d // G, G, ctx.chunk, NC, *strides, **flags, HAS_XIN=xin is not None,
            BLOCK_D=BDs, NP=NP, PREFETCH=NP <= SEQ_BWD_PREFETCH_MAX_N, PIN=SEQ_PIN_TILE_MATH, BC_T=bc_t,
            num_warps=SEQ_BWD_WARPS)
        dB = dB.to(B.dtype) if B.dim() == 4 else dB[:, 0].to(B.dtype)
        dC = dC.to(C.dtype) if C.dim() == 4 else dC[:, 0].to(C.dtype)
        return (du, ddelta, dA.sum(0).to(A.dtype), dB, dC,
                dD.sum(0).to(D.dtype) if D is not None else None, dz,
                dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
                dh0.to(ctx.h0_dtype) if dh0 is not None else None, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False, seq_idx=None):
    """Triton selective scan; see reference.selective_scan for shapes and semantics."""
    if not wants_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        # no autograd node: no checkpoints (b * l/8 * d * n fp32, 268 MB at b4 l4096 d2048 n16)
        out, last, *_ = _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                             seq_idx, save=False)
        return (out, last) if return_last_state else out
    out, last = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                     delta_softplus)
    return (out, last) if return_last_state else out
