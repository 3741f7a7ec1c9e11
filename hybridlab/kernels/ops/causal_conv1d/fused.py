"""Depthwise causal conv1d in Triton: forward, backward, and the one-step decode update.

Same signatures and semantics as ``reference.py`` (fp32 accumulation; output in x's dtype).

One program owns a (BLOCK_D channels, BLOCK_L positions) tile; each of the W taps is a shifted
tile load (the W loads overlap, so they hit cache). Positions before 0 read ``initial_state``;
with ``seq_idx`` a tap that crosses a change of id (or reaches before 0) is dropped.

The backward recomputes the pre-activation at the W positions each input feeds instead of
storing it: dx[t] = sum_j w[W-1-j] * dpre[t+j]. The same kernel, started at position -(W-1),
gives d(initial_state). dweight and dbias come out as per-tile partials that torch sums
(deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...launch import cdiv, next_pow2


@triton.jit
def _x_at(x_ptr, h0_ptr, offs_d, pos, mask_d, L, sx_d, sx_l, sh_d, sh_w,
          HAS_H0: tl.constexpr, W: tl.constexpr):
    """(BLOCK_D, BLOCK_L) fp32 input at positions pos; pos < 0 reads the initial state."""
    m = mask_d[:, None] & ((pos >= 0) & (pos < L))[None, :]
    v = tl.load(x_ptr + offs_d[:, None] * sx_d + pos[None, :] * sx_l, mask=m, other=0.0).to(tl.float32)
    if HAS_H0:
        mh = mask_d[:, None] & ((pos < 0) & (pos >= 1 - W))[None, :]
        v += tl.load(h0_ptr + offs_d[:, None] * sh_d + (pos + W - 1)[None, :] * sh_w, mask=mh,
                     other=0.0).to(tl.float32)
    return v


@triton.jit
def _same_seq(seq_ptr, dst, src, L, s_l):
    """(BLOCK_L,) whether input position src may feed output position dst (same packed sequence)."""
    ok = (src >= 0) & (dst >= 0) & (dst < L) & (src < L)
    a = tl.load(seq_ptr + dst * s_l, mask=ok, other=0)
    b = tl.load(seq_ptr + src * s_l, mask=ok, other=0)
    return ok & (a == b)


@triton.jit
def _pre(x_ptr, h0_ptr, w_ptr, bias_ptr, seq_ptr, offs_d, q, mask_d, L,
         sx_d, sx_l, sh_d, sh_w, sw_d, sw_w, sseq_l,
         HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, W: tl.constexpr,
         BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """(BLOCK_D, BLOCK_L) pre-activation bias + sum_k w[k] x[q - (W-1) + k] at positions q."""
    acc = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
    for k in tl.static_range(W):
        src = q - (W - 1) + k
        xv = _x_at(x_ptr, h0_ptr, offs_d, src, mask_d, L, sx_d, sx_l, sh_d, sh_w, HAS_H0, W)
        if HAS_SEQ:
            xv = tl.where(_same_seq(seq_ptr, q, src, L, sseq_l)[None, :], xv, 0.0)
        wk = tl.load(w_ptr + offs_d * sw_d + k * sw_w, mask=mask_d, other=0.0).to(tl.float32)
        acc += wk[:, None] * xv
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    return acc


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, bias_ptr, h0_ptr, seq_ptr, y_ptr, L, d,
                sx_b, sx_d, sx_l, sw_d, sw_w, sh_b, sh_d, sh_w, sseq_b, sseq_l,
                HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, HAS_SEQ: tl.constexpr,
                SILU: tl.constexpr, W: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l, pid_d = tl.program_id(0), tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    q = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = offs_d < d
    pre = _pre(x_ptr + b * sx_b, h0_ptr + b * sh_b, w_ptr, bias_ptr, seq_ptr + b * sseq_b, offs_d,
               q, mask_d, L, sx_d, sx_l, sh_d, sh_w, sw_d, sw_w, sseq_l,
               HAS_H0, HAS_BIAS, HAS_SEQ, W, BLOCK_D, BLOCK_L)
    if SILU:
        pre = pre * tl.sigmoid(pre)
    tl.store(y_ptr + b * d * L + offs_d[:, None] * L + q[None, :], pre.to(y_ptr.dtype.element_ty),
             mask=mask_d[:, None] & (q < L)[None, :])


@triton.jit
def _bwd_kernel(x_ptr, w_ptr, bias_ptr, h0_ptr, seq_ptr, dy_ptr, dx_ptr, dw_ptr, dbias_ptr,
                L, d, p_start, n_pos,
                sx_b, sx_d, sx_l, sw_d, sw_w, sh_b, sh_d, sh_w, sseq_b, sseq_l,
                sdy_b, sdy_d, sdy_l, sdx_b, sdx_d, sdx_l,
                HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, HAS_SEQ: tl.constexpr,
                SILU: tl.constexpr, PARAMS: tl.constexpr, W: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """dx at positions p_start + [0, n_pos); with PARAMS also this tile's dw / dbias partials."""
    pid_l, pid_d = tl.program_id(0), tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    rel = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    p = p_start + rel                                    # input positions whose grad we want
    mask_d = offs_d < d
    xb, hb, sb = x_ptr + b * sx_b, h0_ptr + b * sh_b, seq_ptr + b * sseq_b
    dx = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
    for j in tl.static_range(W):                         # output q = p + j uses tap W-1-j on p
        q = p + j
        mq = (q >= 0) & (q < L)
        pre = _pre(xb, hb, w_ptr, bias_ptr, sb, offs_d, q, mask_d, L, sx_d, sx_l, sh_d, sh_w,
                   sw_d, sw_w, sseq_l, HAS_H0, HAS_BIAS, HAS_SEQ, W, BLOCK_D, BLOCK_L)
        dy = tl.load(dy_ptr + b * sdy_b + offs_d[:, None] * sdy_d + q[None, :] * sdy_l,
                     mask=mask_d[:, None] & mq[None, :], other=0.0).to(tl.float32)
        if SILU:
            sg = tl.sigmoid(pre)
            dpre = dy * sg * (1.0 + pre * (1.0 - sg))
        else:
            dpre = dy
        ok = mq
        if HAS_SEQ:
            ok = ok & _same_seq(seq_ptr + b * sseq_b, q, p, L, sseq_l)
        wk = tl.load(w_ptr + offs_d * sw_d + (W - 1 - j) * sw_w, mask=mask_d, other=0.0).to(tl.float32)
        dx += tl.where(ok[None, :], wk[:, None] * dpre, 0.0)
        if PARAMS and j == 0:                            # q = p: this tile's own outputs
            part = (b * tl.num_programs(0) + pid_l) * d + offs_d
            if HAS_BIAS:
                tl.store(dbias_ptr + part, tl.sum(dpre, axis=1), mask=mask_d)
            for k in tl.static_range(W):
                src = p - (W - 1) + k
                xv = _x_at(xb, hb, offs_d, src, mask_d, L, sx_d, sx_l, sh_d, sh_w, HAS_H0, W)
                if HAS_SEQ:
                    xv = tl.where(_same_seq(sb, p, src, L, sseq_l)[None, :], xv, 0.0)
                tl.store(dw_ptr + part * W + k, tl.sum(dpre * xv, axis=1), mask=mask_d)
    tl.store(dx_ptr + b * sdx_b + offs_d[:, None] * sdx_d + rel[None, :] * sdx_l,
             dx.to(dx_ptr.dtype.element_ty), mask=mask_d[:, None] & (rel < n_pos)[None, :])


