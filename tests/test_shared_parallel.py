"""Shared attention (Zamba2) and parallel hybrid heads (Hymba): real weight sharing, per-use
adapters and caches, decode vs forward, branch combination, validation."""
import copy
from dataclasses import dataclass

import pytest
import torch

from hybridlab.blocks import Block, BlockConfig, ForwardContext, LayerContext, block_types, get_block
from hybridlab.blocks.base import dtype_bytes
from hybridlab.blocks.registry import register_block
from hybridlab.composer.builder import build_model
from hybridlab.composer.spec import LayerSpec, ModelConfig, ModelSpec
from hybridlab.errors import SpecError



D = 32


def spec_of(layers, d_model=D, vocab=64, **model):
    """[(name, type, fields)] -> ModelSpec, as the loader would produce it."""
    return ModelSpec("test", ModelConfig(d_model=d_model, vocab_size=vocab, **model), tuple(
        LayerSpec(i, name, typ, get_block(typ).Config(**fields)) for i, (name, typ, fields) in enumerate(layers)))


def decode(model, ids):
    cache = model.init_cache(ids.shape[0], ids.shape[1])
    return torch.stack([model.step(ids[:, t], cache)[0] for t in range(ids.shape[1])], 1)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# -- a tiny recurrent mixer, so the parallel block is tested independently of the Mamba blocks --

@dataclass
class _DecayConfig(BlockConfig):
    """decay: 0.5  per-step decay of the running state h_t = decay * h_{t-1} + W x_t."""
    decay: float = 0.5

    def validate(self, d_model):
        return [] if 0 < self.decay < 1 else [("decay", "must be in (0, 1)")]


@register_block("_test_decay")
class _Decay(Block):
    Config = _DecayConfig
    kind = "mixer"

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.proj = torch.nn.Linear(ctx.d_model, ctx.d_model, bias=False)

    def forward(self, x, ctx):
        u, h, out = self.proj(x), torch.zeros_like(x[:, 0]), []
        for t in range(x.shape[1]):
            h = self.cfg.decay * h + u[:, t]
            out.append(h)
        return torch.stack(out, 1)

    def init_state(self, batch_size, max_len, device=None, dtype=None):
        return {"h": torch.zeros(batch_size, self.layer.d_model, device=device, dtype=dtype)}

    def step(self, x_t, state, ctx):
        state["h"] = self.cfg.decay * state["h"] + self.proj(x_t)
        return state["h"], state

    def state_bytes(self, dtype=torch.bfloat16):
        return self.layer.d_model * dtype_bytes(dtype)


# -- shared attention ----------------------------------------------------------------------

SHARED = dict(n_heads=4, n_kv_heads=2, adapter_rank=4, concat_embeddings=True, mlp_hidden_mult=2.0)


def shared_model(meta_tokens=0, **shared_fields):
    fields = {**SHARED, **shared_fields}
    layers = [("S", "shared_attention", fields), ("-", "mlp", {}), ("S", "shared_attention", fields),
              ("-", "mlp", {}), ("S", "shared_attention", fields)]
    return build_model(spec_of(layers, meta_tokens=meta_tokens), dtype=torch.float64)


def test_one_core_instance_counted_once():
    model = shared_model()
    uses = [model.layers[i].block for i in (0, 2, 4)]
    assert uses[0].core is uses[1].core is uses[2].core
    assert len({id(u.adapter) for u in uses}) == 3 and len({id(u.proj) for u in uses}) == 3
    core = sum(p.numel() for p in uses[0].core.parameters())
    per_use = sum(p.numel() for p in uses[0].adapter.parameters()) + uses[0].proj.weight.numel()
    mlps = 2 * sum(p.numel() for p in model.layers[1].block.parameters())
    norms = 6 * D                                  # 5 layer norms + final norm (RMSNorm weights)
    assert model.num_parameters() == 64 * D + norms + mlps + core + 3 * per_use
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    # per-layer counts: the core at its first use only
    assert [u.num_parameters() for u in uses] == [core + per_use, per_use, per_use]


