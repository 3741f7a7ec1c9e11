"""Attention block: against a naive softmax attention written from the equations, decode vs
forward, causality, RoPE properties, KV accounting and config validation."""
import math

import pytest
import torch

from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.blocks.rope import Rotary, rotary_dim



D_MODEL = 32


def make_attention(d_model=D_MODEL, n_meta=0, **fields):
    cls = get_block("attention")
    cfg = cls.Config(**fields)
    assert cfg.validate(d_model) == []
    block = cls(cfg, LayerContext(index=0, name="*", d_model=d_model, n_layers=1, n_meta=n_meta))
    return block.double()


def naive_rope(v, pos, rot, theta):
    """Rotate pairs (i, i + rot/2) of the first `rot` dims by pos * theta^(-2i/rot)."""
    out = v.clone()
    for i in range(rot // 2):
        angle = pos * theta ** (-2 * i / rot)
        a, b = v[i], v[i + rot // 2]
        out[i] = a * math.cos(angle) - b * math.sin(angle)
        out[i + rot // 2] = b * math.cos(angle) + a * math.sin(angle)
    return out


def naive_attention(block, x):
    """softmax(q k^T / sqrt(d) + mask) v per head, with explicit loops (the equations)."""
    cfg = block.cfg
    B, L, _ = x.shape
    H, Hkv, hd = block.n_heads, block.n_kv_heads, block.head_dim
    qkv = x @ block.wqkv.weight.T
    if block.wqkv.bias is not None:
        qkv = qkv + block.wqkv.bias
    q = qkv[..., : H * hd].reshape(B, L, H, hd)
    k = qkv[..., H * hd: (H + Hkv) * hd].reshape(B, L, Hkv, hd)
    v = qkv[..., (H + Hkv) * hd:].reshape(B, L, Hkv, hd)
    out = torch.zeros(B, L, H, hd, dtype=x.dtype)
    group = H // Hkv
    rot = rotary_dim(hd, cfg.rope_fraction) if cfg.rope else 0
    for b in range(B):
        for h in range(H):
            kh = h // group                       # query heads share kv heads in contiguous groups
            for i in range(L):
                qi = naive_rope(q[b, i, h], i, rot, cfg.rope_theta)
                scores, values = [], []
                for j in range(L):
                    # Hymba: the leading meta tokens stay visible to a sliding window
                    visible = j <= i and (cfg.window is None or i - j < cfg.window or j < block.n_meta)
                    if visible:
                        kj = naive_rope(k[b, j, kh], j, rot, cfg.rope_theta)
                        scores.append(torch.dot(qi, kj) / math.sqrt(hd))
                        values.append(v[b, j, kh])
                p = torch.softmax(torch.stack(scores), dim=0)
                out[b, i, h] = (p[:, None] * torch.stack(values)).sum(0)
    return out.reshape(B, L, H * hd) @ block.wo.weight.T


CASES = {
    "mha": dict(n_heads=4),
    "gqa": dict(n_heads=4, n_kv_heads=2),
    "mqa": dict(n_heads=4, n_kv_heads=1, qkv_bias=True),
    "window": dict(n_heads=4, n_kv_heads=2, window=3),
    "nope": dict(n_heads=2, rope=False),
    "partial_rope": dict(n_heads=4, rope_fraction=0.5, rope_theta=500.0),
    "head_dim": dict(n_heads=2, head_dim=12, window=4),
    "window_meta": dict(n_heads=4, n_kv_heads=2, window=3, n_meta=2),
    "full_meta": dict(n_heads=2, n_meta=2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_naive_attention(case):
    block = make_attention(**CASES[case])
    if block.wqkv.bias is not None:
        torch.nn.init.normal_(block.wqkv.bias)      # make the bias matter
    x = torch.randn(2, 7, D_MODEL, dtype=torch.float64)
    got = block(x, ForwardContext())
    want = naive_attention(block, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_equals_forward(case):
    block = make_attention(**CASES[case])
    L = 9
    x = torch.randn(2, L, D_MODEL, dtype=torch.float64)
    full = block(x, ForwardContext())
    state = block.init_state(2, L)
    outs = []
    for t in range(L):
        y, state = block.step(x[:, t], state, ForwardContext(position=t))
        outs.append(y)
    err = (torch.stack(outs, 1) - full).abs().max() / full.abs().max()
    assert err <= 1e-6


def test_sliding_window_cache_is_a_ring_of_window_slots():
    block = make_attention(n_heads=4, n_kv_heads=2, window=3)
    state = block.init_state(1, 100)
    assert state["k"].shape == (1, 2, 3, D_MODEL // 4)


def test_meta_tokens_get_fixed_slots_in_front_of_the_ring():
    block = make_attention(n_heads=4, n_kv_heads=2, window=3, n_meta=2)
    state = block.init_state(1, 100)
    assert state["k"].shape == (1, 2, 5, D_MODEL // 4)
    assert block.attended(100) == 5 and block.attended(4) == 4
    assert block.kv_bytes(100) == 2 * 5 * 2 * (D_MODEL // 4) * 2          # k and v, bf16
    x = torch.randn(1, 12, D_MODEL, dtype=torch.float64)
    for t in range(12):
        _, state = block.step(x[:, t], state, ForwardContext(position=t))
    # the meta keys (positions 0, 1) were never overwritten by the ring
    k_meta = block._heads(x[:, :2], torch.arange(2), None)[1]
    torch.testing.assert_close(state["k"][:, :, :2], k_meta)


def test_full_cache_too_short_raises():
    block = make_attention(n_heads=4)
    state = block.init_state(1, 2)
    x = torch.randn(1, D_MODEL, dtype=torch.float64)
    for t in range(2):
        _, state = block.step(x, state, ForwardContext(position=t))
    with pytest.raises(IndexError, match="max_len"):
        block.step(x, state, ForwardContext(position=2))


@pytest.mark.parametrize("case", ["gqa", "window"])
def test_causal(case):
    block = make_attention(**CASES[case])
    x = torch.randn(1, 8, D_MODEL, dtype=torch.float64)
    y = block(x, ForwardContext())
    for t in range(8):
        x2 = x.clone()
        x2[:, t] += torch.randn(D_MODEL, dtype=torch.float64)
        y2 = block(x2, ForwardContext())
        assert torch.equal(y2[:, :t], y[:, :t])
        assert not torch.allclose(y2[:, t], y[:, t])


def test_window_limits_what_a_token_sees():
    block = make_attention(n_heads=2, window=2)
    x = torch.randn(1, 6, D_MODEL, dtype=torch.float64)
    y = block(x, ForwardContext())
    x2 = x.clone()
    x2[:, 1] += 1.0
    y2 = block(x2, ForwardContext())
    assert not torch.allclose(y2[:, 2], y[:, 2])     # token 2 still sees token 1
    assert torch.equal(y2[:, 3:], y[:, 3:])         # tokens 3+ no longer do


def test_rope_depends_only_on_relative_position():
    rot = Rotary(8, fraction=0.5, theta=100.0)
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64)

    def score(m, n):
        return (rot(q, torch.tensor([m])) * rot(k, torch.tensor([n]))).sum()

    torch.testing.assert_close(score(5, 2), score(12, 9), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(score(5, 2), score(5, 3))
    assert torch.equal(rot(q, torch.tensor([7]))[..., 4:], q[..., 4:])   # unrotated half untouched
    torch.testing.assert_close(rot(q, torch.tensor([0])), q)


def test_kv_bytes_and_flops():
    full = make_attention(n_heads=4, n_kv_heads=2)            # head_dim 8
    assert full.kv_bytes(100, torch.bfloat16) == 2 * 100 * 2 * 8 * 2
    assert full.kv_bytes(100, torch.float32) == 2 * 100 * 2 * 8 * 4
    swa = make_attention(n_heads=4, n_kv_heads=2, window=16)
    assert swa.kv_bytes(100, torch.bfloat16) == 2 * 16 * 2 * 8 * 2
    assert swa.kv_bytes(10, torch.bfloat16) == 2 * 10 * 2 * 8 * 2
    n_params = D_MODEL * (32 + 2 * 16) + 32 * D_MODEL
    assert full.num_parameters() == n_params
    assert full.flops_per_token(100) == 2 * n_params + 4 * 4 * 8 * 100
    assert swa.flops_per_token(100) == 2 * n_params + 4 * 4 * 8 * 16
    assert full.state_bytes() == 0


def test_hf_layer_type_follows_window():
    assert make_attention(n_heads=4).hf_layer_type == "full_attention"
    assert make_attention(n_heads=4, window=8).hf_layer_type == "sliding_attention"


@pytest.mark.parametrize("fields, bad_field", [
    (dict(n_heads=5), "n_heads"),                    # 5 does not divide 32
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(n_heads=0), "n_heads"),
    (dict(n_heads=4, window=0), "window"),
    (dict(n_heads=4, rope_fraction=1.5), "rope_fraction"),
    (dict(n_heads=16, rope_fraction=0.2), "rope_fraction"),   # head_dim 2 -> rotates nothing
])
def test_validate_rejects(fields, bad_field):
    problems = get_block("attention").Config(**fields).validate(D_MODEL)
    assert [f for f, _ in problems] == [bad_field]


def test_validate_accepts_explicit_head_dim():
    assert get_block("attention").Config(n_heads=5, head_dim=8).validate(D_MODEL) == []
