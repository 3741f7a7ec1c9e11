"""Mamba-2 SSD with fused Triton kernels: same signatures and results as ``reference.py``.

Forward: 3 launches (fused_fwd.py); backward: 5 launches (fused_bwd.py), 6 when a group has
several heads (chunk_cb), plus small torch sums of per-program partials (deterministic: no
atomics). Where (batch, head, state tile) fills the GPU, the chunk states run as one sequential
kernel per direction instead of two (fused_state.py): 2 and 4 launches. Where it does not, the
forward's walk is cut into segments of chunks walked in parallel (3 launches: walk, carry across
segments, scan); the backward keeps the split kernels there. Decode step: fused_step.py.

``chunk_size`` is a speed hint here: the kernels use it rounded to a power of two in [16, 256]
and at most the plan's max_chunk (the result is the same SSD up to rounding). The launch
settings come from the launch plan (plan.py, ``plan=``). float64 has no tensor-core path and
runs the reference. See DESIGN.md for the design.
"""
from __future__ import annotations

import math

import torch
import triton

from ...grad_mode import wants_grad
from ...launch import FastKernel, cdiv, plan_key
from . import fused_bwd as kb
from . import fused_fwd as kf
from . import fused_state as ks
from .fused_step import ssd_state_update  # noqa: F401  (the decode op lives beside)
from .plan import DEFAULT_PLAN, SSDPlan, _pow2
from .reference import segment_ids
from .reference import ssd as _ssd_reference
from .reference import ssd_decoupled as _ssd_decoupled_reference


class _Tuned:
    """A dot kernel launched through triton.autotune, or with one of its (num_warps, num_stages
    [, maxnreg]) configs: ``tuned[plan, grid](*args, **kwargs)``, as the plan says (``autotune``,
    ``config``; the interpreter: one warp).

    Launches go through FastKernel (kernels/launch.py). A launch whose plan key is cached costs
    one key; on a miss, the config is the one the autotuner chose for these arguments' autotune
    key (tuning it first if new), so Triton's autotune wrapper, with its own host time per
    launch, runs once per shape.
    """

    def __init__(self, kernel, configs, fast=None):
        self.kernel = kernel
        self.configs = [_options(c) for c in configs]
        cfgs = [triton.Config({}, **c) for c in self.configs]
        # Q and BT (where a kernel has them) change the work per program: tuned per value
        self.key_names = ["H", "P", "N", "G"] + [k for k in ("Q", "BT") if k in kernel.arg_names]
        self.key_index = [kernel.arg_names.index(k) for k in self.key_names]
        self.tuned = triton.autotune(cfgs, key=self.key_names)(kernel)
        self.chosen: dict[tuple, dict] = {}      # autotune key -> the config it picked
        # one FastKernel per fixed config and one for the tuned launches: a cached launch holds its config
        opts = {} if fast is None else {"enabled": fast}
        self.fast_fixed = [FastKernel(kernel, **opts) for _ in self.configs]
        self.fast_tuned = FastKernel(kernel, **opts)

    def __getitem__(self, plan_grid):
        plan, grid = plan_grid
        if plan.interpret:
            return lambda *a, **k: self.kernel[grid](*a, num_warps=1, **k)
        grid = tuple(grid) + (1,) * (3 - len(grid))
        if plan.autotune:
            return lambda *a, **k: self._launch_tuned(grid, a, k)
        i = min(plan.config, len(self.configs) - 1)
        return lambda *a, **k: self.fast_fixed[i].run(grid, a, k, self.configs[i])

    def _launch_tuned(self, grid, args, kwargs):
        key = plan_key(args, kwargs)
        if key in self.fast_tuned.plans:
            return self.fast_tuned.run(grid, args, kwargs, key=key)
        # as the autotuner's own key: the key arguments' values, then the tensors' dtypes
        tkey = tuple(args[i] if i < len(args) else kwargs[n] for i, n in zip(self.key_index, self.key_names)) + \
            tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
        cfg = self.chosen.get(tkey)
        if cfg is None:
            out = self.tuned[grid](*args, **kwargs)
            best = getattr(self.tuned, "best_config", None)
            self.chosen[tkey] = (_options((best.num_warps, best.num_stages, best.maxnreg))
                                 if best is not None else self.configs[0])
            return out
        return self.fast_tuned.run(grid, args, kwargs, cfg, key=key)


