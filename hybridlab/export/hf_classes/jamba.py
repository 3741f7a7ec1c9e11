"""Mamba-1 / attention mixers, each followed by an MLP or MoE, as transformers'
``JambaForCausalLM``: attention where ``i % attn_layer_period == attn_layer_offset`` and MoE where
``i % expert_layer_period == expert_layer_offset`` (i counts decoder layers, mixer + FFN)."""
from __future__ import annotations

from hybridlab.export.hf_classes.common import (Check, NativeExport, attention_weights,
                                                check_model, contiguous, experts_gate_up,
                                                head_weights, int_expand, mlp_hidden,
                                                mlp_weights, pairs, prefixed, uniform)

MODEL_TYPE = "jamba"
ARCHITECTURE = "JambaForCausalLM"


def period_offset(marked: list[int], n: int) -> tuple[int, int] | None:
    """(period, offset) with exactly ``marked`` among 0..n-1 at i % period == offset, or None.
    None marked: period n + 1, offset n (no index reaches it)."""
    if not marked:
        return n + 1, n
    candidates = [(marked[1] - marked[0], marked[0])] if len(marked) > 1 else \
        [(max(n, marked[0] + 1), marked[0])]
    for period, offset in candidates:
        offset %= period
        if [i for i in range(n) if i % period == offset] == marked:
            return period, offset
    return None


def check_attention(check: Check, c, name: str, d_model: int) -> None:
    """Jamba's (and NemotronH's) attention: no positional encoding, no window, no biases."""
    cls = check.class_name
    check.need(not c.rope, f"blocks.{name}.rope: {cls} attention has no positional encoding "
                           "(set rope: false)")
    check.need(c.window is None, f"blocks.{name}.window: {cls} has no sliding window")
    check.need(not c.qkv_bias, f"blocks.{name}.qkv_bias: {cls} attention has no biases")


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    m = spec.model
    check = Check("Jamba")
    check_model(check, spec)
    layers = pairs(check, spec, {"mamba1", "attention"}, {"mlp", "moe"}) or []
    n = len(layers)
    mambas = [mx for mx, _ in layers if mx.type == "mamba1"]
    attns = [mx for mx, _ in layers if mx.type == "attention"]
    mlps = [f for _, f in layers if f.type == "mlp"]
    moes = [f for _, f in layers if f.type == "moe"]
    mc, ac = uniform(check, mambas, "mamba1"), uniform(check, attns, "attention")
    fc, ec = uniform(check, mlps, "mlp"), uniform(check, moes, "moe")
    attn_po = period_offset([i for i, (mx, _) in enumerate(layers) if mx.type == "attention"], n)
    check.need(attn_po is not None, "attention layers are not evenly spaced: Jamba places them "
                                    "at i % attn_layer_period == attn_layer_offset")
    moe_po = period_offset([i for i, (_, f) in enumerate(layers) if f.type == "moe"], n)
    check.need(moe_po is not None, "MoE layers are not evenly spaced: Jamba places them at "
                                   "i % expert_layer_period == expert_layer_offset")
    if mc is not None:
        name = mambas[0].name
        expand = int_expand(check, name, mc.expand)
        check.need(mc.dt_bc_norm, f"blocks.{name}.dt_bc_norm: false: Jamba's Mamba has RMSNorms "
                                  "on dt, B and C (set dt_bc_norm: true)")
        check.need(not mc.dt_bc_norm or mc.dt_bc_norm_eps == m.norm_eps,
                   f"blocks.{name}.dt_bc_norm_eps = {mc.dt_bc_norm_eps}: Jamba uses the model's "
                   f"norm_eps ({m.norm_eps})")
    if ac is not None:
        name = attns[0].name
        check_attention(check, ac, name, m.d_model)
    if fc is not None:
        check.need(fc.activation == "swiglu", f"blocks.{mlps[0].name}.activation = "
                                              f"{fc.activation}: Jamba's MLP is SwiGLU")
        check.need(not fc.bias, f"blocks.{mlps[0].name}.bias: Jamba's MLP has no biases")
    if ec is not None:
        name = moes[0].name
        check.need(ec.score == "softmax", f"blocks.{name}.score = {ec.score}: Jamba routes by "
                                          "softmax")
        check.need(not ec.normalize_top_k, f"blocks.{name}.normalize_top_k: Jamba does not "
                                           "renormalise the top-k weights (set it false)")
        check.need(ec.n_shared_experts == 0, f"blocks.{name}.n_shared_experts: Jamba has no "
                                             "shared experts")
    widths = {mlp_hidden(c, m.d_model) for c in (fc, ec) if c is not None}
    check.need(len(widths) <= 1, f"the MLP and expert hidden widths differ ({sorted(widths)}): "
                                 "Jamba has one intermediate_size")
    check.done()

    config = dict(
        vocab_size=m.vocab_size, tie_word_embeddings=bool(m.tie_embeddings),
        hidden_size=m.d_model, intermediate_size=widths.pop() if widths else 4 * m.d_model,
        num_hidden_layers=n, hidden_act="silu", initializer_range=m.init.std,
        rms_norm_eps=m.norm_eps, attn_layer_period=attn_po[0], attn_layer_offset=attn_po[1],
        expert_layer_period=moe_po[0], expert_layer_offset=moe_po[1],
        num_attention_heads=ac.n_heads if ac else 1, num_key_value_heads=ac.kv_heads if ac else 1,
        head_dim=ac.dim_per_head(m.d_model) if ac else m.d_model,
        num_experts=ec.n_experts if ec else 1, num_experts_per_tok=ec.top_k if ec else 1,
        router_aux_loss_coef=ec.lb_loss_coef if ec else 0.001,
        max_position_embeddings=262144)
    if mc is not None:
        config.update(mamba_d_state=mc.d_state, mamba_d_conv=mc.d_conv, mamba_expand=expand,
                      mamba_dt_rank=mc.inner(m.d_model)[1], mamba_conv_bias=mc.conv_bias,
                      mamba_proj_bias=mc.bias)
    state = model.state_dict() if state is None else state
    weights = head_weights(state, "model.embed_tokens.weight", "lm_head.weight",
                           m.tie_embeddings)
    for i, (mixer, ffn) in enumerate(layers):
        out = f"model.layers.{i}."
        weights[out + "input_layernorm.weight"] = state[f"layers.{mixer.index}.norm.weight"]
        weights[out + "pre_ff_layernorm.weight"] = state[f"layers.{ffn.index}.norm.weight"]
        mixer_state = prefixed(state, f"layers.{mixer.index}.block.")
        if mixer.type == "mamba1":
            weights.update({out + "mamba." + k: v for k, v in mixer_state.items()})
        else:
            attn = model.layers[mixer.index].block
            weights.update({out + "self_attn." + k: v
                            for k, v in attention_weights(mixer_state, attn).items()})
        ffn_state = prefixed(state, f"layers.{ffn.index}.block.")
        if ffn.type == "mlp":
            weights.update({out + "feed_forward." + k: v for k, v in
                            mlp_weights(prefixed(ffn_state, "ffn."), gated=True).items()})
        else:
            gate_up, down = experts_gate_up(ffn_state)
            weights[out + "feed_forward.router.weight"] = ffn_state["router.weight"]
            weights[out + "feed_forward.experts.gate_up_proj"] = gate_up
            weights[out + "feed_forward.experts.down_proj"] = down
    weights["model.final_layernorm.weight"] = state["norm_f.weight"]
    return NativeExport(MODEL_TYPE, ARCHITECTURE, config, contiguous(weights),
                        tied=bool(m.tie_embeddings))


