"""HybridModel built from typed specs: decode vs forward, causality, gradients, meta tokens,
parameter counts, aux loss, init scaling, meta-device build."""
import math

import pytest
import torch

from hybridlab.blocks import block_types, get_block
from hybridlab.composer.builder import HybridModel, build_model
from hybridlab.composer.spec import InitConfig, LayerSpec, ModelConfig, ModelSpec



D, V = 32, 64


def spec_of(layers, d_model=D, vocab=V, **model):
    """[(name, type, fields)] -> ModelSpec, as the loader would produce it."""
    return ModelSpec("test", ModelConfig(d_model=d_model, vocab_size=vocab, **model), tuple(
        LayerSpec(i, name, typ, get_block(typ).Config(**fields)) for i, (name, typ, fields) in enumerate(layers)))


ATTN = ("*", "attention", dict(n_heads=4, n_kv_heads=2))
SWA = ("w", "attention", dict(n_heads=4, window=3, rope_fraction=0.5))
MLP = ("-", "mlp", dict(hidden_mult=2.0))
MOE = ("E", "moe", dict(n_experts=4, top_k=2, n_shared_experts=1, hidden_mult=1.0))
SHARED = ("S", "shared_attention", dict(n_heads=4, adapter_rank=2, concat_embeddings=True))
PAR = ("P", "parallel", dict(attention=dict(n_heads=4, window=4), ssm=dict(type="mamba1")))

MODELS = {
    "transformer": dict(layers=[ATTN, MLP, ATTN, MLP]),
    "moe_untied_layernorm": dict(layers=[ATTN, MOE, SWA, MOE], tie_embeddings=False, norm="layernorm"),
    "meta_tokens": dict(layers=[SWA, MLP, ATTN, MOE], meta_tokens=4),
    "shared": dict(layers=[SHARED, MLP, SHARED, MOE], meta_tokens=2),
    "parallel": dict(layers=[PAR, MLP, PAR], meta_tokens=3),
}
for _ssm in ("mamba1", "mamba2", "mamba3"):
    MODELS[f"hybrid_{_ssm}"] = dict(layers=[(_ssm[-1], _ssm, dict(d_state=8) if _ssm == "mamba1"
                                             else dict(d_state=16, headdim=16)), MLP, ATTN, MOE])


def make(name, dtype=torch.float64):
    kw = dict(MODELS[name])
    needed = {t for _, t, f in kw["layers"]} | {f["ssm"]["type"] for _, t, f in kw["layers"] if t == "parallel"}
    missing = needed - set(block_types())
    assert not missing, f"block types not registered: {missing}"
    return build_model(spec_of(kw.pop("layers"), **kw), dtype=dtype)


def decode(model, ids):
    cache = model.init_cache(ids.shape[0], ids.shape[1])
    return torch.stack([model.step(ids[:, t], cache)[0] for t in range(ids.shape[1])], 1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_decode_equals_forward(name):
    model = make(name)
    ids = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        full = model(ids)
        steps = decode(model, ids)
    assert full.shape == (2, 10, V)
    assert ((steps - full).abs().max() / full.abs().max()) <= 1e-6


@pytest.mark.parametrize("name", sorted(MODELS))
def test_causal(name):
    model = make(name)
    ids = torch.randint(0, V, (1, 9))
    with torch.no_grad():
        base = model(ids)
        for t in (0, 4, 8):
            changed = ids.clone()
            changed[0, t] = (changed[0, t] + 7) % V
            out = model(changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], rtol=1e-12, atol=1e-14)
            assert not torch.allclose(out[:, t], base[:, t])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_every_parameter(name):
    model = make(name, dtype=torch.float32)
    ids = torch.randint(0, V, (2, 12))
    logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids.reshape(-1)) + model.aux_loss()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_meta_tokens_are_prepended_but_never_returned():
    model = make("meta_tokens")
    ids = torch.randint(0, V, (2, 5))
    with torch.no_grad():
        out = model(ids)
        assert out.shape == (2, 5, V)
        model.meta_tokens.add_(0.5)                 # the meta tokens do reach the real tokens
        assert not torch.allclose(model(ids), out)
    cache = model.init_cache(2, 5)
    assert cache.position == 4 and cache.max_len == 9


