"""Mamba-1 selective scan in Triton: the launches and the autograd function.

Same signatures and semantics as ``reference.py`` (math in fp32, also for fp64 inputs).
DESIGN.md has the design. The kernels live beside: ``fused_fwd.py`` and ``fused_bwd.py`` (the
scans), ``tiles.py`` (their Triton helpers), ``fused_step.py`` (the decode step). Each launch's
layout and grid come from the launch plan (plan.py, ``plan=``); this file also holds the
time-major copy of B and C.

One program per (batch, channel block[, time chunk]) keeps the (BLOCK_D, N) state in registers
and walks time in 8-step tiles: (BLOCK_D, 8) tile loads one tile ahead, per-channel math on the
tile (kept off the state's repeated lanes: ``_pin``), ``tl.split`` into 8 columns and an
unrolled recurrence (``_fwd_seq_kernel``; the state in rows of 8 or 16 states per thread at
n >= 32, ``_to_rows``; B and C read per step from time-major copies, ``_time_major``, a tile
ahead where registers allow; at n16 y is summed across a channel's lanes by a reduce-scatter,
``_sum_lanes8``). Small grids split time into chunks (a states-only pass,
``_chunk_carry_kernel``, the real pass). The backward (``_bwd_seq_kernel``) walks the
tiles in reverse from per-tile checkpoints, recomputing the 8 states in registers; dB/dC are
reduced over the channel block per tile and added with fp32 atomics.

seq_idx (b, l) int marks packed sequences: where the id changes the decay is 0 (state restarts).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from hybridlab.kernels.grad_mode import wants_grad
from hybridlab.kernels.launch import FastKernel, cdiv, next_pow2

from .fused_bwd import _bwd_carry_kernel, _bwd_seq_kernel
from .fused_fwd import _chunk_carry_kernel, _fwd_seq_kernel
from .fused_step import selective_state_update  # noqa: F401  (the decode op lives beside)
from .plan import DEFAULT_PLAN, SelectiveScanPlan
from .tiles import _softplus, _softplus_fwd, _to_rows  # noqa: F401  (tests check them through this module)

# The launches go through FastKernel (launch.py): the forward's wall time includes the host
# time before its one big kernel starts, and Triton's own launch path costs more of it.
_fast_fwd_seq_kernel = FastKernel(_fwd_seq_kernel)
_fast_chunk_carry_kernel = FastKernel(_chunk_carry_kernel)
_fast_bwd_carry_kernel = FastKernel(_bwd_carry_kernel)
_fast_bwd_seq_kernel = FastKernel(_bwd_seq_kernel)


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
    (NP,) vector in one 16-byte load per lane, straight into the state's layout (the plan's
    bc_time_major)."""
    (Bv, _, sB), (Cv, _, sC) = _bc_view(B), _bc_view(C)
    b, n, L = B.shape[0], B.shape[-2], B.shape[-1]
    # whole 8-step tiles: the kernel's loads are unmasked. extra_tile, for a forward that loads
    # a tile ahead (the plan's bc_prefetch) over an even number of tiles: zeros up to a whole pair of
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


def _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, save, plan):
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
    warps, rows_log, BDs, CH, NC = plan.forward_grid(b, d, L, NP, G, save)
    bc_t = plan.reads_bc_time_major(rows_log, NC)
    bc_pf = plan.prefetches_bc(bc_t, rows_log, NP, NC)
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
                 CKPT_T=ck_t, FAST=plan.fast_ptx, ROWS_LOG=rows_log,
                 CHEAP_SP=NP <= plan.cheap_softplus_max_np, PIN=plan.pin_tile_math, BC_T=bc_t,
                 BC_PF=bc_pf, RS=plan.reduces_by_scatter(rows_log, NP, BDs, warps),
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
    # the time-major B and C copies, for a backward that reads them too (bwd_bc_time_major)
    time_major = (B, sB, C, sC) if bc_t else None
    return out, last, (ckpt if save else None), seq, (CH, NC, P), time_major


def _chunk_carry(P, S, X, reverse):
    b, NC, d, n = P.shape
    BLOCK = min(1024, next_pow2(d * n))
    _fast_chunk_carry_kernel[(b, cdiv(d * n, BLOCK))](P, S, X, NC, d * n, REVERSE=reverse,
                                                         BLOCK=BLOCK, num_warps=4)


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, plan):
        # selective_scan calls this only when a gradient is wanted (grad_mode.wants_grad)
        out, last, ckpt, seq, (CH, NC, P), time_major = _fwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, True, plan)
        ctx.chunk, ctx.nc, ctx.plan = CH, NC, plan
        Bt = Ct = None
        if time_major is not None and plan.bwd_bc_time_major:    # the backward reuses them
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
        plan = ctx.plan
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
        bc_t = plan.bwd_bc_time_major
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
        BDs = plan.block_d(d, NP, G, plan.bwd_elems)
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
                HAS_SEQ=seq is not None, BLOCK_D=BDs, NP=NP, PIN=plan.pin_tile_math,
                num_warps=plan.bwd_warps)
            xin = torch.empty(b, NC, d, n, **f32)
            if dlast_ is not None:
                xin[:, NC - 1] = dlast_
            else:
                xin[:, NC - 1] = 0.0
            _chunk_carry(P, Y, xin, reverse=True)
        _fast_bwd_seq_kernel[(nd, b, NC)](
            *ins, xin if xin is not None else dummy, *outs,
            L, d, n, d // G, G, ctx.chunk, NC, *strides, **flags, HAS_XIN=xin is not None,
            BLOCK_D=BDs, NP=NP, PREFETCH=NP <= plan.bwd_prefetch_max_n, PIN=plan.pin_tile_math, BC_T=bc_t,
            num_warps=plan.bwd_warps)
        dB = dB.to(B.dtype) if B.dim() == 4 else dB[:, 0].to(B.dtype)
        dC = dC.to(C.dtype) if C.dim() == 4 else dC[:, 0].to(C.dtype)
        return (du, ddelta, dA.sum(0).to(A.dtype), dB, dC,
                dD.sum(0).to(D.dtype) if D is not None else None, dz,
                dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
                dh0.to(ctx.h0_dtype) if dh0 is not None else None, None, None, None)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False, seq_idx=None,
                   plan: SelectiveScanPlan = DEFAULT_PLAN):
    """Triton selective scan; see reference.selective_scan for shapes and semantics. ``plan``:
    the launch settings (plan.py), which change speed, not results."""
    if not wants_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        # no autograd node: no checkpoints (b * l/8 * d * n fp32)
        out, last, *_ = _fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                             seq_idx, False, plan)
        return (out, last) if return_last_state else out
    out, last = _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                     delta_softplus, plan)
    return (out, last) if return_last_state else out
