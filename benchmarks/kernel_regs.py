"""Registers and spill (stack) bytes per thread of our Triton kernels, compiled for the H100
(sm_90) on any machine: no GPU needed. A kernel that spills runs out of registers and pays for
it in local-memory traffic; this is the first thing to check when a kernel is far from its floor.

    python3 -m benchmarks.kernel_regs                 # the Mamba-1, SSD and Mamba-3 SISO kernels at the bench shapes
    MIMO=1 python3 -m benchmarks.kernel_regs          # also the Mamba-3 MIMO (rank 4) kernels
    HYBRIDLAB_SSD_BLOCK_T=32 HYBRIDLAB_MAMBA3_ANGLE_CHUNK=32 python3 -m benchmarks.kernel_regs
    ONLY=rotate python3 -m benchmarks.kernel_regs     # only the kernels whose label contains ONLY
    SASS_DIR=/tmp/sass python3 -m benchmarks.kernel_regs   # also writes each kernel's SASS there

The launch settings are the ops' default launch plans (``DEFAULT_PLAN`` in ops/<op>/plan.py,
built from the HYBRIDLAB_* knobs at import, so the knobs above change what compiles).
It compiles with ``triton.compile(ASTSource, target=GPUTarget("cuda", 90, 32))`` and reads the
cubin's resource usage with the cuobjdump that ships inside the Triton wheel. It also counts the
SASS instructions of the kernel's longest loop body ("loop N"): where a kernel's loop is
issue-bound, time per iteration follows that count (one instruction per clock per scheduler).

The launcher's specializations are reproduced: pointers, strides and large dims that are
multiples of 16 get the divisibility hint, and integer arguments equal to 1 at the bench
shapes (a contiguous tensor's last stride) are compile-time constants, as Triton's launcher makes
them; without that, loads along such a stride do not vectorize and the layouts Triton picks differ.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from hybridlab.kernels.ops.mamba3 import fused_mimo_rows as km
from hybridlab.kernels.ops.mamba3 import fused_prep as kp
from hybridlab.kernels.ops.mamba3 import fused_rotate as kr
from hybridlab.kernels.ops.mamba3.plan import DEFAULT_PLAN as M3
from hybridlab.kernels.ops.selective_scan import fused as ss
from hybridlab.kernels.ops.selective_scan.plan import DEFAULT_PLAN as SS
from hybridlab.kernels.ops.ssd import fused as ssd
from hybridlab.kernels.ops.ssd import fused_bwd as kb
from hybridlab.kernels.ops.ssd import fused_fwd as kf
from hybridlab.kernels.ops.ssd import fused_state as ks
from hybridlab.kernels.ops.ssd.plan import DEFAULT_PLAN as SSD

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def usage(fn, consts: dict, fp32_ptrs=(), int_ptrs=(), config=(4, 1)) -> str:
    """'REG:n STACK:m' of ``fn`` compiled with ``consts`` and a launch config (num_warps,
    num_stages[, maxnreg]) as the ops take it; pointers bf16 unless listed."""
    consts = {**own(fn, ONES), **consts}
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in fp32_ptrs else ("*i32" if name in int_ptrs else "*bf16")
        else:
            sig[name] = "i32"
    # what Triton's launcher tells the compiler at the bench shapes: pointers, strides and the
    # large dims are multiples of 16 (lets loads vectorize and the pipeliner use async copies)
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if name not in consts and (name.endswith("_ptr") or name.startswith("s") or name in DIVISIBLE)}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()},
                    attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=ssd._options(config))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    if os.environ.get("SASS_DIR"):     # keep the SASS for reading: SASS_DIR/<kernel>-<k>.sass
        os.makedirs(os.environ["SASS_DIR"], exist_ok=True)
        k = len(os.listdir(os.environ["SASS_DIR"]))
        with open(os.path.join(os.environ["SASS_DIR"], f"{fn.__name__}-{k}.sass"), "w") as fh:
            fh.write(sass)
        with open(os.path.join(os.environ["SASS_DIR"], f"{fn.__name__}-{k}.ttgir"), "w") as fh:
            fh.write(kernel.asm["ttgir"])       # the layouts Triton chose
    line = next(l.strip() for l in out.splitlines() if l.strip().startswith("REG:"))
    loop = loop_instructions(sass)
    return f"{line.split(' SHARED')[0]}  shared {kernel.metadata.shared} B  " + (f"loop {loop}" if loop else "no loop")


def own(fn, consts: dict) -> dict:
    """The entries of ``consts`` that are arguments of ``fn``."""
    return {k: v for k, v in consts.items() if k in fn.arg_names}


def loop_instructions(sass: str) -> int:
    """Instructions in the longest loop body: the span from a backward branch's target to it."""
    at = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,6})\*/\s+([^;]*);", sass)]
    spans = [(addr - int(b.group(1), 16)) // 16 + 1 for addr, text in at
             if (b := re.search(r"BRA\s+(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)", text)) and int(b.group(1), 16) < addr]
    return max(spans, default=0)


