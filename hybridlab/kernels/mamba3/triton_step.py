"""Mamba-3 decode step as one Triton kernel: one program per (batch, head) holds the whole P x N
state (even / odd pair halves), so reading the previous k, v and overwriting them is race-free."""
import triton
import triton.language as tl

TWO_PI = tl.constexpr(6.283185307179586)
PI = tl.constexpr(3.141592653589793)


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

    ridx = tl.arange(0, R)
    pidx = tl.arange(0, BP)
    cidx = tl.arange(0, BN2)
    pm = pidx < P
    ecol = 2 * cidx
    ocol = ecol + 1
    em = (ecol < N)[None, :]
    om = (ocol < N)[None, :]
    src = ((b * R + ridx) * G + g) * N                      # B, C rows (b, R, g, n)
    ke = tl.load(B_ptr + src[:, None] + ecol[None, :], mask=em, other=0.0).to(tl.float32)
    ko = tl.load(B_ptr + src[:, None] + ocol[None, :], mask=om, other=0.0).to(tl.float32)
    qe = tl.load(C_ptr + src[:, None] + ecol[None, :], mask=em, other=0.0).to(tl.float32)
    qo = tl.load(C_ptr + src[:, None] + ocol[None, :], mask=om, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bb = (h * R + ridx) * N
        ke += tl.load(Bb_ptr + bb[:, None] + ecol[None, :], mask=em, other=0.0)
        ko += tl.load(Bb_ptr + bb[:, None] + ocol[None, :], mask=om, other=0.0)
        qe += tl.load(Cb_ptr + bb[:, None] + ecol[None, :], mask=em, other=0.0)
        qo += tl.load(Cb_ptr + bb[:, None] + ocol[None, :], mask=om, other=0.0)
    if HAS_ROT:
        sm = cidx < S
        raw = tl.load(ang_in_ptr + b * S + cidx, mask=sm, other=0.0).to(tl.float32)
        th = tl.load(ang_ptr + bh * S + cidx, mask=sm, other=0.0) + PI * (2 * tl.sigmoid(2 * raw) - 1) * d
        th = th - TWO_PI * tl.floor(th / TWO_PI)
        tl.store(ang_ptr + bh * S + cidx, th, mask=sm)
        cs = tl.cos(th)[None, :]
        sn = tl.sin(th)[None, :]
        ke, ko = ke * cs - ko * sn, ke * sn + ko * cs
        qe, qo = qe * cs - qo * sn, qe * sn + qo * cs

    xv = tl.load(x_ptr + bh * P + pidx, mask=pm, other=0.0).to(tl.float32)
    vprev = tl.load(v_ptr + bh * P + pidx, mask=pm, other=0.0)
    if HAS_WX:
        wx = tl.load(Wx_ptr + (h * R + ridx)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
    else:
        wx = tl.full((R, BP), 1.0, tl.float32)
    v = xv[None, :] * wx                                    # (R, P)
    vp = vprev[None, :] * wx
    kst = ((b * R + ridx) * H + h) * N                      # k state rows (b, R, h, n)
    kpe = tl.load(k_ptr + kst[:, None] + ecol[None, :], mask=em, other=0.0)
    kpo = tl.load(k_ptr + kst[:, None] + ocol[None, :], mask=om, other=0.0)
    sst = bh * P * N + pidx[:, None] * N
    sme = pm[:, None] & em
    smo = pm[:, None] & om
    He = tl.load(ssm_ptr + sst + ecol[None, :], mask=sme, other=0.0)
    Ho = tl.load(ssm_ptr + sst + ocol[None, :], mask=smo, other=0.0)
    He = alpha * He + beta * tl.sum(vp[:, :, None] * kpe[:, None, :], 0) + gamma * tl.sum(v[:, :, None] * ke[:, None, :], 0)
    Ho = alpha * Ho + beta * tl.sum(vp[:, :, None] * kpo[:, None, :], 0) + gamma * tl.sum(v[:, :, None] * ko[:, None, :], 0)
    tl.store(ssm_ptr + sst + ecol[None, :], He, mask=sme)
    tl.store(ssm_ptr + sst + ocol[None, :], Ho, mask=smo)
    tl.store(k_ptr + kst[:, None] + ecol[None, :], ke, mask=em)
    tl.store(k_ptr + kst[:, None] + ocol[None, :], ko, mask=om)
    tl.store(v_ptr + bh * P + pidx, xv, mask=pm)

    y = tl.sum(He[None, :, :] * qe[:, None, :], 2) + tl.sum(Ho[None, :, :] * qo[:, None, :], 2)   # (R, P)
    if HAS_D:
        y += tl.load(D_ptr + h) * v
    if HAS_Z:
        zz = tl.load(z_ptr + bh * P + pidx, mask=pm, other=0.0).to(tl.float32)[None, :]
        if HAS_WZ:
            zz = zz * tl.load(Wz_ptr + (h * R + ridx)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
        y *= zz * tl.sigmoid(zz)
    if PER_RANK:
        tl.store(out_ptr + ((b * R + ridx) * H + h)[:, None] * P + pidx[None, :],
                 y.to(out_ptr.dtype.element_ty), mask=pm[None, :])
    else:
        if HAS_WO:
            y *= tl.load(Wo_ptr + (h * R + ridx)[:, None] * P + pidx[None, :], mask=pm[None, :], other=0.0)
        tl.store(out_ptr + bh * P + pidx, tl.sum(y, 0).to(out_ptr.dtype.element_ty), mask=pm)