def to_spec(c) -> tuple[dict, list[str]]:
    """A ``JambaConfig`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader, attention_block

    r = Reader(c, "Jamba")
    r.expect("hidden_act", "silu")
    blocks = {
        "M": {"type": "mamba1", "d_state": int(c.mamba_d_state), "d_conv": int(c.mamba_d_conv),
              "expand": int(c.mamba_expand), "dt_rank": int(c.mamba_dt_rank),
              "conv_bias": bool(c.mamba_conv_bias), "bias": bool(c.mamba_proj_bias),
              "dt_bc_norm": True, "dt_bc_norm_eps": float(c.rms_norm_eps)},
        "*": attention_block(c, c.num_attention_heads, c.num_key_value_heads,
                             getattr(c, "head_dim", None), r.rope(nope=True)),
        "-": {"type": "mlp", "hidden_mult": r.mult(c.intermediate_size)},
        "E": {"type": "moe", "n_experts": int(c.num_experts), "top_k": int(c.num_experts_per_tok),
              "hidden_mult": r.mult(c.intermediate_size), "normalize_top_k": False,
              "score": "softmax", "lb_loss_coef": float(c.router_aux_loss_coef)},
    }
    experts = c.layers_num_experts
    pattern = " ".join(("*" if kind == "attention" else "M") + ("E" if experts[i] > 1 else "-")
                       for i, kind in enumerate(c.layers_block_type))
    used = set(pattern.replace(" ", ""))
    data = {"name": "jamba", "model": r.model(), "pattern": pattern,
            "blocks": {k: v for k, v in blocks.items() if k in used}}
    return data, r.notes