def test_core_works_at_twice_the_width_with_embeddings():
    block = shared_model().layers[0].block
    attn = block.core.attn
    assert block.core.norm_attn.weight.shape == (2 * D,)
    assert attn.head_dim == 2 * D // 4 and attn.wqkv.in_features == 2 * D
    assert block.proj.weight.shape == (D, 2 * D)
    assert block.kv_bytes(10, torch.float32) == 2 * 10 * 2 * (2 * D // 4) * 4


def test_shared_gradient_is_the_sum_over_uses():
    model = shared_model()
    ids = torch.randint(0, 64, (2, 6))
    model(ids).square().mean().backward()
    tied_core = model.layers[0].block.core
    tied = {n: p.grad.clone() for n, p in tied_core.named_parameters()}

    # same weights, but every use gets its own copy of the core: the tied gradient must be the sum
    untied = copy.deepcopy(model)
    untied.zero_grad()
    for i in (0, 2, 4):
        untied.layers[i].block.core = copy.deepcopy(untied.layers[i].block.core)
    assert untied.layers[0].block.core is not untied.layers[2].block.core
    torch.testing.assert_close(untied(ids), model(ids), rtol=0, atol=0)
    untied(ids).square().mean().backward()
    for name, grad in tied.items():
        per_use = [dict(untied.layers[i].block.core.named_parameters())[name].grad for i in (0, 2, 4)]
        assert all(g.abs().sum() > 0 for g in per_use), name
        torch.testing.assert_close(grad, sum(per_use), rtol=1e-12, atol=1e-15)


def test_shared_gradients_reach_every_parameter():
    model = shared_model()
    model(torch.randint(0, 64, (2, 6))).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("fields", [
    dict(),
    dict(adapter_rank=0, concat_embeddings=False),
    dict(window=3),
])
def test_shared_decode_equals_forward(fields):
    model = shared_model(meta_tokens=2, **fields)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert rel_err(decode(model, ids), model(ids)) <= 1e-6


def test_each_use_keeps_its_own_kv_cache():
    model = shared_model()
    cache = model.init_cache(1, 4)
    assert cache.states[0]["k"] is not cache.states[2]["k"]
    with torch.no_grad():
        model.step(torch.tensor([3]), cache)
    assert not torch.equal(cache.states[0]["k"][:, :, 0], cache.states[2]["k"][:, :, 0])


def test_uses_must_agree_on_the_core():
    layers = [("S", "shared_attention", dict(n_heads=4)), ("S", "shared_attention", dict(n_heads=2))]
    with pytest.raises(SpecError, match="differ from its first use"):
        build_model(spec_of(layers))
    ok = [("S", "shared_attention", dict(n_heads=4, adapter_rank=2)),
          ("S", "shared_attention", dict(n_heads=4, adapter_rank=8))]
    model = build_model(spec_of(ok))
    assert model.layers[1].block.adapter.down[0].out_features == 8


def test_shared_validate():
    cfg = get_block("shared_attention").Config
    assert cfg(n_heads=6).validate(D) == [("n_heads", "n_heads=6 must divide d_model=32 (or set head_dim)")]
    assert cfg(n_heads=6, concat_embeddings=True).validate(48) == []         # 96 / 6
    assert [f for f, _ in cfg(adapter_rank=-1, mlp_activation="x").validate(D)] == \
        ["mlp_activation", "adapter_rank"]


# -- parallel (Hymba) ----------------------------------------------------------------------

def parallel_block(ssm=None, **attention):
    cls = get_block("parallel")
    cfg = cls.Config(attention={"n_heads": 4, **attention}, ssm=ssm or {"type": "_test_decay", "decay": 0.7})
    assert cfg.validate(D) == []
    return cls(cfg, LayerContext(index=0, name="P", d_model=D, n_layers=1)).double()


def test_parallel_combines_normalised_scaled_branches():
    block = parallel_block(window=3)
    with torch.no_grad():
        block.beta_attn.uniform_(0.5, 1.5)
        block.beta_ssm.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    a, s = block.attn(x, ForwardContext()), block.ssm(x, ForwardContext())

    def rms(v):
        return v / v.square().mean(-1, keepdim=True).add(1e-5).sqrt()

    want = (block.beta_attn * rms(a) + block.beta_ssm * rms(s)) / 2
    torch.testing.assert_close(block(x, ForwardContext()), want, rtol=1e-12, atol=1e-12)
    block.cfg.combine = "sum"
    torch.testing.assert_close(block(x, ForwardContext()), 2 * want, rtol=1e-12, atol=1e-12)


def test_parallel_accounting_sums_branches():
    block = parallel_block(n_kv_heads=2, window=8)
    assert block.state_bytes(torch.float32) == D * 4
    assert block.kv_bytes(100, torch.bfloat16) == 2 * 8 * 2 * (D // 4) * 2
    glue = 4 * D
    assert block.num_parameters() == block.attn.num_parameters() + D * D + glue
    assert block.num_parameters() == sum(p.numel() for p in block.parameters())
    assert block.flops_per_token(100) == block.attn.flops_per_token(100) + 2 * D * D + 2 * glue


def _ssm_choices():
    # the toy mixer always; each real Mamba block as soon as it is registered
    return [{"type": "_test_decay"}] + [{"type": t} for t in ("mamba1", "mamba2", "mamba3") if t in block_types()]


@pytest.mark.parametrize("ssm", _ssm_choices(), ids=lambda s: s["type"])
def test_parallel_model_decode_equals_forward_and_causal(ssm):
    fields = {"attention": {"n_heads": 4, "window": 3}, "ssm": ssm}
    if ssm["type"] in ("mamba2", "mamba3"):
        fields["ssm"] = {**ssm, "headdim": 16, "d_state": 16}
    layers = [("P", "parallel", fields), ("-", "mlp", {}), ("P", "parallel", fields)]
    model = build_model(spec_of(layers, meta_tokens=3), dtype=torch.float64)
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        full = model(ids)
        assert rel_err(decode(model, ids), full) <= 1e-6
        ids2 = ids.clone()
        ids2[:, 5] = (ids2[:, 5] + 1) % 64
        full2 = model(ids2)
    torch.testing.assert_close(full2[:, :5], full[:, :5], rtol=1e-12, atol=1e-14)
    assert not torch.allclose(full2[:, 5], full[:, 5])


def test_parallel_gradients_reach_every_parameter():
    block = parallel_block()
    block(torch.randn(2, 5, D, dtype=torch.float64), ForwardContext()).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("fields, want", [
    (dict(ssm={"type": "nope"}), ["ssm.type"]),
    (dict(ssm={"type": "mlp"}), ["ssm.type"]),
    (dict(ssm={"type": "attention"}), ["ssm.type"]),
    (dict(ssm={"type": "_test_decay", "d_state": 4}), ["ssm.d_state"]),
    (dict(ssm={"type": "_test_decay", "decay": 2.0}), ["ssm.decay"]),
    (dict(attention={"n_heads": 5}, ssm={"type": "_test_decay"}), ["attention.n_heads"]),
    (dict(attention={"heads": 4}, ssm={"type": "_test_decay"}), ["attention.heads"]),
    (dict(combine="max", ssm={"type": "_test_decay"}), ["combine"]),
])
def test_parallel_validate(fields, want):
    assert [f for f, _ in get_block("parallel").Config(**fields).validate(D)] == want