#: integer arguments that are multiples of 16 at the bench shapes (L, Lp, P, N, H, P*N, ...)
DIVISIBLE = ("L", "Lp", "P", "N", "H", "PN", "nchunks", "d", "n", "cpg", "CHUNK")
#: integer arguments equal to 1 at the bench shapes, by kernel argument name: the last stride of
#: a contiguous dt (b, l, h) and its gradient. Cases add their own (the selective scan's (b, d, l)
#: and (b, n, l) tensors have unit time strides) to their constexprs.
ONES = dict(sdt_h=1, sddt_h=1)

SSD_F32 = ("D_ptr", "Dpos_ptr", "delta_ptr", "cs_ptr", "dB_ptr", "dC_ptr", "ddx_ptr", "dcs_ptr",
           "dlast_ptr", "dD_ptr", "dDpos_ptr", "dt_ptr", "A_ptr", "dt_bias_ptr", "ld_ptr", "st_ptr",
           "cb_ptr", "rows_ptr", "dcs2_ptr", "init_ptr", "final_ptr", "dfinal_ptr", "dinit_ptr")


def flag(name: str, default: bool) -> bool:
    """A knob as the launcher sets it, unless the environment variable `name` (0/1) overrides it."""
    return os.environ.get(name, str(int(default))) == "1"


def bc_strides(consts: dict, NP: int, bc_t: bool) -> dict:
    """The Mamba-1 kernels' constant strides, with B and C as ss._time_major copies when bc_t
    (unit n stride, l stride NP)."""
    return {**consts, "sB_l": NP, "sC_l": NP, "sB_n": 1, "sC_n": 1} if bc_t else consts


def bc_f32(ptrs: tuple, bc_t: bool) -> tuple:
    """The fp32 pointers, with B and C when they are the fp32 time-major copies."""
    return ptrs + (("B_ptr", "C_ptr") if bc_t else ())