BLOCK_D, BLOCK_L = 16, 64


def _silu(activation) -> bool:
    if activation in ("silu", "swish"):
        return True
    if activation is None:
        return False
    raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")


def _args(x, weight, h0, seq):
    """Strides shared by both kernels (dummies where an input is absent)."""
    sh = h0.stride() if h0 is not None else (0, 0, 0)
    ss = seq.stride() if seq is not None else (0, 0)
    return (*x.stride(), *weight.stride(), *sh, *ss)


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, seq_idx, silu):
        b, d, L = x.shape
        W = weight.shape[1]
        seq = seq_idx.to(torch.int32).contiguous() if seq_idx is not None else None
        y = torch.empty(b, d, L, device=x.device, dtype=x.dtype)
        grid = (cdiv(L, BLOCK_L), cdiv(d, BLOCK_D), b)
        _fwd_kernel[grid](
            x, weight, bias if bias is not None else weight,
            initial_state if initial_state is not None else x, seq if seq is not None else x, y,
            L, d, *_args(x, weight, initial_state, seq),
            HAS_BIAS=bias is not None, HAS_H0=initial_state is not None, HAS_SEQ=seq is not None,
            SILU=silu, W=W, BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L,
        )
        ctx.silu = silu
        ctx.save_for_backward(x, weight, bias, initial_state, seq)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, h0, seq = ctx.saved_tensors
        b, d, L = x.shape
        W = weight.shape[1]
        nl = cdiv(L, BLOCK_L)
        dx = torch.empty(b, d, L, device=x.device, dtype=x.dtype)
        dw = torch.empty(b, nl, d, W, device=x.device, dtype=torch.float32)
        dbias = torch.empty(b, nl, d, device=x.device, dtype=torch.float32) if bias is not None else dw
        common = (x, weight, bias if bias is not None else weight, h0 if h0 is not None else x,
                  seq if seq is not None else x, dy)
        flags = dict(HAS_BIAS=bias is not None, HAS_H0=h0 is not None, HAS_SEQ=seq is not None,
                     SILU=ctx.silu, W=W, BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L)
        _bwd_kernel[(nl, cdiv(d, BLOCK_D), b)](
            *common, dx, dw, dbias, L, d, 0, L, *_args(x, weight, h0, seq), *dy.stride(),
            *dx.stride(), PARAMS=True, **flags)
        dh0 = None
        if h0 is not None and ctx.needs_input_grad[3]:
            dh0 = torch.empty(b, d, W - 1, device=x.device, dtype=h0.dtype)
            if W > 1:   # the same kernel over positions -(W-1) .. -1
                _bwd_kernel[(1, cdiv(d, BLOCK_D), b)](
                    *common, dh0, dw, dbias, L, d, 1 - W, W - 1, *_args(x, weight, h0, seq),
                    *dy.stride(), *dh0.stride(), PARAMS=False, **flags)
        return (dx, dw.sum((0, 1)).to(weight.dtype),
                dbias.sum((0, 1)).to(bias.dtype) if bias is not None else None, dh0, None, None)


