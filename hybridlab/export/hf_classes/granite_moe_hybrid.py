"""Mamba-2 / attention mixers, each followed by the same kind of FFN -- every one a SwiGLU MLP,
or every one an MoE (softmax top-k, renormalised) with its shared expert -- as transformers'
``GraniteMoeHybridForCausalLM`` (RoPE or NoPE, Granite's multipliers all 1)."""
from __future__ import annotations

import math

from hybridlab.export.hf_classes.common import (Check, NativeExport, attention_weights,
                                                check_model, contiguous, experts_gate_up,
                                                head_weights, mamba2_fields, mlp_hidden, pairs,
                                                prefixed, rope_parameters, uniform)
from hybridlab.export.hf_classes.mamba2 import check_mamba2

MODEL_TYPE = "granitemoehybrid"
ARCHITECTURE = "GraniteMoeHybridForCausalLM"


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    m = spec.model
    check = Check("GraniteMoeHybrid")
    check_model(check, spec)
    layers = pairs(check, spec, {"mamba2", "attention"}, {"mlp", "moe"}) or []
    mambas = [mx for mx, _ in layers if mx.type == "mamba2"]
    attns = [mx for mx, _ in layers if mx.type == "attention"]
    mc, ac = uniform(check, mambas, "mamba2"), uniform(check, attns, "attention")
    ffns = [f for _, f in layers]
    check.need(len({f.type for f in ffns}) <= 1, "MLP and MoE layers are mixed: every "
               "GraniteMoeHybrid layer has the same feed-forward (an MoE, or the shared MLP alone)")
    fc = uniform(check, ffns, ffns[0].type if ffns else "ffn")
    check.need(mambas, "no Mamba-2 layer: GraniteMoeHybrid is a Mamba-2 hybrid")
    if mc is not None:
        check_mamba2(check, mc, mambas[0].name, m.norm_eps)
    rope = None
    head_dim = m.d_model // ac.n_heads if ac is not None else None
    if ac is not None:
        name = attns[0].name
        head_dim = ac.dim_per_head(m.d_model)
        rope = rope_parameters(check, ac, name, head_dim, partial=False, nope=True)
        check.need(ac.window is None, f"blocks.{name}.window: GraniteMoeHybrid has no sliding "
                                      "window")
    moe = fc is not None and ffns[0].type == "moe"
    if fc is not None:
        name = ffns[0].name
        check.need(fc.activation == "swiglu", f"blocks.{name}.activation = {fc.activation}: "
                                              "GraniteMoeHybrid's MLPs and experts are SwiGLU")
        if moe:
            check.need(fc.score == "softmax", f"blocks.{name}.score = {fc.score}: "
                                              "GraniteMoeHybrid routes by softmax")
            check.need(fc.normalize_top_k, f"blocks.{name}.normalize_top_k: false: "
                       "GraniteMoeHybrid renormalises the top-k weights (softmax over them)")
        else:
            check.need(not fc.bias, f"blocks.{name}.bias: GraniteMoeHybrid's MLP has no biases")
    check.done()

    block = model.layers[mambas[0].index].block
    notes = []
    config = dict(
        vocab_size=m.vocab_size, tie_word_embeddings=bool(m.tie_embeddings),
        hidden_size=m.d_model, num_hidden_layers=len(layers), hidden_act="silu",
        initializer_range=m.init.std, rms_norm_eps=m.norm_eps,
        layer_types=["full_attention" if mx.type == "attention" else "linear_attention"
                     for mx, _ in layers],
        embedding_multiplier=1.0, logits_scaling=1.0, residual_multiplier=1.0,
        position_embedding_type="rope" if rope else None, **mamba2_fields(mc, block))
    if ac is not None:
        config.update(num_attention_heads=ac.n_heads, num_key_value_heads=ac.kv_heads,
                      attention_bias=ac.qkv_bias, head_dim=head_dim,
                      attention_multiplier=1.0 / math.sqrt(head_dim))
        if rope:
            config["rope_parameters"] = rope
    if moe:
        first = model.layers[ffns[0].index].block
        shared = first.shared.w_out.in_features if first.shared is not None else 1
        if first.shared is None:
            notes.append("GraniteMoeHybrid's MoE always has a shared MLP: written 1 wide with "
                         "zero weights, which add exactly 0")
        config.update(num_local_experts=fc.n_experts, num_experts_per_tok=fc.top_k,
                      intermediate_size=first.hidden, shared_intermediate_size=shared,
                      router_aux_loss_coef=fc.lb_loss_coef)
    else:
        hidden = mlp_hidden(fc, m.d_model)
        config.update(num_local_experts=0, num_experts_per_tok=0, intermediate_size=hidden,
                      shared_intermediate_size=hidden)
    state = model.state_dict() if state is None else state
    weights = head_weights(state, "model.embed_tokens.weight", "lm_head.weight",
                           m.tie_embeddings)
    for i, (mixer, ffn) in enumerate(layers):
        out = f"model.layers.{i}."
        weights[out + "input_layernorm.weight"] = state[f"layers.{mixer.index}.norm.weight"]
        weights[out + "post_attention_layernorm.weight"] = state[f"layers.{ffn.index}.norm.weight"]
        mixer_state = prefixed(state, f"layers.{mixer.index}.block.")
        if mixer.type == "mamba2":
            weights.update({out + "mamba." + k: v for k, v in mixer_state.items()})
        else:
            weights.update({out + "self_attn." + k: v for k, v in attention_weights(
                mixer_state, model.layers[mixer.index].block, out_bias=ac.qkv_bias).items()})
        ffn_state = prefixed(state, f"layers.{ffn.index}.block.")
        if moe:
            gate_up, down = experts_gate_up(ffn_state)
            weights[out + "block_sparse_moe.router.weight"] = ffn_state["router.weight"]
            weights[out + "block_sparse_moe.experts.gate_up_proj"] = gate_up
            weights[out + "block_sparse_moe.experts.down_proj"] = down
            shared = prefixed(ffn_state, "shared.")
            if not shared:
                w = ffn_state["w_in"]
                shared = {"w_in.weight": w.new_zeros(2, m.d_model),
                          "w_out.weight": w.new_zeros(m.d_model, 1)}
        else:
            shared = prefixed(ffn_state, "ffn.")
        weights[out + "shared_mlp.input_linear.weight"] = shared["w_in.weight"]
        weights[out + "shared_mlp.output_linear.weight"] = shared["w_out.weight"]
    weights["model.norm.weight"] = state["norm_f.weight"]
    return NativeExport(MODEL_TYPE, ARCHITECTURE, config, contiguous(weights),
                        tied=bool(m.tie_embeddings), notes=notes)


