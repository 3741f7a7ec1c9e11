"""Weight decay is each block's own decision (``Block.no_weight_decay``), and the trainer's AdamW
groups follow those hooks exactly: every registered block against a hand-written expectation, a
whole model (meta tokens, shared weights, nested blocks), and one optimizer step."""
import pytest
import torch

from hybridlab.blocks import Block, BlockConfig, LayerContext, block_types, get_block
from hybridlab.blocks.base import no_weight_decay_names
from hybridlab.composer.builder import build_model
from hybridlab.errors import UserError
from hybridlab.search.trainer import TrainConfig, make_optimizer, weight_decay_groups

# block type -> [(config, the parameter names that must not decay)], written out by hand from the
# published recipes: mamba-ssm marks A_log, D, dt_bias; the Mamba-3 reference marks dt_bias, D;
# norm weights and biases never decay; per-head B/C biases and MIMO's per-channel scales are
# biases/scales, not matrices. Projections, convs, experts, routers and LoRA adapters decay.
EXPECTED = {
    "attention": [
        (dict(n_heads=2), set()),
        (dict(n_heads=2, qkv_bias=True), {"wqkv.bias"}),
    ],
    "mamba1": [
        (dict(d_state=4), {"A_log", "D", "dt_proj.bias", "conv1d.bias"}),
        (dict(d_state=4, bias=True, conv_bias=False),
         {"A_log", "D", "dt_proj.bias", "in_proj.bias", "out_proj.bias"}),
    ],
    "mamba2": [
        (dict(d_state=8, headdim=8), {"dt_bias", "A_log", "D", "conv1d.bias", "norm.weight"}),
        (dict(d_state=8, headdim=8, bias=True, rmsnorm=False, D_has_hdim=True),
         {"dt_bias", "A_log", "D", "conv1d.bias", "in_proj.bias", "out_proj.bias"}),
    ],
    "mamba3": [
        (dict(d_state=8, headdim=8),
         {"dt_bias", "D", "B_bias", "C_bias", "B_norm_weight", "C_norm_weight"}),
        (dict(d_state=8, headdim=8, mimo_rank=2, is_outproj_norm=True),
         {"dt_bias", "D", "B_bias", "C_bias", "B_norm_weight", "C_norm_weight",
          "W_x", "W_z", "W_o", "norm_weight"}),
    ],
    "mlp": [
        (dict(), set()),
        (dict(bias=True, activation="gelu"), {"ffn.w_in.bias", "ffn.w_out.bias"}),
    ],
    "moe": [
        (dict(n_experts=2, top_k=1, n_shared_experts=1), set()),
    ],
    "parallel": [
        (dict(attention=dict(n_heads=2), ssm=dict(type="mamba1", d_state=4)),
         {"beta_attn", "beta_ssm", "norm_attn.weight", "norm_ssm.weight",
          "ssm.A_log", "ssm.D", "ssm.dt_proj.bias", "ssm.conv1d.bias"}),
        (dict(attention=dict(n_heads=2, qkv_bias=True), ssm=dict(type="mamba3", d_state=8, headdim=8)),
         {"beta_attn", "beta_ssm", "norm_attn.weight", "norm_ssm.weight", "attn.wqkv.bias",
          "ssm.dt_bias", "ssm.D", "ssm.B_bias", "ssm.C_bias", "ssm.B_norm_weight", "ssm.C_norm_weight"}),
    ],
    "shared_attention": [
        (dict(n_heads=2, adapter_rank=2, concat_embeddings=True, qkv_bias=True),
         {"core.norm_attn.weight", "core.norm_mlp.weight", "core.attn.wqkv.bias"}),
    ],
}

CASES = [(t, cfg, names) for t, cases in EXPECTED.items() for cfg, names in cases]


def build_block(block_type: str, cfg: dict, d_model: int = 16) -> Block:
    cls = get_block(block_type)
    return cls(cls.Config(**cfg), LayerContext(index=0, name="X", d_model=d_model, n_layers=1))


def test_every_built_in_block_type_has_an_expectation():
    built_in = {t for t in block_types() if get_block(t).__module__.startswith("hybridlab.blocks.")}
    assert built_in == set(EXPECTED), "add the new block type to EXPECTED with its exempt names"


@pytest.mark.parametrize("block_type,cfg,names", CASES,
                         ids=[f"{t}-{i}" for t, cases in EXPECTED.items() for i in range(len(cases))])
def test_block_hook_names_exactly_the_expected_parameters(block_type, cfg, names):
    block = build_block(block_type, cfg)
    assert block.no_weight_decay() == names
    params = dict(block.named_parameters())
    assert names <= set(params)
    # whatever is left decays: only matrices (and conv/expert tensors) remain
    assert all(params[n].ndim >= 2 for n in set(params) - names)


@pytest.mark.parametrize("block_type,cfg,names", CASES,
                         ids=[f"{t}-{i}" for t, cases in EXPECTED.items() for i in range(len(cases))])
