"""MLP and MoE blocks: MoE against a naive per-token loop, auxiliary losses by hand, active
parameter counts by hand, decode vs forward, gradients, validation."""
import pytest
import torch
import torch.nn.functional as F

from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.blocks.mlp import hidden_size



D = 16


def make(type_name, d_model=D, **fields):
    cls = get_block(type_name)
    cfg = cls.Config(**fields)
    assert cfg.validate(d_model) == []
    return cls(cfg, LayerContext(index=0, name="E", d_model=d_model, n_layers=1)).double()


# -- MLP -----------------------------------------------------------------------------------

def test_hidden_size_rounding():
    assert hidden_size(64, 8 / 3) == 171
    assert hidden_size(64, 8 / 3, multiple_of=32) == 192
    assert hidden_size(64, 4.0, multiple_of=64) == 256


@pytest.mark.parametrize("activation", ["swiglu", "gelu", "relu2"])
def test_mlp_matches_equations(activation):
    block = make("mlp", activation=activation, hidden_mult=2.0)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    w_in, w_out = block.ffn.w_in.weight, block.ffn.w_out.weight
    h = x @ w_in.T
    if activation == "swiglu":
        assert w_in.shape == (2 * 32, D)
        h = F.silu(h[..., :32]) * h[..., 32:]
    elif activation == "gelu":
        h = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))
    else:
        h = torch.clamp(h, min=0) ** 2
    torch.testing.assert_close(block(x, ForwardContext()), h @ w_out.T, rtol=1e-12, atol=1e-12)
    y, state = block.step(x[:, 3], {}, ForwardContext())
    torch.testing.assert_close(y, (h @ w_out.T)[:, 3], rtol=1e-12, atol=1e-12)


def test_mlp_validate():
    cfg = get_block("mlp").Config(activation="tanh", hidden_mult=0, multiple_of=0)
    assert sorted(f for f, _ in cfg.validate(D)) == ["activation", "hidden_mult", "multiple_of"]


# -- MoE -----------------------------------------------------------------------------------

def naive_moe(block, x):
    """Per-token loop from the equations: route, pick top-k, weighted sum of SwiGLU experts."""
    cfg = block.cfg
    flat = x.reshape(-1, x.shape[-1])
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        logits = block.router.weight @ flat[t]
        scores = torch.softmax(logits, 0) if cfg.score == "softmax" else torch.sigmoid(logits)
        chosen = sorted(range(cfg.n_experts), key=lambda e: -scores[e].item())[: cfg.top_k]
        weights = torch.stack([scores[e] for e in chosen])
        if cfg.normalize_top_k:
            weights = weights / weights.sum()
        for w, e in zip(weights, chosen):
            h = flat[t] @ block.w_in[e]
            gate, up = h[: block.hidden], h[block.hidden:]
            out[t] += w * ((F.silu(gate) * up) @ block.w_out[e])
        if block.shared is not None:
            out[t] += block.shared(flat[t])
    return out.reshape(x.shape)


MOE_CASES = {
    "softmax_top2": dict(n_experts=4, top_k=2, hidden_mult=2.0),
    "softmax_top1_unnormalized": dict(n_experts=4, top_k=1, normalize_top_k=False),
    "sigmoid_top3_shared": dict(n_experts=6, top_k=3, score="sigmoid", n_shared_experts=2,
                                shared_hidden_mult=1.0),
    "all_experts": dict(n_experts=3, top_k=3),
}


