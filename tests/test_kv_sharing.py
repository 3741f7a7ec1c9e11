"""Cross-layer KV sharing (Hymba): a layer with ``share_kv`` attends its own queries over the keys
and values of the nearest earlier attention layer; it owns no K/V weights and no KV cache."""
import math

import pytest
import torch

import hybridlab
from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.composer.summary import summarize
from hybridlab.errors import SpecError

D = 32


def attention(n_meta=0, **fields):
    cls = get_block("attention")
    return cls(cls.Config(**fields), LayerContext(index=0, name="*", d_model=D, n_layers=2, n_meta=n_meta)).double()


def naive(q, k, v, window=None, n_meta=0):
    """softmax(q k^T / sqrt(d) + mask) v per head, GQA groups, explicit mask."""
    B, H, L, hd = q.shape
    k = k.repeat_interleave(H // k.shape[1], 1)
    v = v.repeat_interleave(H // v.shape[1], 1)
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    keep = (j <= i) & ((window is None) | (i - j < (window or 1)) | (j < n_meta))
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    return torch.softmax(s.masked_fill(~keep, float("-inf")), -1) @ v


@pytest.mark.parametrize("window,n_meta", [(None, 0), (4, 0), (4, 2)])
def test_sharing_layer_attends_its_queries_over_the_earlier_layers_keys(window, n_meta):
    src = attention(n_meta, n_heads=4, n_kv_heads=2, window=window)
    dst = attention(n_meta, n_heads=4, n_kv_heads=2, window=window, share_kv=True)
    assert dst.wqkv.weight.shape == (D, D)                 # queries only: no K/V weights
    x1, x2 = torch.randn(2, 2, 9, D, dtype=torch.float64)
    ctx = ForwardContext()
    src(x1, ctx)
    got = dst(x2, ctx)
    q = dst._heads(x2, torch.arange(9), None)[0]
    _, k, v = src._heads(x1, torch.arange(9), None)
    want = dst._merge(naive(q, k, v, window, n_meta))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_sharing_layer_decodes_from_the_earlier_layers_cache():
    src = attention(2, n_heads=4, n_kv_heads=2, window=3)
    dst = attention(2, n_heads=4, n_kv_heads=2, window=3, share_kv=True)
    L = 11
    x1, x2 = torch.randn(2, 2, L, D, dtype=torch.float64)
    ctx = ForwardContext()
    src(x1, ctx)
    full = dst(x2, ctx)
    s_src, s_dst = src.init_state(2, L), dst.init_state(2, L)
    assert s_dst == {} and dst.kv_bytes(1000) == 0 and src.kv_bytes(1000) > 0
    steps = []
    for t in range(L):
        c = ForwardContext(position=t)
        _, s_src = src.step(x1[:, t], s_src, c)
        y, s_dst = dst.step(x2[:, t], s_dst, c)
        steps.append(y)
    assert (torch.stack(steps, 1) - full).abs().max() / full.abs().max() <= 1e-10


SPEC = {"name": "kv-share", "model": {"d_model": D, "vocab_size": 64, "meta_tokens": 2},
        "blocks": {"*": {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "window": 6},
                   "S": {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "window": 6, "share_kv": True},
                   "P": {"type": "parallel", "ssm": {"type": "mamba2", "d_state": 8, "headdim": 8},
                         "attention": {"n_heads": 4, "n_kv_heads": 2, "window": 6, "share_kv": True}}},
        "pattern": "*-S-P-"}


def test_model_with_sharing_decodes_exactly_and_accounts_less_kv():
    torch.manual_seed(0)
    model = hybridlab.build_model(hybridlab.load_spec(SPEC)).double()
    ids = torch.randint(0, 64, (2, 20))
    full = model(ids)
    cache = model.init_cache(2, 20)
    steps = []
    for t in range(20):
        logits, cache = model.step(ids[:, t], cache)
        steps.append(logits)
    assert (torch.stack(steps, 1) - full).abs().max() / full.abs().max() <= 1e-10
    plain = dict(SPEC, blocks={**SPEC["blocks"], "S": {**SPEC["blocks"]["S"], "share_kv": False}})
    kv = {name: summarize(hybridlab.load_spec(s), contexts=[1024])["kv_bytes"]["1024"]
          for name, s in (("shared", SPEC), ("plain", plain))}
    assert kv["shared"] * 2 == kv["plain"]     # of the plain model's two KV caches, one remains


def load_text(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return hybridlab.load_spec(path)


def test_sharing_needs_an_earlier_matching_attention_layer(tmp_path):
    text = """name: bad-share
model: {d_model: 32, vocab_size: 64}
blocks:
  "*": {type: attention, n_heads: 4, n_kv_heads: 2}
  S: {type: attention, n_heads: 4, n_kv_heads: 2, share_kv: true}
  W: {type: attention, n_heads: 4, n_kv_heads: 2, window: 8, share_kv: true}
pattern: "S*-S-W-"
"""
    with pytest.raises(SpecError) as e:
        load_text(tmp_path, text)
    got = [p.format().split("\n")[0] for p in e.value.problems]
    assert got == [f"{tmp_path / 'spec.yaml'}:5:61: blocks.S.share_kv: layer 0: no earlier attention layer "
                   "to share keys and values with",
                   f"{tmp_path / 'spec.yaml'}:6:72: blocks.W.share_kv: layer 5 shares the keys and values "
                   "of layer 3, which differ: window 8 vs None"]


def test_shared_attention_cannot_share_kv():
    spec = {"name": "z", "model": {"d_model": D, "vocab_size": 64},
            "blocks": {"*": {"type": "attention", "n_heads": 4},
                       "Z": {"type": "shared_attention", "n_heads": 4, "share_kv": True}},
            "pattern": "*Z"}
    with pytest.raises(SpecError, match="share_kv is for attention blocks"):
        hybridlab.load_spec(spec)