def _options(config) -> dict:
    """(num_warps, num_stages[, maxnreg]) as launch options; maxnreg None: the compiler's choice."""
    warps, stages, *rest = config
    opts = {"num_warps": warps, "num_stages": stages}
    if rest and rest[0] is not None:
        opts["maxnreg"] = rest[0]
    return opts


_chunk_state_fwd = _Tuned(kf.chunk_state_fwd, [(4, 1), (8, 1)])
_state_pass_fwd = FastKernel(kf.state_pass_fwd)
_state_pass_bwd = FastKernel(kb.state_pass_bwd)
_chunk_cb = FastKernel(kb.chunk_cb)
_dt_bwd = FastKernel(kb.dt_bwd)
_state_fwd_seq = _Tuned(ks.state_fwd_seq, [(4, 2), (4, 3), (8, 2)])
_segment_pass_fwd = FastKernel(ks.segment_pass_fwd)
_state_bwd_seq = _Tuned(ks.state_bwd_seq, [(4, 2), (4, 3), (8, 2)])
#: (4, 1), (8, 1): one stage halves the shared memory, so three 4-warp programs fit per SM
#: instead of two (the two-stage kernel waited on the loads behind its shared-memory stores)
_chunk_scan_fwd = _Tuned(kf.chunk_scan_fwd, [(4, 2), (4, 3), (8, 2), (4, 1), (8, 1)])
_chunk_state_bwd = _Tuned(kb.chunk_state_bwd, [(4, 1), (8, 1), (4, 1, 168)])
#: (4, 1, 168): 4 warps capped at 168 registers per thread fit three programs per SM (12 warps
#: to hide latency, paid for in spills); the autotuner keeps it where it is the fastest
_chunk_bwd_dx = _Tuned(kb.chunk_bwd_dx, [(4, 1), (8, 1), (4, 2), (4, 1, 168)])
_chunk_bwd_dbc = _Tuned(kb.chunk_bwd_dbc, [(4, 1), (8, 1), (4, 2), (4, 1, 168)])
#: every autotuned kernel (the GPU tests run each of their configs)
TUNED = (_chunk_state_fwd, _state_fwd_seq, _state_bwd_seq, _chunk_scan_fwd, _chunk_state_bwd, _chunk_bwd_dx,
         _chunk_bwd_dbc)


