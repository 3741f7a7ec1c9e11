"""Cost measurement: analytic state/KV bytes checked against allocated caches, throughput."""
from dataclasses import dataclass

import pytest
import torch

import hybridlab
from hybridlab.blocks import Block, BlockConfig, register_block
from hybridlab.search.cost import StateBytesMismatch, check_state_bytes, measure_costs, tensor_bytes



# Every mixer with decode state: Mamba-1/2/3, full and sliding-window attention, shared attention,
# Hymba-style parallel heads, and meta tokens (which occupy cache positions).
HYBRID = {
    "name": "cost-hybrid",
    "model": {"d_model": 32, "vocab_size": 64, "meta_tokens": 2},
    "blocks": {
        "A": {"type": "mamba1", "d_state": 8, "expand": 2},
        "B": {"type": "mamba2", "d_state": 16, "headdim": 16, "expand": 2, "chunk_size": 16},
        "C": {"type": "mamba3", "d_state": 16, "headdim": 16, "expand": 2, "chunk_size": 16},
        "*": {"type": "attention", "n_heads": 4, "n_kv_heads": 2},
        "W": {"type": "attention", "n_heads": 2, "window": 32},
        "S": {"type": "shared_attention", "n_heads": 2, "adapter_rank": 4},
        "P": {"type": "parallel", "attention": {"n_heads": 2, "window": 16},
              "ssm": {"type": "mamba1", "d_state": 4, "expand": 1}},
        "-": {"type": "mlp", "hidden_mult": 1.0},
    },
    "pattern": "A-B*CWSP-S",
}


def test_tensor_bytes_walks_nested_caches_once():
    t = torch.zeros(4, 8, dtype=torch.bfloat16)
    cache = {"a": [t, (t, torch.zeros(3))], "b": {"c": torch.zeros(2, dtype=torch.int64)}}
    assert tensor_bytes(cache) == 64 + 12 + 16


def test_analytic_state_bytes_equal_allocated_cache_bytes():
    spec = hybridlab.load_spec(HYBRID)
    contexts = (8, 100, 4096, 32768)
    summary = check_state_bytes(spec, contexts, torch.bfloat16)    # raises on any disagreement
    assert summary["state_bytes"] > 0
    # independent check on real (not meta) tensors at a small context, both dtypes
    for dtype in (torch.bfloat16, torch.float32):
        real = hybridlab.build_model(spec, dtype=dtype)
        allocated = tensor_bytes(real.init_cache(1, 100))
        s = check_state_bytes(spec, (100,), dtype)
        assert allocated == s["state_bytes"] + s["kv_bytes"]["100"]
    # full attention grows with the context, the windows and SSM states do not
    assert summary["kv_bytes"]["32768"] > 7 * summary["kv_bytes"]["4096"]


@register_block("_test_lying_mixer")
class LyingMixer(Block):
    """Allocates a 16-float state but reports 8 floats (the bug the check must catch)."""

    @dataclass
    class Config(BlockConfig):
        pass

    def forward(self, x, ctx):
        return x * 0

    def init_state(self, batch_size, max_len, device=None, dtype=None):
        return {"h": torch.zeros(batch_size, 16, device=device, dtype=dtype)}

    def step(self, x_t, state, ctx):
        return x_t * 0, state

    def state_bytes(self, dtype=torch.bfloat16):
        return 8 * torch.empty((), dtype=dtype).element_size()


def test_disagreeing_state_bytes_raise_and_name_the_layer():
    spec = hybridlab.load_spec({"name": "liar", "model": {"d_model": 16, "vocab_size": 8},
                                "blocks": {"L": {"type": "_test_lying_mixer"}, "*": {"type": "attention", "n_heads": 2}},
                                "pattern": "*L"})
    with pytest.raises(StateBytesMismatch, match=r"layer 1 \(_test_lying_mixer\): summary 16, allocated 32"):
        check_state_bytes(spec, (64,))


def test_measure_costs_reports_everything():
    spec = hybridlab.load_spec(HYBRID)
    model = hybridlab.build_model(spec)
    costs = measure_costs(model, spec, "cpu", contexts=(4096, 32768), decode_batch=2,
                          decode_steps=3, prefill_len=32, repeats=1)
    summary = check_state_bytes(spec, (4096, 32768))
    assert costs["params_total"] == model.num_parameters() == summary["params_total"]
    assert costs["params_active"] == summary["params_active"]
    for ctx in (4096, 32768):
        assert costs[f"state_bytes@{ctx}"] == summary["state_bytes"] + summary["kv_bytes"][str(ctx)]
    assert costs["state_bytes@32768"] > costs["state_bytes@4096"] > costs["recurrent_state_bytes"] > 0
    assert costs["decode_tokens_per_s"] > 0 and costs["prefill_latency_s"] > 0
    assert model.training                                   # train mode restored


@pytest.mark.gpu
def test_measure_costs_on_cuda():
    spec = hybridlab.load_spec(HYBRID)
    model = hybridlab.build_model(spec, device="cuda")
    costs = measure_costs(model, spec, "cuda", decode_batch=8, decode_steps=16, prefill_len=2048)
    assert costs["decode_tokens_per_s"] > 0 and 0 < costs["prefill_latency_s"] < 10