def causal_conv1d(x, weight, bias=None, activation=None, initial_state=None, seq_idx=None,
                  return_final_state=False):
    """Triton causal conv1d; see reference.causal_conv1d for shapes and semantics."""
    y = _CausalConv1d.apply(x, weight, bias, initial_state, seq_idx, _silu(activation))
    if not return_final_state:
        return y
    b, d, L = x.shape
    W = weight.shape[1]
    if initial_state is None:
        initial_state = x.new_zeros(b, d, W - 1)
    # the last W-1 inputs (plain torch, so autograd sees it)
    final = torch.cat([initial_state.to(x.dtype), x], dim=-1)[..., L:].contiguous()
    return y, final


@triton.jit
def _update_kernel(x_ptr, state_ptr, w_ptr, bias_ptr, y_ptr, d,
                   sx_b, sx_d, ss_b, ss_d, ss_w, sw_d, sw_w,
                   HAS_BIAS: tl.constexpr, SILU: tl.constexpr, W: tl.constexpr,
                   WP: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    k = tl.arange(0, WP)
    mask_d = offs_d < d
    x = tl.load(x_ptr + b * sx_b + offs_d * sx_d, mask=mask_d, other=0.0).to(tl.float32)
    sp = state_ptr + b * ss_b + offs_d[:, None] * ss_d
    # window[k] = state[k] for k < W-1, x for k = W-1
    win = tl.load(sp + k[None, :] * ss_w, mask=mask_d[:, None] & (k < W - 1)[None, :], other=0.0)
    win = tl.where((k == W - 1)[None, :], x[:, None], win.to(tl.float32))
    w = tl.load(w_ptr + offs_d[:, None] * sw_d + k[None, :] * sw_w,
                mask=mask_d[:, None] & (k < W)[None, :], other=0.0).to(tl.float32)
    y = tl.sum(win * w, axis=1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SILU:
        y = y * tl.sigmoid(y)
    # shift left: new state[k] = window[k+1]
    nxt = tl.load(sp + (k + 1)[None, :] * ss_w, mask=mask_d[:, None] & (k + 1 < W - 1)[None, :],
                  other=0.0).to(tl.float32)
    nxt = tl.where((k == W - 2)[None, :], x[:, None], nxt)
    tl.store(sp + k[None, :] * ss_w, nxt.to(state_ptr.dtype.element_ty),
             mask=mask_d[:, None] & (k < W - 1)[None, :])
    tl.store(y_ptr + b * d + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    """Triton decode step; see reference.causal_conv1d_update. conv_state is updated in place."""
    b, d = x.shape
    W = weight.shape[1]
    y = torch.empty(b, d, device=x.device, dtype=x.dtype)
    BD = 64
    _update_kernel[(cdiv(d, BD), b)](
        x, conv_state, weight, bias if bias is not None else weight, y, d,
        *x.stride(), *conv_state.stride(), *weight.stride(),
        HAS_BIAS=bias is not None, SILU=_silu(activation), W=W,
        WP=max(2, next_pow2(W)), BLOCK_D=BD,
    )
    return y
