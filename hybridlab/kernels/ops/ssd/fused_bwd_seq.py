"""The SSD backward as one sequential kernel per (head, batch), for per-head B, C (Mamba-3).

When every head has its own B and C (G == H: Mamba-3's rotated k, q), the split backward of
fused_bwd.py shares nothing across heads and pays for the chunk states three times over: the
per-chunk dE_local written and read in fp32, dE written and read again, E read twice
(ssd/NOTES.md). This kernel walks one head's chunks in reverse with the gradient of the state,
dS (P x N, fp32), in registers. Per chunk of Q rows (one tile, Q <= 64), with X = Δ·x,
L_ts = exp(cs_t - cs_s) [s <= t], v_s = exp(cs_last - cs_s), E the state entering the chunk (the
forward's, x's dtype) and dY = dout·silu(z):

    S = C Bᵀ, M = (dY Xᵀ) ∘ L, P = S ∘ L
    dX = Pᵀ dY + v ∘ (B dSᵀ)                  -> dx = Δ dX + (D + D_pos) dY,  dΔ = Σ_p x dX
    dC = exp(cs) ∘ (dY E) + M B,   dB = v ∘ (X dS) + Mᵀ C
    d cs = rowsum(M ∘ S) - colsum(M ∘ S) + exp(cs) C·(dY E) - v X·(B dSᵀ),
           and cs_last also gets exp(cs_last) <E, dS> + Σ_s v_s X_s·(dS B_s)
    d log_decay = the in-chunk reverse cumsum of d cs
    dS <- exp(cs_last) dS + (exp(cs) ∘ dY)ᵀ C          (the gradient of the state entering it)

Every tile is loaded once and every product computed once. Only the decoupled form runs here
(HAS_LD: the log decay is an input, Δ the input scale; no dt softplus, bias or limit) without
seq_idx; fused.py decides when (``sequential_backward``).
"""
import triton
import triton.language as tl

from .fused_bwd import _gated_dy