def lastdim_contig(t):
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def forward_pass(x, dt, A, B, C, D, z, dt_bias, init, seg, Q, softplus, dt_limit, ld, dpos, plan, store_y=True):
    """out, final state, and for the backward: y (the pre-gate output, with z and store_y only),
    Δ, its cumsum and the entering states E (the forward's own scratch too). store_y: a backward
    will run; without it a segmented walk's true entering states are not stored (E is None)."""
    b, l, H, P = x.shape
    G, N = B.shape[-2:]
    nchunks = cdiv(l, Q)
    Lp = nchunks * Q
    BT = plan.block_t(Q, x.dtype)
    BP, BN = max(16, _pow2(P)), max(16, _pow2(N))
    dev = x.device
    lo, hi = dt_limit
    has_limit = lo > 0.0 or hi < math.inf
    f32 = torch.float32
    delta = torch.empty(b, H, Lp, device=dev, dtype=f32)
    cs = torch.empty(b, H, Lp, device=dev, dtype=f32)
    E = torch.empty(b, nchunks, H, P, N, device=dev, dtype=x.dtype)
    final = torch.empty(b, H, P, N, device=dev, dtype=f32)
    prec = plan.prec(x.dtype)
    state_args = (l, H, P, N, G, float(lo), float(min(hi, 3.0e38)),
               x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2),
               B.stride(0), B.stride(1), B.stride(2), Lp, nchunks)
    state_opts = dict(Q=Q, HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus, HAS_LIMIT=has_limit,
                   HAS_SEQ=seg is not None, HAS_LD=ld is not None, PREC=prec)
    walk = plan.state_walk(b, H, P, N, nchunks, seg is not None)
    cps, nseg, sin, dec, E_true = nchunks, 1, None, None, E
    if walk is not None:
        SP, SN, tiles, cps, nseg = walk
        ends = final if nseg == 1 else torch.empty(b, H, nseg, P, N, device=dev, dtype=f32)
        _state_fwd_seq[plan, (b * H, tiles, nseg)](
            x, dt, A, B, dt_bias, seg, ld, init, delta, cs, E, ends, *state_args, cps,
            KB=min(Q, plan.seq_state_rows), BP=SP, BN=SN, HAS_INIT=init is not None, **state_opts)
        if nseg > 1:
            PN = P * N
            BLOCK = min(plan.state_block, _pow2(PN))
            sin = torch.empty_like(ends)
            dec = torch.empty(b, H, nchunks, device=dev, dtype=f32)
            _segment_pass_fwd[(b * H, cdiv(PN, BLOCK))](
                ends, cs, sin, dec, final, PN, Lp, nchunks, cps, nseg, Q=Q, BLOCK=BLOCK,
                num_warps=plan.warps(plan.state_warps))
            # the scan adds what each segment's walk missed; with a backward to feed, it also
            # stores the true entering states (the backward reads them)
            E_true = torch.empty_like(E) if store_y else None
    else:
        st = torch.empty(b, nchunks, H, P, N, device=dev, dtype=f32)
        _chunk_state_fwd[plan, (H, nchunks, b)](
            x, dt, A, B, dt_bias, seg, ld, delta, cs, st, *state_args, BP=BP, BN=BN, **state_opts)
        PN = P * N
        BLOCK = min(plan.state_block, _pow2(PN))
        _state_pass_fwd[(b * H, cdiv(PN, BLOCK))](
            st, cs, seg, init, E, final, H, PN, Lp, nchunks,
            Q=Q, BLOCK=BLOCK, HAS_INIT=init is not None, HAS_SEQ=seg is not None,
            num_warps=plan.warps(plan.state_warps))

    NB = Q // BT
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    y = torch.empty_like(out) if z is not None and store_y else None
    _chunk_scan_fwd[plan, (H, nchunks * NB, b)](
        x, z, B, C, D, dpos, delta, cs, seg, E, sin, dec, E_true, out, y,
        l, H, P, N, G,
        x.stride(0), x.stride(1), x.stride(2), *(_strides3(z)),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        out.stride(0), out.stride(1), out.stride(2), Lp, nchunks, cps, nseg,
        Q=Q, BT=BT, BP=BP, BN=BN, HAS_D=D is not None, D_HDIM=D is not None and D.dim() == 2,
        HAS_DPOS=dpos is not None, HAS_Z=z is not None, STORE_Y=y is not None, HAS_SEQ=seg is not None,
        HAS_STATE=init is not None or nchunks > 1, HAS_SEGS=nseg > 1, STORE_E=nseg > 1 and store_y,
        PREC=prec)
    return out, final, y, delta, cs, E_true


def _shared_cb(B, C, H, Q, BT, BN, prec, plan):
    """C Bᵀ per (b, chunk, group), (b, nc, g, Q, Q) fp32, for the backward when a group's heads
    share it (fused_bwd.chunk_cb); None with one head per group (the kernels compute it in place).
    The forward computes its tiles in place: a stored C Bᵀ measured slower there, while the
    backward gains from it."""
    b, l, G, N = B.shape
    if H == G:
        return None
    nchunks = cdiv(l, Q)
    NB = Q // BT
    cb = torch.empty(b, nchunks, G, Q, Q, device=B.device, dtype=torch.float32)
    _chunk_cb[(NB * NB, nchunks, b * G)](
        B, C, cb, l, G, N, B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        nchunks, Q=Q, BT=BT, BN=BN, PREC=prec, num_warps=plan.warps(4))
    return cb


def _strides3(t):
    return (t.stride(0), t.stride(1), t.stride(2)) if t is not None else (0, 0, 0)


