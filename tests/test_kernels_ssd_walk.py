"""The SSD's no-grad forward as one walk per (batch, head) (ssd/fused_walk.py), interpreted on
CPU, against the torch reference: ssd with every option but packed sequences, ssd_decoupled and
Mamba-3 SISO (which run on it), lengths off the chunk grid, g > 1, p and n below the tiles; and
where the walk must not run (a gradient wanted, packed sequences, too few programs)."""
import pytest
import torch

from hybridlab.kernels.ops.mamba3 import fused as m3_fused
from hybridlab.kernels.ops.mamba3 import reference as m3_reference
from hybridlab.kernels.ops.ssd import fused, reference

from test_kernels_mamba3 import CASES, CHUNK, make_case
from test_kernels_mamba3 import rel as m3_rel
from test_kernels_ssd import ALL, ALL_HP, SHAPES, TOL, decoupled_inputs, on_dev
from test_mamba2 import make_inputs, rel

NO_SEQ, NO_SEQ_HP = (tuple(o for o in opts if o != "seq_idx") for opts in (ALL, ALL_HP))


@pytest.fixture
def walk(monkeypatch):
    """The walk for every grid, in chunks of 16 rows (so the test lengths span several chunks);
    counts its launches."""
    monkeypatch.setattr(fused, "WALK_MIN_PROGRAMS", 1)
    monkeypatch.setattr(fused, "WALK_CHUNK", 16)
    launches = []
    launch = fused._forward_walk

    class Spy:
        def __getitem__(self, grid):
            launches.append(grid)
            return launch[grid]

    monkeypatch.setattr(fused, "_forward_walk", Spy())
    return launches


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("opts", [NO_SEQ, NO_SEQ_HP, ()], ids=["all", "all_Dhp", "none"])
def test_walk_matches_reference(walk, shape, opts):
    b, l, h, p, g, n, chunk = shape
    kw = on_dev(make_inputs(b, l, h, p, g, n, opts, dtype=torch.float32))
    with torch.no_grad():
        y, s = fused.ssd(chunk_size=chunk, return_final_states=True, **kw)
    y_ref, s_ref = reference.ssd(chunk_size=chunk, return_final_states=True, **kw)
    assert walk == [(b * h, 1)]
    assert y.shape == (b, l, h, p) and s.shape == (b, h, p, n) and s.dtype == torch.float32
    assert rel(y, y_ref) <= TOL, f"out {rel(y, y_ref):.2e}"
    assert rel(s, s_ref) <= TOL, f"final {rel(s, s_ref):.2e}"


@pytest.mark.parametrize("opts", [("D", "D_pos", "z", "initial_states"), ()], ids=["all", "none"])
def test_walk_decoupled(walk, opts):
    b, l, h, p, g, n = 2, 45, 2, 16, 1, 32
    kw = decoupled_inputs(b, l, h, p, g, n, opts)
    with torch.no_grad():
        y, s = fused.ssd_decoupled(chunk_size=32, return_final_states=True, **kw)
    y_ref, s_ref = reference.ssd_decoupled(chunk_size=32, return_final_states=True, **kw)
    assert walk == [(b * h, 1)]
    assert rel(y, y_ref) <= TOL and rel(s, s_ref) <= TOL


@pytest.mark.parametrize("bp", [16, 32])
def test_walk_split_over_p(walk, monkeypatch, bp):
    """P split over programs (WALK_BP), the last tile partial (p 40), every option."""
    monkeypatch.setattr(fused, "WALK_BP", bp)
    b, l, h, p, g, n = 2, 37, 2, 40, 1, 16
    kw = on_dev(make_inputs(b, l, h, p, g, n, NO_SEQ_HP, dtype=torch.float32))
    with torch.no_grad():
        y, s = fused.ssd(chunk_size=16, return_final_states=True, **kw)
    y_ref, s_ref = reference.ssd(chunk_size=16, return_final_states=True, **kw)
    assert walk == [(b * h, -(-p // bp))]
    assert rel(y, y_ref) <= TOL and rel(s, s_ref) <= TOL


def test_walk_chunk_longer_than_the_sequence(walk, monkeypatch):
    """One chunk only, most of it padding (rows past the end: no input, no decay)."""
    monkeypatch.setattr(fused, "WALK_CHUNK", 64)
    kw = on_dev(make_inputs(1, 21, 2, 8, 1, 16, NO_SEQ, dtype=torch.float32))
    with torch.no_grad():
        y, s = fused.ssd(chunk_size=16, return_final_states=True, **kw)
    y_ref, s_ref = reference.ssd(chunk_size=16, return_final_states=True, **kw)
    assert rel(y, y_ref) <= TOL and rel(s, s_ref) <= TOL


def test_walk_only_where_it_applies(walk, monkeypatch):
    """Not with a gradient wanted (the backward needs the three-launch forward's scratch), not
    with packed sequences, not on a grid below WALK_MIN_PROGRAMS; results the same either way."""
    b, l, h, p, g, n, chunk = SHAPES["l40_c16_g2"]
    kw = on_dev(make_inputs(b, l, h, p, g, n, ALL, dtype=torch.float32))
    y_ref = reference.ssd(chunk_size=chunk, **kw)
    with torch.no_grad():
        assert rel(fused.ssd(chunk_size=chunk, **kw), y_ref) <= TOL       # seq_idx given
    x = kw["x"].clone().requires_grad_(True)
    assert rel(fused.ssd(chunk_size=chunk, **{**kw, "x": x}), y_ref) <= TOL
    monkeypatch.setattr(fused, "WALK_MIN_PROGRAMS", b * h + 1)
    del kw["seq_idx"]
    with torch.no_grad():
        assert rel(fused.ssd(chunk_size=chunk, **kw), reference.ssd(chunk_size=chunk, **kw)) <= TOL
    assert walk == []
    assert fused.walk_applies(b, h + 1, None, torch.bfloat16) and not fused.walk_applies(b, h, None, torch.bfloat16)



@pytest.mark.parametrize("name", ["siso-all-init", "siso-g2-fullrot-multiple", "siso-odd-shapes"])
def test_walk_runs_mamba3_siso_without_grad(walk, name):
    """Mamba-3 SISO's no-grad forward takes the walk too (its decoupled SSD, per-head k and q, the
    per-position skip): output and every final state against the reference."""
    args, kw, ini = make_case(**CASES[name])
    with torch.no_grad():
        y, fin = m3_fused.mamba3(*args, **kw, initial_states=ini, chunk_size=CHUNK[name],
                                 return_final_states=True)
    y_ref, fin_ref = m3_reference.mamba3(*args, **kw, initial_states=ini, chunk_size=CHUNK[name],
                                         return_final_states=True)
    assert walk == [(args[0].shape[0] * args[0].shape[2], 1)]
    assert m3_rel(y, y_ref) <= TOL
    for a, r in zip(fin[1:], fin_ref[1:]):
        assert a.shape == r.shape and m3_rel(a, r) <= TOL
