"""Mamba-3 with fused Triton kernels: same signatures and results as reference.py.

SISO (B, C of shape (b, l, g, n)) runs on the Mamba-2 SSD kernels through siso.py: it is an SSD
whose decay and input scale are separate inputs, plus a rotation kernel. MIMO (rank R > 1) runs
the chunk kernels below, where a chunk tile's rows are (time, rank) pairs.

Split of the work on the MIMO path:
* torch (autograd) does the cheap per-position scalars on (b, l, h) tensors: dt*A, the trapezoid
  weights wd = lam*dt and w = wd + (1-lam_{t+1}) dt_{t+1}, pi*tanh(angles), each chunk's rotary
  offset (cumsum of chunk totals in float64, kept modulo 2 pi), the folding of the initial (k, v)
  into the initial state, and the final k / v / angle states;
* ``_Mamba3Chunked`` (a torch.autograd.Function) runs the Triton kernels of triton_fwd.py and
  triton_bwd.py on everything of size (b, l, h, p) or (b, l, R, g, n).
float64 inputs run the reference (Triton's tl.dot has no float64 path worth using).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import triton

from ... import knobs
from . import reference
from .siso import angle_inputs, mamba3_siso
from .triton_bwd import bwd_dstates_kernel, bwd_keys_kernel, bwd_values_kernel
from .triton_fwd import fwd_out_kernel, fwd_states_kernel
from .triton_step import state_update_kernel

MAX_ROWS = 64    # chunk tile rows (Q * R): the T x T score tiles live in registers


def _p2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(max(int(n), 1)))


@functools.lru_cache(maxsize=None)
def _sm_count(dev: torch.device) -> int:
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).multi_processor_count
    return 4


class _Cfg:
    """Static shape / option facts shared by forward and backward."""

    def __init__(self, x, Bm, S, Q, per_rank, flags):
        self.b, self.L, self.H, self.P = x.shape
        self.R, self.G, self.N = Bm.shape[2:]
        self.S, self.Q, self.per_rank = S, Q, per_rank
        self.NC = triton.cdiv(self.L, Q)
        self.N2 = (self.N + 1) // 2
        self.BP = _p2(self.P)
        self.BN2 = _p2(self.N2)
        self.flags = flags
        self.dot_prec = "ieee" if x.dtype == torch.float32 else "tf32"
        self.state_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.float32
        self.chunk_warps = 8 if Q * self.R >= 64 else 4
        sms = _sm_count(x.device)
        # sequential kernels: enough (pair block x p block x b*h) programs to fill the GPU twice
        self.seq_bn2, self.seq_bp = min(self.BN2, 32), min(self.BP, 64)
        while self._seq_programs() < 2 * sms and self.seq_bn2 > 16:
            self.seq_bn2 //= 2
        while self._seq_programs() < 2 * sms and self.seq_bp > 16:
            self.seq_bp //= 2
        self.loop_bn2 = min(self.BN2, 16)        # pair block looped over in the chunk kernels
        self.key_bn2 = min(self.BN2, 16)         # pair block of bwd_keys' grid
        # heads summed inside one bwd_keys program (divides heads per group)
        hpg = self.H // self.G
        forced = knobs.MAMBA3_HPP
        if forced and hpg % forced == 0:
            self.hpp = forced
        else:
            nkb = triton.cdiv(self.N2, self.key_bn2)
            self.hpp = 1
            for d in range(hpg, 0, -1):
                if hpg % d == 0 and self.NC * self.b * (self.H // d) * nkb >= 2 * sms:
                    self.hpp = d
                    break

    def _seq_programs(self):
        return triton.cdiv(self.N2, self.seq_bn2) * triton.cdiv(self.P, self.seq_bp) * self.b * self.H


def _common_args(cfg):
    return dict(Q=cfg.Q, R=cfg.R, HAS_BIAS=cfg.flags["bias"], HAS_ROT=cfg.flags["rot"], DOT_PREC=cfg.dot_prec)


class _Mamba3Chunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, Bm, Cm, Bb, Cb, dt, ps, off, adt, w, wd, D, z, Wx, Wz, Wo, h0, cfg):
        b, L, H, P, N, NC = cfg.b, cfg.L, cfg.H, cfg.P, cfg.N, cfg.NC
        dummy = adt
        hin = torch.empty(b, NC, H, P, N, device=x.device, dtype=cfg.state_dtype)
        hfin = torch.empty(b, H, P, N, device=x.device, dtype=torch.float32)
        fl = cfg.flags
        grid = (triton.cdiv(cfg.N2, cfg.seq_bn2), triton.cdiv(P, cfg.seq_bp), b * H)
        fwd_states_kernel[grid](
            x, Bm, Bb if fl["bias"] else dummy, dt, ps if fl["rot"] else dummy, off if fl["rot"] else dummy,
            adt, w, Wx if fl["wx"] else dummy, h0 if h0 is not None else dummy, hin, hfin,
            L, H, cfg.G, P, N, cfg.S, NC, BP=cfg.seq_bp, BN2=cfg.seq_bn2, HAS_WX=fl["wx"],
            HAS_H0=h0 is not None, num_warps=4, **_common_args(cfg))
        out_shape = (b, L, cfg.R, H, P) if cfg.per_rank else (b, L, H, P)
        y = torch.empty(out_shape, device=x.device, dtype=x.dtype)
        fwd_out_kernel[(NC, b * H)](
            x, Bm, Cm, Bb if fl["bias"] else dummy, Cb if fl["bias"] else dummy, dt,
            ps if fl["rot"] else dummy, off if fl["rot"] else dummy, adt, w, wd,
            D if fl["d"] else dummy, z if fl["z"] else x, Wx if fl["wx"] else dummy,
            Wz if fl["wz"] else dummy, Wo if fl["wo"] else dummy, hin, y,
            L, H, cfg.G, P, N, cfg.S, NC, cfg.N2, BP=cfg.BP, BN2=cfg.loop_bn2, HAS_D=fl["d"],
            HAS_Z=fl["z"], HAS_WX=fl["wx"], HAS_WZ=fl["wz"], HAS_WO=fl["wo"], PER_RANK=cfg.per_rank,
            num_warps=cfg.chunk_warps, **_common_args(cfg))
        ctx.cfg = cfg
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(x, Bm, Cm, Bb, Cb, dt, ps, off, adt, w, wd, D, z, Wx, Wz, Wo, hin)
        return y, hfin

    @staticmethod
    def backward(ctx, dy, dhfin):
        x, Bm, Cm, Bb, Cb, dt, ps, off, adt, w, wd, D, z, Wx, Wz, Wo, hin = ctx.saved_tensors
        cfg = ctx.cfg
        fl = cfg.flags
        b, L, H, P, N, NC, R, S = cfg.b, cfg.L, cfg.H, cfg.P, cfg.N, cfg.NC, cfg.R, cfg.S
        dev = x.device
        f32 = dict(device=dev, dtype=torch.float32)
        dummy = adt
        if dy is None:
            dy = torch.zeros((b, L, R, H, P) if cfg.per_rank else (b, L, H, P), device=dev, dtype=x.dtype)
        dy = dy.contiguous()
        has_dhfin = dhfin is not None
        dhfin = dhfin.contiguous() if has_dhfin else dummy
        opt = lambda flag, t: t if fl[flag] else dummy  # noqa: E731

        dhout = torch.empty_like(hin)
        dh0 = torch.empty(b, H, P, N, **f32)
        grid = (triton.cdiv(cfg.N2, cfg.seq_bn2), triton.cdiv(P, cfg.seq_bp), b * H)
        bwd_dstates_kernel[grid](
            Cm, opt("bias", Cb), dt, opt("rot", ps), opt("rot", off), adt, z if fl["z"] else dy,
            opt("wz", Wz), opt("wo", Wo), dy, dhfin, dhout, dh0,
            L, H, cfg.G, P, N, S, NC, BP=cfg.seq_bp, BN2=cfg.seq_bn2, HAS_Z=fl["z"], HAS_WZ=fl["wz"],
            HAS_WO=fl["wo"], PER_RANK=cfg.per_rank, HAS_DHFIN=has_dhfin, num_warps=4, **_common_args(cfg))

        dx = torch.empty_like(x)
        dz = torch.empty_like(z) if fl["z"] else None
        dadt = torch.empty(b, L, H, **f32)
        dw = torch.empty(b, L, H, **f32)
        dwd = torch.empty(b, L, H, **f32)
        dD = torch.zeros(b, NC, H, **f32) if fl["d"] else None
        part = lambda flag: torch.zeros(b, NC, H, R, P, **f32) if fl[flag] else None  # noqa: E731
        dWx, dWz, dWo = part("wx"), part("wz"), part("wo")
        bwd_values_kernel[(NC, b * H)](
            x, Bm, Cm, opt("bias", Bb), opt("bias", Cb), dt, opt("rot", ps), opt("rot", off), adt, w, wd,
            opt("d", D), z if fl["z"] else x, opt("wx", Wx), opt("wz", Wz), opt("wo", Wo), hin, dhout, dy,
            dx, dz if fl["z"] else dx, dadt, dw, dwd, dD if fl["d"] else dummy, dWx if fl["wx"] else dummy,
            dWz if fl["wz"] else dummy, dWo if fl["wo"] else dummy,
            L, H, cfg.G, P, N, S, NC, cfg.N2, BP=cfg.BP, BN2=cfg.loop_bn2, HAS_D=fl["d"], HAS_Z=fl["z"],
            HAS_WX=fl["wx"], HAS_WZ=fl["wz"], HAS_WO=fl["wo"], PER_RANK=cfg.per_rank,
            num_warps=cfg.chunk_warps, **_common_args(cfg))

        HB = H // cfg.hpp
        nkb = triton.cdiv(cfg.N2, cfg.key_bn2)
        dBp = torch.empty(b, L, R, HB, N, **f32)
        dCp = torch.empty(b, L, R, HB, N, **f32)
        dBb = torch.empty(b, NC, H, R, N, **f32) if fl["bias"] else None
        dCb = torch.empty(b, NC, H, R, N, **f32) if fl["bias"] else None
        doff = torch.zeros(b, NC, H, S, **f32) if fl["rot"] else None
        ddt = torch.empty(nkb, b, L, H, **f32) if fl["rot"] else None
        dps = torch.zeros(b, L, HB, S, **f32) if fl["rot"] else None
        bwd_keys_kernel[(NC, b * HB, nkb)](
            x, Bm, Cm, opt("bias", Bb), opt("bias", Cb), dt, opt("rot", ps), opt("rot", off), adt, w, wd,
            z if fl["z"] else x, opt("wx", Wx), opt("wz", Wz), opt("wo", Wo), hin, dhout, dy,
            dBp, dCp, dBb if fl["bias"] else dummy, dCb if fl["bias"] else dummy,
            doff if fl["rot"] else dummy, ddt if fl["rot"] else dummy, dps if fl["rot"] else dummy,
            L, H, cfg.G, P, N, S, NC, HB, b, BP=cfg.BP, BN2=cfg.key_bn2, HPP=cfg.hpp, HAS_Z=fl["z"],
            HAS_WX=fl["wx"], HAS_WZ=fl["wz"], HAS_WO=fl["wo"], PER_RANK=cfg.per_rank,
            num_warps=cfg.chunk_warps, **_common_args(cfg))

        G = cfg.G
        dB = dBp.view(b, L, R, G, HB // G, N).sum(4).to(Bm.dtype)
        dC = dCp.view(b, L, R, G, HB // G, N).sum(4).to(Cm.dtype)
        sum01 = lambda t: None if t is None else t.sum((0, 1))  # noqa: E731
        return (dx, dB, dC, sum01(dBb), sum01(dCb),
                ddt.sum(0) if fl["rot"] else None, dps.sum(2) if fl["rot"] else None, doff,
                dadt, dw, dwd, sum01(dD), dz, sum01(dWx), sum01(dWz), sum01(dWo),
                dh0 if ctx.has_h0 else None, None)


def mamba3(x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
           W_x=None, W_z=None, W_o=None, initial_states=None, chunk_size=64,
           return_final_states=False):
    """Fused chunked Mamba-3; arguments, shapes and results as ``reference.mamba3``.

    Extra requirements of the Triton path: the MIMO rank R is a power of two, chunk_size is a power
    of two. The chunk is clamped so that a chunk tile has 16 to MAX_ROWS rows (Q * R): the chunk
    length changes nothing but rounding.
    """
    if x.dtype == torch.float64:
        return reference.mamba3(x, dt, A, trap, B, C, angles=angles, B_bias=B_bias, C_bias=C_bias, D=D,
                                z=z, W_x=W_x, W_z=W_z, W_o=W_o, initial_states=initial_states,
                                chunk_size=chunk_size, return_final_states=return_final_states)
    if B.dim() == 4:         # SISO is an SSD with a decoupled decay (siso.py): the Mamba-2 kernels
        return mamba3_siso(x, dt, A, trap, B, C, angles=angles, B_bias=B_bias, C_bias=C_bias, D=D, z=z,
                           initial_states=initial_states, chunk_size=chunk_size,
                           return_final_states=return_final_states)
    bsz, L, H, P = x.shape
    Bm, Cm = B.contiguous(), C.contiguous()          # MIMO from here on: (b, l, R, g, n)
    R, G, N = Bm.shape[2:]
    if R & (R - 1) or chunk_size & (chunk_size - 1) or H % G:
        raise ValueError(f"Triton mamba3 needs power-of-two rank and chunk_size and g | h; got R={R}, "
                         f"chunk_size={chunk_size}, h={H}, g={G}")
    Q = min(max(chunk_size, 16 // R), max(1, MAX_ROWS // R))   # rows per chunk tile in [16, MAX_ROWS]
    S = 0 if angles is None else angles.shape[-1]
    dev = x.device

    dtf = dt.float()
    adt = (dtf * A.float()).contiguous()
    if trap is None:
        bcur, wd, w = None, dtf.contiguous(), dtf.contiguous()
    else:
        lam = torch.sigmoid(trap.float())
        wd = (lam * dtf).contiguous()
        bcur = (1 - lam) * dtf
        w = (wd + F.pad(bcur[:, 1:], (0, 0, 0, 1))).contiguous()

    ang0, ssm0, k0, v0 = initial_states if initial_states is not None else (None,) * 4
    ps, off, final_angle = angle_inputs(angles, dtf, ang0, Q)

    wx = reference._rank_weight(W_x, R, H, P, torch.float32, dev)   # (R, h, p)
    h0 = None
    if ssm0 is not None or (bcur is not None and k0 is not None and v0 is not None):
        h0 = ssm0.float() if ssm0 is not None else torch.zeros(bsz, H, P, N, device=dev)
        if bcur is not None and k0 is not None and v0 is not None:
            vv = v0.float().unsqueeze(1) * wx
            h0 = h0 + bcur[:, 0, :, None, None] * torch.einsum("brhp,brhn->bhpn", vv, k0.float().reshape(bsz, R, H, N))
        h0 = h0.contiguous()

    per_rank = W_o is None
    flags = dict(bias=B_bias is not None or C_bias is not None, rot=S > 0, d=D is not None,
                 z=z is not None, wx=W_x is not None, wz=W_z is not None and z is not None,
                 wo=W_o is not None)
    f32c = lambda t: None if t is None else t.float().contiguous()  # noqa: E731
    bias_shape = (H, R, N)
    Bb = Cb = None
    if flags["bias"]:
        zero = torch.zeros(bias_shape, device=dev)
        Bb = B_bias.float().reshape(bias_shape).contiguous() if B_bias is not None else zero
        Cb = C_bias.float().reshape(bias_shape).contiguous() if C_bias is not None else zero
    cfg = _Cfg(x, Bm, S, Q, per_rank, flags)
    y, hfin = _Mamba3Chunked.apply(
        x.contiguous(), Bm, Cm, Bb, Cb, dtf.contiguous(), ps, off, adt, w, wd, f32c(D),
        z.contiguous() if z is not None else None, f32c(W_x), f32c(W_z) if flags["wz"] else None,
        f32c(W_o) if flags["wo"] else None, h0, cfg)
    if not return_final_states:
        return y
    k_last = reference._heads(Bm[:, L - 1], B_bias, H, torch.float32)          # (b, R, h, n)
    if S:
        k_last = reference.rotate_pairs(k_last, final_angle.unsqueeze(1))
    final = (final_angle, hfin, k_last, x[:, L - 1].float())
    return y, final


def mamba3_state_update(state, x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None,
                        D=None, z=None, W_x=None, W_z=None, W_o=None):
    """Fused decode step; arguments, in-place state update and result as
    ``reference.mamba3_state_update``. The state tensors must be contiguous float32 (float64 states
    run the reference)."""
    angle_s, ssm_s, k_s, v_s = state
    if ssm_s.dtype == torch.float64 or x.dtype == torch.float64:
        return reference.mamba3_state_update(state, x, dt, A, trap, B, C, angles=angles, B_bias=B_bias,
                                             C_bias=C_bias, D=D, z=z, W_x=W_x, W_z=W_z, W_o=W_o)
    for t in state:
        if t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError("mamba3_state_update: decode states must be contiguous float32 tensors")
    bsz, H, P = x.shape
    siso = B.dim() == 3
    Bm = (B.unsqueeze(1) if siso else B).contiguous()
    Cm = (C.unsqueeze(1) if siso else C).contiguous()
    R, G, N = Bm.shape[1:]
    if R & (R - 1):
        raise ValueError(f"Triton mamba3_state_update needs a power-of-two rank, got {R}")
    S = 0 if angles is None else angles.shape[-1]
    per_rank = (not siso) and W_o is None
    out = torch.empty((bsz, R, H, P) if per_rank else (bsz, H, P), device=x.device, dtype=x.dtype)
    dummy = ssm_s
    has_bias = B_bias is not None or C_bias is not None
    zero = torch.zeros(H, R, N, device=x.device) if has_bias else dummy
    Bb = B_bias.float().reshape(H, R, N).contiguous() if B_bias is not None else zero
    Cb = C_bias.float().reshape(H, R, N).contiguous() if C_bias is not None else zero
    f32c = lambda t: dummy if t is None else t.float().contiguous()  # noqa: E731
    state_update_kernel[(bsz * H,)](
        x.contiguous(), dt.contiguous(), A.contiguous(), trap.contiguous() if trap is not None else dummy,
        Bm, Cm, angles.contiguous() if S else dummy, Bb, Cb, f32c(D),
        z.contiguous() if z is not None else dummy, f32c(W_x), f32c(W_z), f32c(W_o),
        angle_s, ssm_s, k_s, v_s, out, H, G, P, N, S,
        R=R, BP=_p2(P, 2), BN2=_p2((N + 1) // 2, 2), HAS_TRAP=trap is not None, HAS_ROT=S > 0,
        HAS_BIAS=has_bias, HAS_D=D is not None, HAS_Z=z is not None, HAS_WX=W_x is not None,
        HAS_WZ=W_z is not None and z is not None, HAS_WO=W_o is not None and not siso, PER_RANK=per_rank,
        num_warps=8 if P * N >= 4096 else 4)
    return out