def backward_pass(dout, dfinal, x, dt, A, B, C, D, z, dt_bias, y, delta, cs, E, seg, Q, softplus,
                  dt_limit, has_init, has_ld, dpos, plan):
    b, l, H, P = x.shape
    G, N = B.shape[-2:]
    nchunks = cdiv(l, Q)
    Lp = nchunks * Q
    BT = plan.block_t(Q, x.dtype)
    NB = Q // BT
    BP, BN = max(16, _pow2(P)), max(16, _pow2(N))
    dev, f32 = x.device, torch.float32
    prec = plan.prec(x.dtype)
    dout = lastdim_contig(dout)
    # the kernels index dfinal as a dense (b, h, p, n); autograd may hand an expanded one
    # (stride 0: the gradient of final.sum()), which they would read past its storage
    dfinal = dfinal.contiguous() if dfinal is not None else None

    dst = torch.empty(b, nchunks, H, P, N, device=dev, dtype=x.dtype)
    dinit = torch.empty(b, H, P, N, device=dev, dtype=f32) if has_init else None
    seq = plan.seq_state_tiles(b, H, P, N)
    if seq is not None:
        SP, SN, nblk = seq
        dlast2 = torch.empty(b, H, nchunks, nblk, device=dev, dtype=f32)
        _state_bwd_seq[plan, (b * H, nblk)](
            dout, z, C, cs, seg, E, dfinal, dst, dinit, dlast2, l, H, P, N, G,
            dout.stride(0), dout.stride(1), dout.stride(2), *_strides3(z),
            C.stride(0), C.stride(1), C.stride(2), Lp, nchunks,
            Q=Q, KB=min(Q, plan.seq_state_rows), BP=SP, BN=SN, HAS_Z=z is not None, HAS_SEQ=seg is not None,
            HAS_DFINAL=dfinal is not None, HAS_DINIT=has_init, PREC=prec)
    else:
        dloc = torch.empty(b, nchunks, H, P, N, device=dev, dtype=f32)
        _chunk_state_bwd[plan, (H, nchunks, b)](
            dout, z, C, cs, seg, dloc, l, H, P, N, G,
            dout.stride(0), dout.stride(1), dout.stride(2), *_strides3(z),
            C.stride(0), C.stride(1), C.stride(2), Lp, nchunks,
            Q=Q, BP=BP, BN=BN, HAS_Z=z is not None, HAS_SEQ=seg is not None, PREC=prec)
        PN = P * N
        BLOCK = min(plan.state_block, _pow2(PN))
        nblk = cdiv(PN, BLOCK)
        dlast2 = torch.empty(b, H, nchunks, nblk, device=dev, dtype=f32)
        _state_pass_bwd[(b * H, nblk)](
            dloc, E, cs, seg, dfinal, dst, dinit, dlast2, H, PN, Lp, nchunks,
            Q=Q, BLOCK=BLOCK, HAS_DFINAL=dfinal is not None, HAS_DINIT=has_init, HAS_SEQ=seg is not None,
            num_warps=plan.warps(plan.state_warps))

    has_state = has_init or nchunks > 1
    cb = _shared_cb(B, C, H, Q, BT, BN, prec, plan)
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dz = torch.empty_like(z, memory_format=torch.contiguous_format) if z is not None else None
    ddx = torch.empty(b, H, Lp, device=dev, dtype=f32)
    dcs = torch.empty(b, H, Lp, device=dev, dtype=f32)
    rows = torch.empty(b, H, NB, Lp, device=dev, dtype=f32)
    dlast = torch.empty(b, H, nchunks, NB, device=dev, dtype=f32)
    d_hdim = D is not None and D.dim() == 2
    dDp = (torch.empty(b, nchunks * NB, H, *((P,) if d_hdim else ()), device=dev, dtype=f32)
           if D is not None else None)
    ddpos = torch.empty(b, H, Lp, device=dev, dtype=f32) if dpos is not None else None
    _chunk_bwd_dx[plan, (H, nchunks * NB, b)](
        x, z, dout, y, B, C, cb, D, dpos, delta, cs, seg, dst,
        dx, dz, ddx, dcs, rows, dlast, dDp, ddpos,
        l, H, P, N, G,
        x.stride(0), x.stride(1), x.stride(2), *_strides3(z),
        dout.stride(0), dout.stride(1), dout.stride(2), *_strides3(y),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        dx.stride(0), dx.stride(1), dx.stride(2), *_strides3(dz), Lp, nchunks,
        Q=Q, BT=BT, BP=BP, BN=BN, HAS_D=D is not None, D_HDIM=d_hdim,
        HAS_DPOS=dpos is not None, HAS_Z=z is not None, HAS_SEQ=seg is not None,
        HAS_CB=cb is not None, PREC=prec)

    # Triton 3.6+ on sm_90 (wgmma) reads past the end of this kernel's shared memory at a
    # 16- or 32-wide state with 64-row blocks: an illegal memory access (compute-sanitizer:
    # "Invalid __shared__ read" at the dC dot; the same family as triton-lang/triton#11366).
    # 32-row blocks take the mma.sync path instead. Only dB and dC come from here, so its row
    # block is independent of the others'.
    BT_bc = min(BT, 32) if BN <= 32 else BT
    NB_bc = Q // BT_bc
    hpg = H // G
    hpp = plan.heads_per_program(b, nchunks, 2 * NB_bc, G, hpg)
    nsplit = hpg // hpp
    dBp = torch.empty(nsplit, b, Lp, G, N, device=dev, dtype=f32)
    dCp = torch.empty_like(dBp)
    dcs2 = torch.empty(b, H, Lp, device=dev, dtype=f32) if has_state else None
    _chunk_bwd_dbc[plan, (2 * G * nsplit, nchunks * NB_bc, b)](
        x, z, dout, B, C, delta, cs, seg, E, dst, dBp, dCp, dcs2,
        l, H, P, N, G,
        x.stride(0), x.stride(1), x.stride(2), *_strides3(z),
        dout.stride(0), dout.stride(1), dout.stride(2),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        dBp.stride(0), dBp.stride(1), dBp.stride(2), dBp.stride(3), Lp, nchunks,
        Q=Q, BT=BT_bc, BP=BP, BN=BN, HPP=hpp, HAS_Z=z is not None, HAS_SEQ=seg is not None,
        HAS_STATE=has_state, PREC=prec)

    ddt = torch.empty_like(dt, memory_format=torch.contiguous_format)
    dld = torch.empty_like(ddt, dtype=f32) if has_ld else None
    dAp = torch.empty(b, H, nchunks, device=dev, dtype=f32)
    dbp = torch.empty_like(dAp)
    lo, hi = dt_limit
    _dt_bwd[(H, nchunks, b)](
        dt, dt_bias, A, delta, dcs, rows, dcs2, ddx, dlast, dlast2, ddt, dAp, dbp, dld,
        l, H, dt.stride(0), dt.stride(1), dt.stride(2), ddt.stride(0), ddt.stride(1), ddt.stride(2),
        float(lo), float(min(hi, 3.0e38)), Lp, nchunks, nblk,
        Q=Q, NB=NB, BLK2=max(2, _pow2(nblk)), HAS_STATE=has_state, HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus,
        HAS_LIMIT=lo > 0.0 or hi < math.inf, HAS_LD=has_ld, num_warps=plan.warps(4))

    dB = (dBp[0] if nsplit == 1 else dBp.sum(0))[:, :l]
    dC = (dCp[0] if nsplit == 1 else dCp.sum(0))[:, :l]
    dA = dAp.sum((0, 2)) if not has_ld else None
    dbias = dbp.sum((0, 2)) if dt_bias is not None else None
    dD = dDp.sum((0, 1)) if D is not None else None
    ddpos = ddpos[:, :, :l].transpose(1, 2) if dpos is not None else None
    return dx, ddt, dA, dB, dC, dD, dz, dbias, dinit, dld, ddpos


