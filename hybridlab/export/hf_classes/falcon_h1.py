"""Parallel hybrid layers -- attention and Mamba-2 on the same normed input, their raw outputs
summed (``parallel`` with ``branch_norm: false``, ``combine: sum``) -- each followed by a SwiGLU
MLP, as transformers' ``FalconH1ForCausalLM`` (every muP multiplier 1)."""
from __future__ import annotations

from hybridlab.export.hf_classes.common import (Check, NativeExport, attention_weights,
                                                check_model, contiguous, head_weights,
                                                mlp_hidden, mlp_weights, pairs, prefixed,
                                                rope_parameters, uniform)

MODEL_TYPE = "falcon_h1"
ARCHITECTURE = "FalconH1ForCausalLM"


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    m = spec.model
    check = Check("FalconH1")
    check_model(check, spec)
    layers = pairs(check, spec, {"parallel"}, {"mlp"}) or []
    pc = uniform(check, [mx for mx, _ in layers], "parallel")
    fc = uniform(check, [f for _, f in layers], "mlp")
    rope = ac = mc = None
    if pc is not None:
        name = layers[0][0].name
        check.need(not pc.branch_norm, f"blocks.{name}.branch_norm: FalconH1 sums the raw "
                                       "attention and Mamba outputs (set branch_norm: false)")
        check.need(pc.combine == "sum", f"blocks.{name}.combine = {pc.combine}: FalconH1 sums "
                                        "the branches")
        (_, ac), (ssm_type, mc) = pc.branches().values()
        if check.need(ssm_type == "mamba2", f"blocks.{name}.ssm.type = {ssm_type}: FalconH1's "
                                            "SSM branch is Mamba-2"):
            cls = check.class_name
            check.need(not mc.D_has_hdim, f"blocks.{name}.ssm.D_has_hdim: {cls} has one D per "
                                          "head")
            check.need(not mc.rmsnorm or mc.norm_eps == m.norm_eps,
                       f"blocks.{name}.ssm.norm_eps = {mc.norm_eps}: FalconH1 uses the model's "
                       f"norm eps ({m.norm_eps}) in the gated norm")
        else:
            mc = None
        head_dim = ac.dim_per_head(m.d_model)
        rope = rope_parameters(check, ac, f"{name}.attention", head_dim, partial=False)
        check.need(ac.window is None, f"blocks.{name}.attention.window: FalconH1 has no sliding "
                                      "window")
    if fc is not None:
        check.need(fc.activation == "swiglu", f"blocks.{layers[0][1].name}.activation = "
                                              f"{fc.activation}: FalconH1's MLP is SwiGLU")
    check.done()

    first = model.layers[layers[0][0].index].block.ssm
    config = dict(
        vocab_size=m.vocab_size, tie_word_embeddings=bool(m.tie_embeddings),
        hidden_size=m.d_model, intermediate_size=mlp_hidden(fc, m.d_model),
        num_hidden_layers=len(layers), hidden_act="silu", initializer_range=m.init.std,
        rms_norm_eps=m.norm_eps, mlp_bias=fc.bias,
        num_attention_heads=ac.n_heads, num_key_value_heads=ac.kv_heads,
        head_dim=ac.dim_per_head(m.d_model), attention_bias=ac.qkv_bias, rope_parameters=rope,
        mamba_d_ssm=first.d_inner, mamba_n_heads=first.nheads, mamba_d_head=mc.headdim,
        mamba_n_groups=mc.ngroups, mamba_d_state=mc.d_state, mamba_d_conv=mc.d_conv,
        mamba_expand=max(1, first.d_inner // m.d_model), mamba_chunk_size=mc.chunk_size,
        mamba_conv_bias=mc.conv_bias, mamba_proj_bias=mc.bias, projectors_bias=mc.bias,
        mamba_norm_before_gate=mc.norm_before_gate, mamba_rms_norm=mc.rmsnorm,
        time_step_limit=list(mc.dt_limit),
        lm_head_multiplier=1.0, embedding_multiplier=1.0, mlp_multipliers=[1.0, 1.0],
        key_multiplier=1.0, attention_out_multiplier=1.0, attention_in_multiplier=1.0,
        ssm_multipliers=[1.0] * 5, ssm_in_multiplier=1.0, ssm_out_multiplier=1.0)
    state = model.state_dict() if state is None else state
    weights = head_weights(state, "model.embed_tokens.weight", "lm_head.weight",
                           m.tie_embeddings)
    for i, (mixer, ffn) in enumerate(layers):
        out = f"model.layers.{i}."
        weights[out + "input_layernorm.weight"] = state[f"layers.{mixer.index}.norm.weight"]
        weights[out + "pre_ff_layernorm.weight"] = state[f"layers.{ffn.index}.norm.weight"]
        block = prefixed(state, f"layers.{mixer.index}.block.")
        weights.update({out + "mamba." + k: v for k, v in prefixed(block, "ssm.").items()})
        weights.update({out + "self_attn." + k: v for k, v in attention_weights(
            prefixed(block, "attn."), model.layers[mixer.index].block.attn,
            out_bias=ac.qkv_bias).items()})
        ffn_state = prefixed(state, f"layers.{ffn.index}.block.ffn.")
        weights.update({out + "feed_forward." + k: v
                        for k, v in mlp_weights(ffn_state, gated=True, bias=fc.bias).items()})
    weights["model.final_layernorm.weight"] = state["norm_f.weight"]
    return NativeExport(MODEL_TYPE, ARCHITECTURE, config, contiguous(weights),
                        tied=bool(m.tie_embeddings))


def to_spec(c) -> tuple[dict, list[str]]:
    """A ``FalconH1Config`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader, attention_block, mamba2_block

    r = Reader(c, "FalconH1")
    r.expect("hidden_act", "silu")
    r.expect("attention_bias", False, "hybridlab's attention has no output-projection bias")
    r.expect("projectors_bias", c.mamba_proj_bias, "hybridlab's Mamba-2 has one bias setting "
                                                   "for in_proj and out_proj")
    for name in ("lm_head_multiplier", "embedding_multiplier", "key_multiplier",
                 "attention_out_multiplier", "attention_in_multiplier", "ssm_in_multiplier",
                 "ssm_out_multiplier"):
        r.expect(name, 1.0, "hybridlab has no muP multipliers (the spec leaves it out)")
    for name, n in (("mlp_multipliers", 2), ("ssm_multipliers", 5)):
        r.expect(name, [1.0] * n, "hybridlab has no muP multipliers (the spec leaves it out)")
    d_ssm = c.mamba_d_ssm if c.mamba_d_ssm is not None else c.mamba_expand * c.hidden_size
    ssm = mamba2_block(c, c.mamba_n_heads, c.mamba_d_head, c.mamba_d_state, c.mamba_d_conv,
                       c.mamba_n_groups, c.mamba_chunk_size, c.mamba_conv_bias, c.mamba_proj_bias,
                       c.time_step_limit, c.rms_norm_eps)
    ssm.update(rmsnorm=bool(c.mamba_rms_norm), norm_before_gate=bool(c.mamba_norm_before_gate))
    if int(c.mamba_n_heads) * int(c.mamba_d_head) != int(d_ssm):
        r.notes.append("mamba_n_heads * mamba_d_head differs from mamba_d_ssm")
    attention = attention_block(c, c.num_attention_heads, c.num_key_value_heads,
                                getattr(c, "head_dim", None), r.rope())
    attention.pop("type")
    attention["rope_fraction"] = 1.0           # FalconH1 rotates whole heads
    blocks = {"P": {"type": "parallel", "combine": "sum", "branch_norm": False,
                    "attention": attention, "ssm": ssm},
              "-": {"type": "mlp", "hidden_mult": r.mult(c.intermediate_size),
                    "bias": bool(c.mlp_bias)}}
    data = {"name": "falcon-h1", "model": r.model(), "blocks": blocks,
            "pattern": f"(P-) x {int(c.num_hidden_layers)}"}
    return data, r.notes
