"""A stack of Mamba-1 mixers (no FFN layers) as transformers' ``MambaForCausalLM``."""
from __future__ import annotations

from hybridlab.export.hf_classes.common import (Check, NativeExport, check_model, contiguous,
                                                head_weights, int_expand, prefixed, types_only,
                                                uniform)

MODEL_TYPE = "mamba"
ARCHITECTURE = "MambaForCausalLM"


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    check = Check("Mamba")
    check_model(check, spec)
    types_only(check, spec, {"mamba1"})
    c = uniform(check, [la for la in spec.layers if la.type == "mamba1"], "mamba1")
    if c is not None:
        check.need(not getattr(c, "dt_bc_norm", False),
                   f"blocks.{spec.layers[0].name}.dt_bc_norm: Mamba has no dt/B/C norms "
                   "(Jamba has)")
        expand = int_expand(check, spec.layers[0].name, c.expand)
    check.done()
    m = spec.model
    d_inner, dt_rank = c.inner(m.d_model)
    config = dict(
        vocab_size=m.vocab_size, hidden_size=m.d_model, state_size=c.d_state,
        num_hidden_layers=len(spec.layers), layer_norm_epsilon=m.norm_eps, expand=expand,
        conv_kernel=c.d_conv, use_bias=c.bias, use_conv_bias=c.conv_bias, hidden_act="silu",
        time_step_rank=dt_rank, time_step_scale=c.dt_scale, time_step_min=c.dt_min,
        time_step_max=c.dt_max, time_step_init_scheme=c.dt_init, time_step_floor=c.dt_init_floor,
        residual_in_fp32=False,           # hybridlab keeps the residual in the model's dtype
        initializer_range=m.init.std, tie_word_embeddings=bool(m.tie_embeddings))
    state = model.state_dict() if state is None else state
    weights = head_weights(state, "backbone.embeddings.weight", "lm_head.weight",
                           m.tie_embeddings)
    for layer in spec.layers:
        i = layer.index
        weights[f"backbone.layers.{i}.norm.weight"] = state[f"layers.{i}.norm.weight"]
        for k, v in prefixed(state, f"layers.{i}.block.").items():
            weights[f"backbone.layers.{i}.mixer.{k}"] = v
    weights["backbone.norm_f.weight"] = state["norm_f.weight"]
    return NativeExport(MODEL_TYPE, ARCHITECTURE, config, contiguous(weights),
                        tied=bool(m.tie_embeddings))


def to_spec(c) -> tuple[dict, list[str]]:
    """A ``MambaConfig`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader

    r = Reader(c, "Mamba")
    r.expect("hidden_act", "silu")
    block = {"type": "mamba1", "d_state": int(c.state_size), "d_conv": int(c.conv_kernel),
             "expand": int(c.expand), "dt_rank": int(c.time_step_rank),
             "conv_bias": bool(c.use_conv_bias), "bias": bool(c.use_bias)}
    data = {"name": "mamba", "model": r.model("layer_norm_epsilon"), "blocks": {"M": block},
            "pattern": f"(M) x {int(c.num_hidden_layers)}"}
    return data, r.notes