class _SSDFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_states, seg, Q, softplus, dt_limit,
                log_decay, D_pos, plan):
        dpos = pad_positions(D_pos, Q)
        out, final, y, delta, cs, E = forward_pass(x, dt, A, B, C, D, z, dt_bias, initial_states, seg,
                                                   Q, softplus, dt_limit, log_decay, dpos, plan)
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, y, delta, cs, E, seg, dpos)
        ctx.cfg = (Q, softplus, dt_limit, initial_states is not None, log_decay is not None, plan)
        ctx.init_dtype = initial_states.dtype if initial_states is not None else None
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x, dt, A, B, C, D, z, dt_bias, y, delta, cs, E, seg, dpos = ctx.saved_tensors
        Q, softplus, dt_limit, has_init, has_ld, plan = ctx.cfg
        dx, ddt, dA, dB, dC, dD, dz, dbias, dinit, dld, ddpos = backward_pass(
            dout, dfinal, x, dt, A, B, C, D, z, dt_bias, y, delta, cs, E, seg, Q, softplus,
            dt_limit, has_init, has_ld, dpos, plan)
        cast = lambda g, ref: None if g is None or ref is None else g.to(ref.dtype)  # noqa: E731
        return (dx, ddt, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz, cast(dbias, dt_bias),
                None if dinit is None else dinit.to(ctx.init_dtype), None, None, None, None, dld, ddpos, None)