@pytest.mark.parametrize("case", sorted(MOE_CASES))
def test_moe_matches_per_token_loop(case):
    block = make("moe", **MOE_CASES[case])
    torch.nn.init.normal_(block.router.weight)        # spread the routing over experts
    x = torch.randn(3, 7, D, dtype=torch.float64)
    torch.testing.assert_close(block(x, ForwardContext()), naive_moe(block, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(MOE_CASES))
def test_moe_dense_dispatch_matches_the_loop_and_the_sparse_gradients(case):
    """The dispatch used while a CUDA graph is captured (every expert on every token, weighted
    by a zero-filled routing matrix): same output as the equations, same gradients as the
    sparse dispatch, for the input, the router and every expert weight."""
    block = make("moe", **MOE_CASES[case])
    torch.nn.init.normal_(block.router.weight)
    x = torch.randn(3, 7, D, dtype=torch.float64, requires_grad=True)
    flat = x.reshape(-1, D)
    weights, experts, _ = block.route(flat)
    dense = block.experts_forward_dense(flat, weights, experts)
    sparse = block.experts_forward(flat, weights, experts)
    expect = naive_moe(block, x).reshape(-1, D)
    if block.shared is not None:
        expect = expect - block.shared(flat)
    torch.testing.assert_close(dense, expect, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(dense)
    params = [x, block.router.weight, block.w_in, block.w_out]
    grads_dense = torch.autograd.grad((dense * g).sum(), params, retain_graph=True)
    grads_sparse = torch.autograd.grad((sparse * g).sum(), params)
    for a, b in zip(grads_dense, grads_sparse):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(MOE_CASES))
def test_moe_step_equals_forward(case):
    block = make("moe", **MOE_CASES[case])
    torch.nn.init.normal_(block.router.weight)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    full = block(x, ForwardContext())
    steps = torch.stack([block.step(x[:, t], {}, ForwardContext(position=t))[0] for t in range(6)], 1)
    assert ((steps - full).abs().max() / full.abs().max()) <= 1e-6


def test_moe_aux_loss_by_hand():
    block = make("moe", n_experts=4, top_k=2, lb_loss_coef=0.5, z_loss_coef=0.25)
    torch.nn.init.normal_(block.router.weight)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    block(x, ForwardContext())
    flat = x.reshape(-1, D)
    logits = flat @ block.router.weight.T
    probs = logits.softmax(-1)
    chosen = probs.topk(2, dim=-1).indices
    f = torch.stack([(chosen == e).sum() for e in range(4)]).double() / chosen.numel()
    load_balance = 4 * sum(f[e] * probs[:, e].mean() for e in range(4))
    z = (logits.exp().sum(-1).log() ** 2).mean()
    torch.testing.assert_close(block.aux_loss(), 0.5 * load_balance + 0.25 * z, rtol=1e-12, atol=1e-12)


def test_moe_balanced_router_gives_unit_load_balance_loss():
    block = make("moe", n_experts=4, top_k=4, lb_loss_coef=1.0, z_loss_coef=0.0)
    torch.nn.init.zeros_(block.router.weight)        # uniform probabilities: loss = E * sum(1/E * 1/E)
    block(torch.randn(1, 3, D, dtype=torch.float64), ForwardContext())
    torch.testing.assert_close(block.aux_loss(), torch.tensor(1.0, dtype=torch.float64))


def test_moe_parameter_counts_by_hand():
    block = make("moe", d_model=8, n_experts=4, top_k=2, hidden_mult=2.0, n_shared_experts=1)
    router = 8 * 4
    expert = 8 * (2 * 16) + 16 * 8           # SwiGLU: gate+up (8 -> 2*16), down (16 -> 8)
    shared = expert
    assert block.num_parameters() == router + 4 * expert + shared == 1952
    assert block.num_parameters(active=True) == router + 2 * expert + shared == 1184
    assert block.flops_per_token(1000) == 2 * 1184
    assert sum(p.numel() for p in block.parameters()) == 1952


def test_moe_gradients_reach_every_parameter():
    block = make("moe", n_experts=4, top_k=2, n_shared_experts=1)
    torch.nn.init.normal_(block.router.weight)
    x = torch.randn(4, 8, D, dtype=torch.float64)
    (block(x, ForwardContext()).square().sum() + block.aux_loss()).backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # every expert received tokens here, so each expert's slice has a gradient
    assert (block.w_in.grad.abs().sum(dim=(1, 2)) > 0).all()


def test_moe_causal_and_per_token():
    block = make("moe", n_experts=4, top_k=2)
    x = torch.randn(1, 6, D, dtype=torch.float64)
    y = block(x, ForwardContext())
    x2 = x.clone()
    x2[:, 3] += 1.0
    y2 = block(x2, ForwardContext())
    # other tokens unchanged (up to float64 rounding: the expert groups change size)
    torch.testing.assert_close(y2[:, :3], y[:, :3], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(y2[:, 4:], y[:, 4:], rtol=1e-12, atol=1e-15)
    assert not torch.allclose(y2[:, 3], y[:, 3])


@pytest.mark.parametrize("fields, bad", [
    (dict(n_experts=2, top_k=3), ["top_k"]),
    (dict(n_experts=0, top_k=1), ["n_experts", "top_k"]),
    (dict(top_k=0), ["top_k"]),
    (dict(score="relu"), ["score"]),
    (dict(n_shared_experts=-1), ["n_shared_experts"]),
    (dict(lb_loss_coef=-1.0), ["lb_loss_coef"]),
])
def test_moe_validate(fields, bad):
    assert sorted(f for f, _ in get_block("moe").Config(**fields).validate(D)) == bad