def test_decode_cache_full_raises():
    model = make("transformer")
    cache = model.init_cache(1, 2)
    with torch.no_grad():
        model.step(torch.tensor([1]), cache)
        model.step(torch.tensor([2]), cache)
        with pytest.raises(IndexError, match="max_len"):
            model.step(torch.tensor([3]), cache)


def test_parameter_counts():
    tied = make("transformer")
    assert tied.head.weight is tied.embed.weight
    assert tied.num_parameters() == sum(p.numel() for p in tied.parameters())
    attn = D * (D + 2 * 16) + D * D                    # 4 heads of 8, 2 kv heads
    mlp = 3 * D * 64
    assert tied.num_parameters() == V * D + 2 * attn + 2 * mlp + 5 * D
    assert tied.num_parameters(active=True) == tied.num_parameters()

    untied = make("moe_untied_layernorm")
    expert = 3 * D * D
    moe_total, moe_active = D * 4 + 4 * expert + expert, D * 4 + 2 * expert + expert
    swa = 4 * D * D
    norms = 5 * 2 * D                                  # LayerNorm: weight and bias
    assert untied.num_parameters() == 2 * V * D + attn + swa + 2 * moe_total + norms
    assert untied.num_parameters(active=True) == 2 * V * D + attn + swa + 2 * moe_active + norms


def test_aux_loss_sums_moe_layers():
    model = make("moe_untied_layernorm")
    assert model.aux_loss().item() == 0.0               # no forward yet
    model(torch.randint(0, V, (2, 6)))
    want = model.layers[1].block.aux_loss() + model.layers[3].block.aux_loss()
    torch.testing.assert_close(model.aux_loss(), want)
    assert model.aux_loss().item() > 0
    dense = make("transformer")
    dense(torch.randint(0, V, (1, 3)))
    assert dense.aux_loss().item() == 0.0


def test_residual_scaling_shrinks_output_projections_exactly():
    layers = [ATTN, MLP, ATTN, MLP]
    torch.manual_seed(1)
    scaled = build_model(spec_of(layers, init=InitConfig(std=0.05, residual_scaling=True)))
    torch.manual_seed(1)
    plain = build_model(spec_of(layers, init=InitConfig(std=0.05, residual_scaling=False)))
    factor = 1 / math.sqrt(2 * 4)
    torch.testing.assert_close(scaled.layers[0].block.wo.weight, factor * plain.layers[0].block.wo.weight)
    torch.testing.assert_close(scaled.layers[1].block.ffn.w_out.weight, factor * plain.layers[1].block.ffn.w_out.weight)
    torch.testing.assert_close(scaled.layers[0].block.wqkv.weight, plain.layers[0].block.wqkv.weight)
    assert abs(plain.embed.weight.std().item() - 0.05) < 0.005


def test_build_on_meta_device_and_dtype():
    spec = spec_of([ATTN, MOE, SHARED, MLP], meta_tokens=2)
    meta = build_model(spec, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    cpu = build_model(spec, dtype=torch.bfloat16)
    assert isinstance(cpu, HybridModel)
    assert {p.dtype for p in cpu.parameters()} == {torch.bfloat16}
    assert meta.num_parameters() == cpu.num_parameters()
    assert meta.num_parameters(active=True) == cpu.num_parameters(active=True)


def test_bfloat16_forward_and_decode_run():
    model = make("meta_tokens", dtype=torch.bfloat16)
    ids = torch.randint(0, V, (1, 6))
    with torch.no_grad():
        full, steps = model(ids).float(), decode(model, ids).float()
    assert full.dtype == torch.float32 and torch.isfinite(full).all()
    assert ((steps - full).abs().max() / full.abs().max()) < 2e-2    # a few bf16 ulps (2^-8)
