"""Mamba-1 decode step: one token's update of a batch of states, in Triton
(reference.selective_state_update is the spec)."""
import torch
import triton
import triton.language as tl

from hybridlab.kernels.launch import FastKernel, cdiv, next_pow2

from .plan import pow2_divisor
from .tiles import _softplus


@triton.jit
def _update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    d, n, cpg,
    ss_b, ss_d, ss_n, sx_b, sx_d, sdt_b, sdt_d, sA_d, sA_n, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
    sz_b, sz_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, NP: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NP)
    mask_d = offs_d < d
    mask_n = offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]
    grp = (pid_d * BLOCK_D) // cpg
    sp = state_ptr + b * ss_b + offs_d[:, None] * ss_d + offs_n[None, :] * ss_n
    h = tl.load(sp, mask=mask_dn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * sx_b + offs_d * sx_d, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * sdt_b + offs_d * sdt_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)
    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0)
    Bv = tl.load(B_ptr + b * sB_b + grp * sB_g + offs_n * sB_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * sC_b + grp * sC_g + offs_n * sC_n, mask=mask_n, other=0.0).to(tl.float32)
    h = tl.exp(dt[:, None] * A.to(tl.float32)) * h + (dt * x)[:, None] * Bv[None, :]
    tl.store(sp, h.to(state_ptr.dtype.element_ty), mask=mask_dn)
    y = tl.sum(h * Cv[None, :], axis=1)
    if HAS_D:
        y += tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) * x
    if HAS_Z:
        zv = tl.load(z_ptr + b * sz_b + offs_d * sz_d, mask=mask_d, other=0.0).to(tl.float32)
        y = y * zv * tl.sigmoid(zv)
    tl.store(y_ptr + b * d + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


_fast_update_kernel = FastKernel(_update_kernel)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Triton decode step; see reference.selective_state_update."""
    b, d = x.shape
    n = A.shape[1]
    G = 1 if B.dim() == 2 else B.shape[1]
    sB = (B.stride(0), 0, B.stride(1)) if B.dim() == 2 else tuple(B.stride())
    sC = (C.stride(0), 0, C.stride(1)) if C.dim() == 2 else tuple(C.stride())
    NP = max(2, next_pow2(n))
    BD = max(1, min(64, 4096 // NP, next_pow2(d)))
    if G > 1:
        BD = pow2_divisor(d // G, BD)
    y = torch.empty(b, d, device=x.device, dtype=x.dtype)
    zz = z if z is not None else x
    _fast_update_kernel[(cdiv(d, BD), b)](
        state, x, dt, A, B, C, D if D is not None else x, zz,
        dt_bias if dt_bias is not None else x, y, d, n, d // G,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *sB, *sC, *zz.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus), BLOCK_D=BD, NP=NP, num_warps=4,
    )
    return y