def to_spec(c) -> tuple[dict, list[str]]:
    """A ``GraniteMoeHybridConfig`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader, attention_block, mamba2_block

    r = Reader(c, "GraniteMoeHybrid")
    r.expect("hidden_act", "silu")
    r.expect("attention_bias", False, "hybridlab's attention has no output-projection bias")
    for name in ("embedding_multiplier", "logits_scaling", "residual_multiplier"):
        r.expect(name, 1.0, "hybridlab has no muP multipliers (the spec leaves it out)")
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    r.expect("attention_multiplier", 1.0 / math.sqrt(head_dim),
             "hybridlab scales attention scores by 1/sqrt(head_dim)")
    blocks = {
        "M": mamba2_block(c, c.mamba_n_heads, c.mamba_d_head, c.mamba_d_state, c.mamba_d_conv,
                          c.mamba_n_groups, c.mamba_chunk_size, c.mamba_conv_bias,
                          c.mamba_proj_bias, c.time_step_limit, c.rms_norm_eps),
        "*": attention_block(c, c.num_attention_heads, c.num_key_value_heads,
                             getattr(c, "head_dim", None),
                             r.rope(nope=c.position_embedding_type != "rope")),
    }
    if c.num_local_experts:
        ffn = {"type": "moe", "n_experts": int(c.num_local_experts),
               "top_k": int(c.num_experts_per_tok), "hidden_mult": r.mult(c.intermediate_size),
               "score": "softmax", "normalize_top_k": True,
               "lb_loss_coef": float(c.router_aux_loss_coef)}
        if c.shared_intermediate_size:
            ffn.update(n_shared_experts=1, shared_hidden_mult=r.mult(c.shared_intermediate_size))
        blocks["E"], symbol = ffn, "E"
    else:
        blocks["-"], symbol = {"type": "mlp", "hidden_mult": r.mult(c.shared_intermediate_size)}, "-"
    pattern = " ".join(("*" if t == "full_attention" else "M") + symbol for t in c.layer_types)
    data = {"name": "granite-moe-hybrid", "model": r.model(), "pattern": pattern,
            "blocks": {k: v for k, v in blocks.items() if k in pattern}}
    return data, r.notes