def cases():
    """(label, kernel, constexprs, fp32 pointers, int pointers, [(warps, stages), ...])."""
    # Mamba-1 (selective_scan/fused_fwd.py, fused_bwd.py) at b4 l4096 d2048, bf16 u/delta/z/B/C, fp32 A/D/bias/states
    # (one time chunk at b4 d2048 and one B/C group: NC = G = 1, constants like the unit strides)
    unit = dict(su_l=1, sdt_l=1, sz_l=1, sB_l=1, sC_l=1, sA_n=1, sdo_l=1, NC=1, G=1)
    opts = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_SEQ=False)
    sf32 = ("A_ptr", "D_ptr", "bias_ptr", "hin_ptr", "last_ptr", "ckpt_ptr", "S_ptr", "P_ptr", "xin_ptr",
            "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr", "dbias_ptr", "dh0_ptr")
    pin = flag("PIN", SS.pin_tile_math)
    for n in (16, 32, 64):
        NP = ss._np(n)
        elems, warps, rows_log = SS.layout(NP)
        cheap = flag("CHEAP", NP <= SS.cheap_softplus_max_np)
        for fast in ((True, False) if cheap else (False,)):
            bc_t = flag("BC_T", SS.reads_bc_time_major(rows_log, 1))
            pf = bc_t and flag("BC_PF", SS.prefetches_bc(bc_t, rows_log, NP, 1))
            fwd = dict(own(ss._fwd_seq_kernel, bc_strides(unit, NP, bc_t)), **opts, HAS_HIN=False, SAVE_CKPT=False,
                       STATES_ONLY=False, PIN=pin, BC_T=bc_t, BLOCK_D=elems // NP, NP=NP, CKPT_T=8, FAST=fast,
                       ROWS_LOG=rows_log, CHEAP_SP=cheap, BC_PF=pf,
                       RS=flag("RS", SS.reduces_by_scatter(rows_log, NP, elems // NP, warps)))
            yield (f"_fwd_seq_kernel (Mamba-1, n {n}, no grad, rows {rows_log}, fast {fast})", ss._fwd_seq_kernel,
                   fwd, bc_f32(sf32, bc_t), ("seq_ptr",), [(warps, 1)])
        if n == 16:     # b1 l32768: time split into 64 chunks, both passes (the unsplit layout, SS.layout)
            elems, warps, rows_log = SS.layout(NP)
            bc_t = flag("BC_T", SS.reads_bc_time_major(rows_log, 64))
            for states_only in (True, False):
                fwd = dict(own(ss._fwd_seq_kernel, bc_strides({**unit, "NC": 64}, NP, bc_t)), **opts,
                           HAS_HIN=not states_only, SAVE_CKPT=False, STATES_ONLY=states_only, PIN=pin, BC_T=bc_t,
                           BLOCK_D=elems // NP, NP=NP, CKPT_T=8, FAST=True, ROWS_LOG=rows_log, CHEAP_SP=True,
                           BC_PF=False, RS=flag("RS", SS.reduces_by_scatter(rows_log, NP, elems // NP, warps)))  # no prefetch on split grids (SS.prefetches_bc)
                yield (f"_fwd_seq_kernel (Mamba-1, n 16, split, pass {1 if states_only else 2}, rows {rows_log})",
                       ss._fwd_seq_kernel, fwd, bc_f32(sf32, bc_t), ("seq_ptr",), [(warps, 1)])
        bc_t = flag("BWD_BC_T", SS.bwd_bc_time_major)
        bwd = dict(own(ss._bwd_seq_kernel, bc_strides(unit, NP, bc_t)), **opts, HAS_XIN=False, WANT_DH0=False,
                   BLOCK_D=SS.bwd_elems // NP, NP=NP, PREFETCH=n <= SS.bwd_prefetch_max_n, PIN=pin, BC_T=bc_t)
        yield (f"_bwd_seq_kernel (Mamba-1, n {n}, B/C time-major {bc_t})", ss._bwd_seq_kernel, bwd,
               bc_f32(sf32, bc_t), ("seq_ptr",), [(SS.bwd_warps, 1)])
    bt = SSD.block_t_max
    q2 = SSD.chunk(256)          # the bench's chunk 256 runs at the cap (the plan's max_chunk)
    for Q, hpp, what in ((q2, 8, f"Mamba-2, chunk {q2}"), (M3.siso_chunk(seq_states=True), 1, "Mamba-3 SISO")):
        m3 = hpp == 1
        common = dict(BP=64, BN=128, HAS_D=True, D_HDIM=False, HAS_DPOS=m3, HAS_Z=m3,
                      HAS_SEQ=False, HAS_STATE=True, PREC="tf32")
        T = min(Q, bt)
        dx = {k: v for k, v in common.items() if k != "HAS_STATE"}
        dx["HAS_CB"] = not m3           # Mamba-2 (g 1) shares C Bᵀ across heads; SISO's per-head k, q cannot
        dbc = {k: v for k, v in common.items() if k not in ("HAS_D", "D_HDIM", "HAS_DPOS")}
        yield (f"chunk_bwd_dx ({what}, BT {T})", kb.chunk_bwd_dx, dict(Q=Q, BT=T, **dx),
               SSD_F32, ("seg_ptr",), [(4, 1), (8, 1), (4, 2), (4, 1, 168)])
        yield (f"chunk_bwd_dbc ({what}, BT {T})", kb.chunk_bwd_dbc, dict(Q=Q, BT=T, HPP=hpp, **dbc),
               SSD_F32, ("seg_ptr",), [(4, 1), (8, 1), (4, 2), (4, 1, 168)])
        for segs in (False, True):      # True: the entering states of a segmented walk (b1), with grad
            yield (f"chunk_scan_fwd ({what}, BT {T}{', segments' if segs else ''})", kf.chunk_scan_fwd,
                   dict(Q=Q, BT=T, STORE_Y=m3, HAS_SEGS=segs, STORE_E=segs, **common),
                   SSD_F32 + ("sin_ptr", "dec_ptr"), ("seg_ptr",), [(4, 1), (8, 1), (4, 2), (4, 3), (8, 2)])
        # fused_state.py (the plan's seq_state_bn, seq_state_rows): the sequential state kernels
        tiles = ((SSD.seq_state_bn, min(Q, SSD.seq_state_rows)), (64, 64), (128, 64), (64, 32), (128, 32))
        for sbn, kb_rows in dict.fromkeys(tiles):      # the defaults first, then the variants
            seq = dict(Q=Q, KB=kb_rows, BP=64, BN=sbn, HAS_SEQ=False, PREC="tf32")
            yield (f"state_fwd_seq ({what}, BN {sbn}, rows {kb_rows})", ks.state_fwd_seq,
                   dict(seq, HAS_BIAS=not m3, SOFTPLUS=not m3, HAS_LIMIT=False, HAS_LD=m3, HAS_INIT=False),
                   SSD_F32, ("seg_ptr",), [(4, 2), (4, 3), (8, 2)])
            yield (f"state_bwd_seq ({what}, BN {sbn}, rows {kb_rows})", ks.state_bwd_seq,
                   dict(seq, HAS_Z=m3, HAS_DFINAL=True, HAS_DINIT=False), SSD_F32, ("seg_ptr",), [(4, 2), (4, 3), (8, 2)])
    rot = dict(QA=M3.angle_chunk, BN2=64, HAS_BIAS=True, HAS_ROT=True, RB=1, FAST_TRIG=True)
    fwd = dict(rot, PREC="tf32x3", HAS_DPOS=True)     # PREC: the forward's MIMO score product
    f32 = ("Bb_ptr", "Cb_ptr", "ps_ptr", "dt_ptr", "off_ptr", "qk_ptr", "dk_ptr", "dq_ptr", "dqk_ptr",
           "dB_ptr", "dC_ptr", "dBb_ptr", "dCb_ptr", "dps_ptr", "ddt_ptr", "doff_ptr", "bnext_ptr", "dpos_ptr")
    yield "rotate_fwd_kernel (Mamba-3, n 128)", kr.rotate_fwd_kernel, fwd, f32, (), [(8, 1, 128), (8, 1), (16, 1)]  # M3.rotate_fwd_warps, rotate_fwd_maxnreg
    for pairs in (64, 32, 16):        # M3.rotate_bwd_pairs: 64 = all pairs of n=128 in one program
        yield (f"rotate_bwd_kernel (Mamba-3, n 128, {pairs} pairs)", kr.rotate_bwd_kernel,
               dict(rot, BN2=pairs, HAS_QK=True, QK_DPOS=True), f32, (), [(8, 1), (4, 1)])   # SISO: 16 pairs, 4 warps
    prep = dict(QA=M3.angle_chunk, BH=32, BS=32, HAS_TRAP=True, HAS_ROT=True, PREC="tf32x3")
    pf32 = tuple(n for fn in (kp.prep_fwd_kernel, kp.prep_bwd_kernel, kp.angle_scan_kernel)
                 for n in fn.arg_names if n.endswith("_ptr") and n not in ("trap_ptr", "ang_ptr", "dtrap_ptr", "dang_ptr"))
    yield "prep_fwd_kernel (Mamba-3, h 32, S 32)", kp.prep_fwd_kernel, prep, pf32, (), [(4, 1), (8, 1)]
    yield "prep_bwd_kernel (Mamba-3, h 32, S 32)", kp.prep_bwd_kernel, dict(prep, HAS_DPOS=True), pf32, (), [(8, 1), (4, 1)]
    yield "angle_scan_kernel (Mamba-3, S 32)", kp.angle_scan_kernel, dict(CB=M3.scan_chunks, BS=32, HAS_INIT=True), pf32, (), [(4, 1)]
    yield ("angle_scan_bwd_kernel (Mamba-3, S 32)", kp.angle_scan_bwd_kernel,
           dict(CB=M3.scan_chunks, BS=32, HAS_DFIN=True, HAS_INIT=True), pf32 + ("doff_ptr", "dfin_ptr", "dtot_ptr", "dang0_ptr"), (), [(4, 1)])
    if os.environ.get("MIMO", "0") == "1":        # MIMO rank 4 (fused_mimo.py): the rotation and output kernels
        yield "rotate_fwd_kernel (MIMO R4, n 128)", kr.rotate_fwd_kernel, dict(fwd, RB=4, HAS_DPOS=False), f32, (), \
            [(8, 1, 128), (8, 1), (16, 1), (4, 1)]
        for pairs in (32, 16, 8):
            yield (f"rotate_bwd_kernel (MIMO R4, {pairs} pairs)", kr.rotate_bwd_kernel,
                   dict(rot, BN2=pairs, HAS_QK=True, RB=4, QK_DPOS=False), f32, (), [(8, 1), (4, 1)])
        mf32 = ("s_ptr", "wd_ptr", "w_ptr", "Wz_ptr", "Wo_ptr", "dx_ptr", "ds_ptr", "dwd_ptr", "dw_ptr", "dz_ptr",
                "dWz_ptr", "dWo_ptr")
        for rows in (64, 32, 16):
            flags = dict(ROWS=rows, RB=4, BP=64, HAS_Z=True, HAS_WZ=True, HAS_WO=True)
            yield f"mimo_out_fwd_kernel (R4, {rows} rows)", km.mimo_out_fwd_kernel, flags, mf32, (), [(4, 1), (8, 1)]
            yield f"mimo_out_bwd_kernel (R4, {rows} rows)", km.mimo_out_bwd_kernel, flags, mf32, (), [(4, 1), (8, 1)]


if __name__ == "__main__":
    only = os.environ.get("ONLY", "")
    for label, fn, consts, fp32, ints, configs in cases():
        if only not in label:
            continue
        for config in configs:
            cap = f" maxnreg {config[2]}" if len(config) > 2 else ""
            print(f"{label:48s} warps {config[0]} stages {config[1]}{cap}: {usage(fn, consts, fp32, ints, config)}")
