"""Mamba-3 decode step as one Triton kernel: one program per (batch, head) holds the whole P x N
state (even / odd pair halves), so reading the previous k, v and overwriting them is race-free.
Ranks are unrolled (static loop) so every tile stays 2-D (P x pairs)."""
import triton
import triton.language as tl

TWO_PI = tl.constexpr(6.283185307179586)
PI = tl.constexpr(3.141592653589793)


@triton.jit
def _pairs(src, bias, ecol, ocol, em, om, HAS_BIAS: tl.constexpr):
    ve = tl.load(src + ecol, mask=em, other=0.0).to(tl.float32)
    vo = tl.load(src + ocol, mask=om, other=0.0).to(tl.float32)
    if HAS_BIAS:
        ve += tl.load(bias + ecol, mask=em, other=0.0)
        vo += tl.load(bias + ocol, mask=om, other=0.0)
    return ve, vo


@triton.jit
def state_update_kernel(x_ptr, dt_ptr, A_ptr, trap_ptr, B_ptr, C_ptr, ang_in_ptr, Bb_ptr, Cb_ptr,
                        D_ptr, z_ptr, Wx_ptr, Wz_ptr, Wo_ptr,
                        ang_ptr, ssm_ptr, k_ptr, v_ptr, out_ptr,
                        H, G, P, N, S,
                        R: tl.constexpr, BP: tl.constexpr, BN2: tl.constexpr,
                        HAS_TRAP: tl.constexpr, HAS_ROT: tl.constexpr, HAS_BIAS: tl.constexpr,
                        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_WX: tl.constexpr,
                        HAS_WZ: tl.constexpr, HAS_WO: tl.constexpr, PER_RANK: tl.constexpr):
    pbh = tl.program_id(0)
    b = (pbh // H).to(tl.int64)
    h = pbh % H
    g = h // (H // G)
    bh = b * H + h
    d = tl.load(dt_ptr + bh).to(tl.float32)
    alpha = tl.exp(d * tl.load(A_ptr + bh).to(tl.float32))
    if HAS_TRAP:
        lam = tl.sigmoid(tl.load(trap_ptr + bh).to(tl.float32))
    else:
        lam = 1.0
    beta = (1 - lam) * d * alpha
    gamma = lam * d

    pidx = tl.arange(0, BP)
    cidx = tl.arange(0, BN2)
    pm = pidx < P
    ecol = 2 * cidx
    ocol = ecol + 1
    em = ecol < N
    om = ocol < N
    if HAS_ROT:
        sm = cidx < S
        raw = tl.load(ang_in_ptr + b * S + cidx, mask=sm, other=0.0).to(tl.float32)
        th = tl.load(ang_ptr + bh * S + cidx, mask=sm, other=0.0) + PI * (2 * tl.sigmoid(2 * raw) - 1) * d
        th = th - TWO_PI * tl.floor(th / TWO_PI)
        tl.store(ang_ptr + bh * S + cidx, th, mask=sm)
        cs = tl.cos(th)
        sn = tl.sin(th)

    xv = tl.load(x_ptr + bh * P + pidx, mask=pm, other=0.0).to(tl.float32)
    vprev = tl.load(v_ptr + bh * P + pidx, mask=pm, other=0.0)
    sst = ssm_ptr + bh * P * N + pidx[:, None] * N
    sme = pm[:, None] & em[None, :]
    smo = pm[:, None] & om[None, :]
    He = alpha * tl.load(sst + ecol[None, :], mask=sme, other=0.0)
    Ho = alpha * tl.load(sst + ocol[None, :], mask=smo, other=0.0)
    # state update: previous (v, k) with beta, new (v, k) with gamma, summed over ranks
    for rr in tl.static_range(R):
        wx = 1.0
        if HAS_WX:
            wx = tl.load(Wx_ptr + (h * R + rr) * P + pidx, mask=pm, other=0.0)
        kst = k_ptr + ((b * R + rr) * H + h) * N
        kpe = tl.load(kst + ecol, mask=em, other=0.0)
        kpo = tl.load(kst + ocol, mask=om, other=0.0)
        ke, ko = _pairs(B_ptr + ((b * R + rr) * G + g) * N, Bb_ptr + (h * R + rr) * N, ecol, ocol, em, om, HAS_BIAS)
        if HAS_ROT:
            ke, ko = ke * cs - ko * sn, ke * sn + ko * cs
        tl.store(kst + ecol, ke, mask=em)
        tl.store(kst + ocol, ko, mask=om)
        vp = (vprev * wx * beta)[:, None]
        vn = (xv * wx * gamma)[:, None]
        He += vp * kpe[None, :] + vn * ke[None, :]
        Ho += vp * kpo[None, :] + vn * ko[None, :]
    tl.store(sst + ecol[None, :], He, mask=sme)
    tl.store(sst + ocol[None, :], Ho, mask=smo)
    tl.store(v_ptr + bh * P + pidx, xv, mask=pm)

    # outputs y_r = H q_r + D v_r, gated, then per rank or summed with W_o
    if HAS_Z:
        z = tl.load(z_ptr + bh * P + pidx, mask=pm, other=0.0).to(tl.float32)
    acc = tl.zeros((BP,), dtype=tl.float32)
    for rr in tl.static_range(R):
        qe, qo = _pairs(C_ptr + ((b * R + rr) * G + g) * N, Cb_ptr + (h * R + rr) * N, ecol, ocol, em, om, HAS_BIAS)
        if HAS_ROT:
            qe, qo = qe * cs - qo * sn, qe * sn + qo * cs
        y = tl.sum(He * qe[None, :], 1) + tl.sum(Ho * qo[None, :], 1)
        if HAS_D:
            wx = 1.0
            if HAS_WX:
                wx = tl.load(Wx_ptr + (h * R + rr) * P + pidx, mask=pm, other=0.0)
            y += tl.load(D_ptr + h) * xv * wx
        if HAS_Z:
            zz = z
            if HAS_WZ:
                zz = z * tl.load(Wz_ptr + (h * R + rr) * P + pidx, mask=pm, other=0.0)
            y *= zz * tl.sigmoid(zz)
        if PER_RANK:
            tl.store(out_ptr + ((b * R + rr) * H + h) * P + pidx, y.to(out_ptr.dtype.element_ty), mask=pm)
        else:
            if HAS_WO:
                y *= tl.load(Wo_ptr + (h * R + rr) * P + pidx, mask=pm, other=0.0)
            acc += y
    if not PER_RANK:
        tl.store(out_ptr + bh * P + pidx, acc.to(out_ptr.dtype.element_ty), mask=pm)