def test_trainer_groups_follow_the_block_hook(block_type, cfg, names):
    block = build_block(block_type, cfg)
    decay, no_decay = weight_decay_groups(block, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    params = dict(block.named_parameters())
    assert {id(p) for p in no_decay["params"]} == {id(params[n]) for n in names}
    assert {id(p) for p in decay["params"]} == {id(params[n]) for n in set(params) - names}


MODEL = {
    "name": "wd-all",
    "model": {"d_model": 16, "vocab_size": 32, "meta_tokens": 2, "norm": "layernorm",
              "tie_embeddings": False},
    "blocks": {
        "A": {"type": "mamba1", "d_state": 4},
        "B": {"type": "mamba3", "d_state": 8, "headdim": 8, "chunk_size": 16},
        "S": {"type": "shared_attention", "n_heads": 2, "adapter_rank": 2},
        "P": {"type": "parallel", "attention": {"n_heads": 2, "window": 4},
              "ssm": {"type": "mamba2", "d_state": 8, "headdim": 8, "chunk_size": 16}},
        "E": {"type": "moe", "n_experts": 2, "top_k": 1},
    },
    "pattern": "A S B S P E",
}


def test_model_groups_are_the_blocks_hooks_plus_model_norms():
    model = build_model(MODEL)
    expected = {"norm_f.weight", "norm_f.bias"}            # layernorm: weight and bias
    for i, layer in enumerate(model.layers):
        expected |= {f"layers.{i}.norm.weight", f"layers.{i}.norm.bias"}
        expected |= {f"layers.{i}.block.{n}" for n in layer.block.no_weight_decay()}
    assert no_weight_decay_names(model) == expected
    # independent spot checks of what the fixed defect was: Mamba-1's A_log (a matrix) and
    # Mamba-3's per-head biases (3-D) are exempt; the embedding, head, meta tokens and the
    # shared core's LoRA adapters decay (Megatron-LM / nanoGPT: only 1-D tensors are exempt)
    named = dict(model.named_parameters(remove_duplicate=False))
    decay, no_decay = make_optimizer(model, TrainConfig(steps=1), torch.device("cpu")).param_groups
    exempt = {id(p) for p in no_decay["params"]}
    for name in ("layers.0.block.A_log", "layers.0.block.D", "layers.2.block.B_bias",
                 "layers.2.block.C_bias", "layers.2.block.dt_bias", "layers.4.block.ssm.A_log",
                 "layers.1.block.core.norm_attn.weight", "layers.3.block.core.norm_attn.weight"):
        assert id(named[name]) in exempt, name
    for name in ("embed.weight", "head.weight", "meta_tokens", "layers.1.block.adapter.down.0.weight",
                 "layers.1.block.core.attn.wqkv.weight", "layers.5.block.w_in"):
        assert id(named[name]) not in exempt, name
    # each parameter once, in exactly one group, every trainable one present
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(named[n]) for n in expected} == exempt


def test_one_adamw_step_shrinks_only_decayed_parameters():
    """Zero gradients: AdamW's only move is the decay, p -= lr * wd * p."""
    model = build_model({**MODEL, "pattern": "A B"})
    opt = make_optimizer(model, TrainConfig(steps=1, lr=0.1, weight_decay=0.5), torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    exempt = no_weight_decay_names(model)
    for n, p in model.named_parameters():
        if n in exempt:
            assert torch.equal(p, before[n]), n
        else:
            assert torch.allclose(p, before[n] * (1 - 0.1 * 0.5)), n
    assert "layers.0.block.A_log" in exempt and "layers.1.block.B_bias" in exempt


class _BadHookConfig(BlockConfig):
    pass


class _BadHook(Block):
    """Not registered: a plugin whose hook misspells a parameter."""
    Config = _BadHookConfig

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.A_log = torch.nn.Parameter(torch.zeros(4, 2))

    def forward(self, x, ctx):
        return x

    def step(self, x_t, state, ctx):
        return x_t, state

    def no_weight_decay(self):
        return {"A_logg"}


def test_a_hook_naming_no_parameter_is_a_clear_error():
    block = _BadHook(_BadHookConfig(), LayerContext(index=0, name="X", d_model=4, n_layers=1))
    with pytest.raises(UserError, match=r"_BadHook\.no_weight_decay\(\) names A_logg: not parameters.*A_log"):
        weight_decay_groups(block, 0.1)


def test_plugin_block_without_override_gets_the_default():
    class Plain(_BadHook):
        no_weight_decay = Block.no_weight_decay

        def __init__(self, cfg, ctx):
            super().__init__(cfg, ctx)
            self.scale = torch.nn.Parameter(torch.ones(4))
            self.inner = torch.nn.Linear(4, 4)
    block = Plain(_BadHookConfig(), LayerContext(index=0, name="X", d_model=4, n_layers=1))
    assert block.no_weight_decay() == {"scale", "inner.bias"}      # 1-D only; A_log decays