@triton.jit
def chunk_bwd_seq(
    x_ptr, z_ptr, dout_ptr, y_ptr, B_ptr, C_ptr, D_ptr, Dpos_ptr, delta_ptr, cs_ptr, E_ptr, dfinal_ptr,
    dx_ptr, dz_ptr, dB_ptr, dC_ptr, ddelta_ptr, dld_ptr, dD_ptr, dDpos_ptr, dinit_ptr,
    L, H, P, N,
    sx_b, sx_l, sx_h, sz_b, sz_l, sz_h, sdo_b, sdo_l, sdo_h, sy_b, sy_l, sy_h,
    sB_b, sB_l, sB_h, sC_b, sC_l, sC_h, sdx_b, sdx_l, sdx_h, sdz_b, sdz_l, sdz_h,
    Lp, nchunks,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, D_HDIM: tl.constexpr, HAS_DPOS: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_DFINAL: tl.constexpr, HAS_DINIT: tl.constexpr, PREC: tl.constexpr,
):
    h = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    row = (b * H + h) * Lp
    oq = tl.arange(0, Q)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    smask = (op[:, None] < P) & (on[None, :] < N)
    sidx = op[:, None] * N + on[None, :]
    DT = B_ptr.dtype.element_ty
    causal = oq[:, None] >= oq[None, :]
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + (b * H + h) * P * N + sidx, mask=smask, other=0.0).to(tl.float32)
    else:
        dS = tl.zeros([BP, BN], dtype=tl.float32)
    if HAS_D:
        if D_HDIM:
            Dv = tl.load(D_ptr + h * P + op, mask=op < P, other=0.0).to(tl.float32)
            dD = tl.zeros([BP], dtype=tl.float32)
        else:
            Dv = tl.load(D_ptr + h).to(tl.float32)
            dD = tl.zeros([Q], dtype=tl.float32)

    for cc in range(nchunks):
        c = nchunks - 1 - cc
        t = c * Q + oq
        valid = t < L
        pmask = valid[:, None] & (op[None, :] < P)
        nmask = valid[:, None] & (on[None, :] < N)
        cs = tl.load(cs_ptr + row + t)
        delta = tl.load(delta_ptr + row + t)
        cs_last = tl.load(cs_ptr + row + c * Q + Q - 1)
        ecs = tl.exp(cs)
        v = tl.exp(cs_last - cs)
        Ldec = tl.where(causal, tl.exp(cs[:, None] - cs[None, :]), 0.0)

        Bt = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + h * sB_h + on[None, :], mask=nmask, other=0.0)
        Ct = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + h * sC_h + on[None, :], mask=nmask, other=0.0)
        X = (tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :], mask=pmask, other=0.0)
             .to(tl.float32) * delta[:, None]).to(DT)
        dy = _gated_dy(dout_ptr, z_ptr, b, t, h, op, pmask, sdo_b, sdo_l, sdo_h, sz_b, sz_l, sz_h, HAS_Z)
        dYb = dy.to(DT)
        dSb = dS.to(DT)

        # inside the chunk: S = C Bᵀ and G = dY Xᵀ, each once; M = G ∘ L
        Sd = tl.dot(Ct, tl.trans(Bt), input_precision=PREC) * Ldec                  # S ∘ L
        G = tl.dot(dYb, tl.trans(X), input_precision=PREC)
        MS = G * Sd                                                                  # M ∘ S
        dcs = tl.sum(MS, axis=1) - tl.sum(MS, axis=0)
        Mb = (G * Ldec).to(DT)
        # dX = Pᵀ dY + v ∘ (B dSᵀ), and the end state's part of d cs
        BdS = v[:, None] * tl.dot(Bt, tl.trans(dSb), input_precision=PREC)          # (Q, BP)
        dXX = tl.dot(tl.trans(Sd.to(DT)), dYb, input_precision=PREC) + BdS
        r = tl.sum(X.to(tl.float32) * BdS, axis=1)
        dcs -= r
        dlast = tl.sum(r, axis=0)
        # dB = v ∘ (X dS) + Mᵀ C
        dBt = v[:, None] * tl.dot(X, dSb, input_precision=PREC) + tl.dot(tl.trans(Mb), Ct, input_precision=PREC)
        tl.store(dB_ptr + ((b * L + t[:, None]) * H + h) * N + on[None, :], dBt, mask=nmask)
        # dC = exp(cs) ∘ (dY E) + M B, and the entering state's parts of d cs
        E = tl.load(E_ptr + ((b * nchunks + c) * H + h) * P * N + sidx, mask=smask, other=0.0)
        dlast += tl.exp(cs_last) * tl.sum(tl.sum(E.to(tl.float32) * dS, axis=1), axis=0)
        dYE = ecs[:, None] * tl.dot(dYb, E.to(DT), input_precision=PREC)            # (Q, BN)
        dcs += tl.sum(Ct.to(tl.float32) * dYE, axis=1)
        dCt = dYE + tl.dot(Mb, Bt, input_precision=PREC)
        tl.store(dC_ptr + ((b * L + t[:, None]) * H + h) * N + on[None, :], dCt, mask=nmask)
        # the gradient of the state entering this chunk (the previous chunk's end state)
        dS = tl.exp(cs_last) * dS + tl.dot(tl.trans((dy * ecs[:, None]).to(DT)), Ct, input_precision=PREC)

        # dx, dΔ, dz and the skips, from x and dout again (cache hits) rather than kept live
        xx = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :], mask=pmask, other=0.0).to(tl.float32)
        tl.store(ddelta_ptr + (b * L + t) * H + h, tl.sum(xx * dXX, axis=1), mask=valid)
        dx = delta[:, None] * dXX
        if HAS_Z:
            do = tl.load(dout_ptr + b * sdo_b + t[:, None] * sdo_l + h * sdo_h + op[None, :], mask=pmask, other=0.0).to(tl.float32)
            zz = tl.load(z_ptr + b * sz_b + t[:, None] * sz_l + h * sz_h + op[None, :], mask=pmask, other=0.0).to(tl.float32)
            yy = tl.load(y_ptr + b * sy_b + t[:, None] * sy_l + h * sy_h + op[None, :], mask=pmask, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zz)
            tl.store(dz_ptr + b * sdz_b + t[:, None] * sdz_l + h * sdz_h + op[None, :],
                     (do * yy * sg * (1.0 + zz * (1.0 - sg))).to(dz_ptr.dtype.element_ty), mask=pmask)
        if HAS_D:
            if D_HDIM:
                dx += Dv[None, :] * dy
                dD += tl.sum(dy * xx, axis=0)
            else:
                dx += Dv * dy
                dD += tl.sum(dy * xx, axis=1)
        if HAS_DPOS:
            dx += tl.load(Dpos_ptr + row + t)[:, None] * dy
            tl.store(dDpos_ptr + row + t, tl.sum(dy * xx, axis=1))
        tl.store(dx_ptr + b * sdx_b + t[:, None] * sdx_l + h * sdx_h + op[None, :],
                 dx.to(dx_ptr.dtype.element_ty), mask=pmask)

        # d log_decay: cs_t = Σ_{s<=t} log_decay_s inside the chunk
        dcs += tl.where(oq == Q - 1, dlast, 0.0)
        dld = tl.sum(dcs, axis=0) - tl.cumsum(dcs, axis=0) + dcs
        tl.store(dld_ptr + (b * L + t) * H + h, dld, mask=valid)

    if HAS_DINIT:
        tl.store(dinit_ptr + (b * H + h) * P * N + sidx, dS, mask=smask)
    if HAS_D:
        if D_HDIM:
            tl.store(dD_ptr + (b * H + h) * P + op, dD, mask=op < P)
        else:
            tl.store(dD_ptr + b * H + h, tl.sum(dD, axis=0))
