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


def to_spec(c) -> tuple[dict, list[str]]:
    """A ``BambaConfig`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader, attention_block, mamba2_block

    r = Reader(c, "Bamba")
    r.expect("hidden_act", "silu")
    r.expect("attention_bias", False, "hybridlab's attention has no output-projection bias")
    r.expect("z_loss_coefficient", 0.0, "a training setting hybridlab's LM loss has no term for")
    blocks = {
        "M": mamba2_block(c, c.mamba_n_heads, c.mamba_d_head, c.mamba_d_state, c.mamba_d_conv,
                          c.mamba_n_groups, c.mamba_chunk_size, c.mamba_conv_bias,
                          c.mamba_proj_bias, c.time_step_limit, c.rms_norm_eps),
        "*": attention_block(c, c.num_attention_heads, c.num_key_value_heads,
                             getattr(c, "head_dim", None), r.rope()),
        "-": {"type": "mlp", "hidden_mult": r.mult(c.intermediate_size), "bias": bool(c.mlp_bias)},
    }
    attn = set(c.attn_layer_indices or [])
    pattern = " ".join(("*" if i in attn else "M") + "-" for i in range(c.num_hidden_layers))
    data = {"name": "bamba", "model": r.model(), "pattern": pattern,
            "blocks": {k: v for k, v in blocks.items() if k in pattern}}
    return data, r.notes