def _run(x, dt, A, B, C, D, z, dt_bias, init, seg, Q, softplus, dt_limit, log_decay, D_pos, plan):
    """(out, final state): through the autograd node when a gradient is wanted
    (grad_mode.wants_grad), else the forward alone, without the pre-gate y kept for dz."""
    if wants_grad(x, dt, A, B, C, D, z, dt_bias, init, log_decay, D_pos):
        return _SSDFn.apply(x, dt, A, B, C, D, z, dt_bias, init, seg, Q, softplus, dt_limit, log_decay, D_pos,
                            plan)
    out, final, *_ = forward_pass(x, dt, A, B, C, D, z, dt_bias, init, seg, Q, softplus, dt_limit,
                                  log_decay, pad_positions(D_pos, Q), plan, store_y=False)
    return out, final


def pad_positions(v, Q):
    """(b, l, h) per-position values -> (b, h, Lp) fp32, zero-padded to whole chunks (kernel layout)."""
    if v is None:
        return None
    b, l, h = v.shape
    out = v.new_zeros(b, h, cdiv(l, Q) * Q, dtype=torch.float32)
    out[:, :, :l] = v.transpose(1, 2)
    return out


def _operands(x, B, C, z, D, initial_states):
    """x, B, C, z in x's dtype with a contiguous last dim; D and the initial states contiguous."""
    cast = lambda t: None if t is None else lastdim_contig(t if t.dtype == x.dtype else t.to(x.dtype))  # noqa: E731
    return (lastdim_contig(x), cast(B), cast(C), cast(z), D.contiguous() if D is not None else None,
            initial_states.contiguous() if initial_states is not None else None)


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
        dt_limit=(0.0, math.inf), initial_states=None, seq_idx=None, return_final_states=False,
        plan: SSDPlan = DEFAULT_PLAN):
    """Same contract as ``reference.ssd`` (see there); fused Triton forward and backward.
    ``plan``: the launch settings (plan.py), which change speed, not results."""
    if x.dtype == torch.float64:
        return _ssd_reference(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                              dt_softplus=dt_softplus, dt_limit=dt_limit, initial_states=initial_states,
                              seq_idx=seq_idx, return_final_states=return_final_states)
    dt = lastdim_contig(dt)
    x, B, C, z, D, init = _operands(x, B, C, z, D, initial_states)
    Q = plan.kernel_chunk(chunk_size, x.dtype)
    seg = None
    if seq_idx is not None:
        nchunks = cdiv(x.shape[1], Q)
        seg = segment_ids(seq_idx).to(torch.int32)
        pad = nchunks * Q - x.shape[1]     # padding continues the last segment
        seg = torch.cat([seg, seg[:, -1:].expand(-1, pad)], 1).contiguous()
    lim = (float(dt_limit[0]), float(dt_limit[1]))
    out, final = _run(x, dt, A, B, C, D, z, dt_bias, init, seg, Q, bool(dt_softplus), lim, None, None, plan)
    return (out, final) if return_final_states else out


def ssd_decoupled(x, scale, log_decay, B, C, chunk_size, D=None, D_pos=None, z=None,
                  initial_states=None, return_final_states=False, plan: SSDPlan = DEFAULT_PLAN):
    """Same contract as ``reference.ssd_decoupled``: the decay exp(log_decay) and the input scale
    are separate (b, l, h) inputs, plus a per-position skip D_pos. The same kernels as ``ssd``."""
    if x.dtype == torch.float64:
        return _ssd_decoupled_reference(x, scale, log_decay, B, C, chunk_size, D=D, D_pos=D_pos, z=z,
                                        initial_states=initial_states, return_final_states=return_final_states)
    scale = scale.float().contiguous()
    log_decay = log_decay.float().contiguous()
    x, B, C, z, D, init = _operands(x, B, C, z, D, initial_states)
    Q = plan.kernel_chunk(chunk_size, x.dtype)
    A = scale.new_zeros(x.shape[2])                  # unused: the kernels read log_decay instead
    out, final = _run(x, scale, A, B, C, D, z, None, init, None, Q, False, (0.0, math.inf), log_decay, D_pos,
                      plan)
    return (out, final) if return_final_states else out
