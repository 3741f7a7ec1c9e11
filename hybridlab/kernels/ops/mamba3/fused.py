"""Mamba-3 with fused Triton kernels: same signatures and results as reference.py.

SISO (B, C of shape (b, l, g, n)) and MIMO (b, l, R, g, n) both run on the Mamba-2 SSD kernels
after a rotation kernel: SISO is an SSD whose decay and input scale are separate inputs, MIMO the
same SSD over l*R rows (t, r) plus an R x R term per step. The files:

- fused.py (here): the ops, routing SISO and MIMO, and the decode step's launch;
- plan.py: the launch plan (``plan=``), chosen once at import;
- fused_siso.py, fused_mimo.py: SISO's and MIMO's launches and autograd functions;
- the Triton kernels: fused_prep.py (per-step scalars, angle offsets), fused_rotate.py (rotated
  per-head keys and queries), fused_mimo_rows.py (MIMO's rank rows: v = x W_x, the same-step
  term, the output gate), fused_step.py (the decode step).

float64 inputs run the reference (Triton's tl.dot has no float64 path worth using).
"""
from __future__ import annotations

import torch

from . import reference
from .fused_mimo import mamba3_mimo
from .fused_siso import _p2, mamba3_siso
from .fused_step import state_update_kernel
from .plan import DEFAULT_PLAN, Mamba3Plan


def mamba3(x, dt, A, trap, B, C, *, angles=None, B_bias=None, C_bias=None, D=None, z=None,
           W_x=None, W_z=None, W_o=None, initial_states=None, chunk_size=64,
           return_final_states=False, plan: Mamba3Plan = DEFAULT_PLAN):
    """Fused chunked Mamba-3; arguments, shapes and results as ``reference.mamba3``. The chunk the
    kernels run is the plan's choice (plan.Mamba3Plan.ssd_chunk): it changes nothing but
    rounding. ``plan``: the launch settings (plan.py), which change speed, not results."""
    if x.dtype == torch.float64:
        return reference.mamba3(x, dt, A, trap, B, C, angles=angles, B_bias=B_bias, C_bias=C_bias, D=D,
                                z=z, W_x=W_x, W_z=W_z, W_o=W_o, initial_states=initial_states,
                                chunk_size=chunk_size, return_final_states=return_final_states)
    if B.dim() == 4:         # SISO is an SSD with a decoupled decay: the Mamba-2 kernels
        return mamba3_siso(x, dt, A, trap, B, C, plan, angles=angles, B_bias=B_bias, C_bias=C_bias, D=D, z=z,
                           initial_states=initial_states, return_final_states=return_final_states)
    return mamba3_mimo(x, dt, A, trap, B, C, plan, angles=angles, B_bias=B_bias, C_bias=C_bias, D=D, z=z,
                       W_x=W_x, W_z=W_z, W_o=W_o, initial_states=initial_states,
                       return_final_states=return_final_states)


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
        R=R, BP=_p2(P), BN2=_p2((N + 1) // 2), HAS_TRAP=trap is not None, HAS_ROT=S > 0,
        HAS_BIAS=has_bias, HAS_D=D is not None, HAS_Z=z is not None, HAS_WX=W_x is not None,
        HAS_WZ=W_z is not None and z is not None, HAS_WO=W_o is not None and not siso, PER_RANK=per_rank,
        num_warps=8 if P * N >= 4096 else 4)
    return out
