"""Mamba-2 / attention mixers, each followed by a SwiGLU MLP, as transformers'
``BambaForCausalLM`` (attention at ``attn_layer_indices``, RoPE)."""
from __future__ import annotations

from hybridlab.export.hf_classes.common import (Check, NativeExport, attention_weights,
                                                check_model, contiguous, head_weights,
                                                mamba2_fields, mlp_hidden, mlp_weights, pairs,
                                                prefixed, rope_parameters, uniform)
from hybridlab.export.hf_classes.mamba2 import check_mamba2

MODEL_TYPE = "bamba"
ARCHITECTURE = "BambaForCausalLM"


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    m = spec.model
    check = Check("Bamba")
    check_model(check, spec)
    layers = pairs(check, spec, {"mamba2", "attention"}, {"mlp"}) or []
    mambas = [mx for mx, _ in layers if mx.type == "mamba2"]
    attns = [mx for mx, _ in layers if mx.type == "attention"]
    mc, ac = uniform(check, mambas, "mamba2"), uniform(check, attns, "attention")
    fc = uniform(check, [f for _, f in layers], "mlp")
    check.need(mambas, "no Mamba-2 layer: Bamba is a Mamba-2 hybrid")
    if mc is not None:
        check_mamba2(check, mc, mambas[0].name, m.norm_eps)
    rope = None
    if ac is not None:
        name = attns[0].name
        head_dim = ac.dim_per_head(m.d_model)
        rope = rope_parameters(check, ac, name, head_dim)
        check.need(ac.window is None, f"blocks.{name}.window: Bamba has no sliding window")
    if fc is not None:
        check.need(fc.activation == "swiglu", f"blocks.{layers[0][1].name}.activation = "
                                              f"{fc.activation}: Bamba's MLP is SwiGLU")
    check.done()
    block = model.layers[mambas[0].index].block
    config = dict(
        vocab_size=m.vocab_size, tie_word_embeddings=bool(m.tie_embeddings),
        hidden_size=m.d_model, intermediate_size=mlp_hidden(fc, m.d_model),
        num_hidden_layers=len(layers), hidden_act="silu", initializer_range=m.init.std,
        rms_norm_eps=m.norm_eps, mlp_bias=fc.bias,
        attn_layer_indices=[i for i, (mx, _) in enumerate(layers) if mx.type == "attention"],
        **mamba2_fields(mc, block))
    if ac is not None:
        config.update(num_attention_heads=ac.n_heads, num_key_value_heads=ac.kv_heads,
                      attention_bias=ac.qkv_bias, rope_parameters=rope,
                      head_dim=ac.dim_per_head(m.d_model))
    state = model.state_dict() if state is None else state
    weights = head_weights(state, "model.embed_tokens.weight", "lm_head.weight",
                           m.tie_embeddings)
    for i, (mixer, ffn) in enumerate(layers):
        out = f"model.layers.{i}."
        weights[out + "input_layernorm.weight"] = state[f"layers.{mixer.index}.norm.weight"]
        weights[out + "pre_ff_layernorm.weight"] = state[f"layers.{ffn.index}.norm.weight"]
        mixer_state = prefixed(state, f"layers.{mixer.index}.block.")
        if mixer.type == "mamba2":
            weights.update({out + "mamba." + k: v for k, v in mixer_state.items()})
        else:
            weights.update({out + "self_attn." + k: v for k, v in attention_weights(
                mixer_state, model.layers[mixer.index].block, out_bias=ac.qkv_bias).items()})
        ffn_state = prefixed(state, f"layers.{ffn.index}.block.ffn.")
        weights.update({out + "feed_forward." + k: v
                        for k, v in mlp_weights(ffn_state, gated=True, bias=fc.bias).items()})
    weights["model.final_layernorm.weight"] = state["norm_f.weight"]
    return NativeExport(MODEL_TYPE, ARCHITECTURE, config, contiguous(weights),
                        tied=bool(m.tie_embeddings))
