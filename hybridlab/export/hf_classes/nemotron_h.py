"""Mamba-2, attention, MLP and MoE layers in any order (mixers and FFNs are separate layers) as
transformers' ``NemotronHForCausalLM`` (``layers_block_type``)."""
from __future__ import annotations

from hybridlab.export.hf_classes.common import (Check, NativeExport, attention_weights,
                                                check_model, contiguous, head_weights,
                                                mlp_hidden, mlp_weights, prefixed, types_only,
                                                uniform)
from hybridlab.export.hf_classes.jamba import check_attention
from hybridlab.export.hf_classes.mamba2 import check_mamba2

MODEL_TYPE = "nemotron_h"
ARCHITECTURE = "NemotronHForCausalLM"
LAYER_TYPES = {"mamba2": "linear_attention", "attention": "full_attention", "mlp": "mlp",
               "moe": "moe"}
ACTIVATIONS = {"relu2": "relu2", "gelu": "gelu"}      # NemotronH's MLP is not gated


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    m = spec.model
    check = Check("NemotronH")
    check_model(check, spec)
    types_only(check, spec, set(LAYER_TYPES))
    of = {t: [la for la in spec.layers if la.type == t] for t in LAYER_TYPES}
    mc, ac = uniform(check, of["mamba2"], "mamba2"), uniform(check, of["attention"], "attention")
    fc, ec = uniform(check, of["mlp"], "mlp"), uniform(check, of["moe"], "moe")
    if mc is not None:
        check_mamba2(check, mc, of["mamba2"][0].name, m.norm_eps)
    if ac is not None:
        check_attention(check, ac, of["attention"][0].name, m.d_model)
    acts = set()
    if fc is not None:
        name = of["mlp"][0].name
        check.need(fc.activation in ACTIVATIONS, f"blocks.{name}.activation = {fc.activation}: "
                   "NemotronH's MLP is not gated (relu2 or gelu)")
        check.need(not fc.bias, f"blocks.{name}.bias: NemotronH's MLP has no biases")
        acts.add(fc.activation)
    if ec is not None:
        name = of["moe"][0].name
        act = getattr(ec, "activation", "swiglu")
        check.need(act in ACTIVATIONS, f"blocks.{name}.activation = {act}: NemotronH's experts "
                   "are not gated (relu2 or gelu)")
        check.need(ec.score == "sigmoid", f"blocks.{name}.score = {ec.score}: NemotronH routes "
                                          "by sigmoid")
        check.need(ec.n_shared_experts <= 1, f"blocks.{name}.n_shared_experts = "
                   f"{ec.n_shared_experts}: NemotronH has one shared expert")
        acts.add(act)
    check.need(len(acts) <= 1, f"MLP and expert activations differ ({sorted(acts)}): "
                               "NemotronH has one mlp_hidden_act")
    check.done()

    config = dict(
        vocab_size=m.vocab_size, hidden_size=m.d_model, tie_word_embeddings=False,
        layers_block_type=[LAYER_TYPES[la.type] for la in spec.layers],
        layer_norm_epsilon=m.norm_eps, initializer_range=m.init.std, residual_in_fp32=False,
        mlp_hidden_act=acts.pop() if acts else "relu2", mlp_bias=False,
        num_logits_to_keep=1, max_position_embeddings=4096)
    if mc is not None:
        block = model.layers[of["mamba2"][0].index].block
        config.update(mamba_num_heads=block.nheads, mamba_head_dim=mc.headdim,
                      ssm_state_size=mc.d_state, n_groups=mc.ngroups, conv_kernel=mc.d_conv,
                      expand=max(1, block.d_inner // m.d_model), use_conv_bias=mc.conv_bias,
                      use_bias=mc.bias, chunk_size=mc.chunk_size,
                      time_step_limit=list(mc.dt_limit), time_step_min=mc.dt_min,
                      time_step_max=mc.dt_max, time_step_floor=mc.dt_init_floor)
    if ac is not None:
        config.update(num_attention_heads=ac.n_heads, num_key_value_heads=ac.kv_heads,
                      head_dim=ac.dim_per_head(m.d_model), attention_bias=False)
    if fc is not None:
        config["intermediate_size"] = mlp_hidden(fc, m.d_model)
    if ec is not None:
        moe = model.layers[of["moe"][0].index].block
        # NemotronH always has a shared expert: without one here it is 1 wide with zero
        # weights, which adds exactly 0 (relu2(0) = gelu(0) = 0)
        shared = moe.shared.w_out.in_features if moe.shared is not None else 1
        config.update(n_routed_experts=ec.n_experts, num_experts_per_tok=ec.top_k,
                      moe_intermediate_size=moe.hidden, n_shared_experts=1,
                      moe_shared_expert_intermediate_size=shared, norm_topk_prob=ec.normalize_top_k,
                      routed_scaling_factor=1.0, n_group=1, topk_group=1)
    notes = ["NemotronH does not tie embeddings: lm_head is written as a copy of the embedding"] \
        if m.tie_embeddings else []
    if ec is not None and ec.n_shared_experts == 0:
        notes.append("NemotronH's MoE always has a shared expert: written 1 wide with zero "
                     f"weights ({2 * m.d_model} parameters per MoE layer that add exactly 0)")
    state = model.state_dict() if state is None else state
    weights = head_weights(state, "model.embeddings.weight", "lm_head.weight", tied=False)
    for layer in spec.layers:
        i = layer.index
        out = f"model.layers.{i}."
        weights[out + "norm.weight"] = state[f"layers.{i}.norm.weight"]
        block = prefixed(state, f"layers.{i}.block.")
        if layer.type == "mamba2":
            mixer = block
        elif layer.type == "attention":
            mixer = attention_weights(block, model.layers[i].block)
        elif layer.type == "mlp":
            mixer = mlp_weights(prefixed(block, "ffn."), gated=False)
        else:
            mixer = moe_weights(block, model.layers[i].block, m.d_model)
        weights.update({out + "mixer." + k: v for k, v in mixer.items()})
    weights["model.norm_f.weight"] = state["norm_f.weight"]
    return NativeExport(MODEL_TYPE, ARCHITECTURE, config, contiguous(weights), tied=False,
                        notes=notes)


def moe_weights(block: dict, moe, d_model: int) -> dict:
    """Non-gated experts: up_proj (E, h, d), down_proj (E, d, h); the router in fp32 with a zero
    score-correction bias; the shared expert (1 wide and zero when hybridlab has none)."""
    import torch

    out = {"gate.weight": block["router.weight"],
           "gate.e_score_correction_bias": torch.zeros(block["router.weight"].shape[0]),
           "experts.up_proj": block["w_in"].transpose(1, 2),
           "experts.down_proj": block["w_out"].transpose(1, 2)}
    if moe.shared is not None:
        shared = mlp_weights(prefixed(block, "shared."), gated=False)
    else:
        w = block["w_in"]
        shared = {"up_proj.weight": w.new_zeros(1, d_model),
                  "down_proj.weight": w.new_zeros(d_model, 1)}
    out.update({"shared_experts." + k: v for k, v in shared.items()})
    return out


def to_spec(c) -> tuple[dict, list[str]]:
    """A ``NemotronHConfig`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader, attention_block, mamba2_block

    r = Reader(c, "NemotronH")
    act = c.mlp_hidden_act if c.mlp_hidden_act in ACTIVATIONS else "relu2"
    r.expect("mlp_hidden_act", act, "hybridlab's ungated MLPs are relu2 or gelu")
    for name in ("mlp_bias", "attention_bias"):
        r.expect(name, False, "hybridlab has no such biases")
    r.expect("mamba_hidden_act", "silu")
    r.expect("moe_latent_size", None, "hybridlab's MoE has no latent projection")
    r.expect("n_group", 1, "hybridlab routes without expert groups")
    r.expect("routed_scaling_factor", 1.0, "hybridlab does not scale routed weights")
    r.expect("num_nextn_predict_layers", 0, "hybridlab has no multi-token prediction layers")
    r.expect("sliding_window", None, "NemotronH's attention layers are full in hybridlab")
    shared = int(c.moe_shared_expert_intermediate_size) if c.n_shared_experts else 0
    blocks = {
        "M": mamba2_block(c, c.mamba_num_heads, c.mamba_head_dim, c.ssm_state_size,
                          c.conv_kernel, c.n_groups, c.chunk_size, c.use_conv_bias, c.use_bias,
                          c.time_step_limit, c.layer_norm_epsilon,
                          (c.time_step_min, c.time_step_max, c.time_step_floor)),
        "*": attention_block(c, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                             r.rope(nope=True)),
        "-": {"type": "mlp", "activation": act, "hidden_mult": r.mult(c.intermediate_size)},
        "E": {"type": "moe", "n_experts": int(c.n_routed_experts),
              "top_k": int(c.num_experts_per_tok), "activation": act, "score": "sigmoid",
              "hidden_mult": r.mult(c.moe_intermediate_size),
              "normalize_top_k": bool(c.norm_topk_prob),
              "n_shared_experts": 1 if shared else 0,
              **({"shared_hidden_mult": r.mult(shared)} if shared else {})},
    }
    symbols = {v: k for k, v in LAYER_TYPES.items()}
    to_symbol = {"mamba2": "M", "attention": "*", "mlp": "-", "moe": "E"}
    pattern = "".join(to_symbol[symbols[t]] for t in c.layers_block_type)
    data = {"name": "nemotron-h", "model": r.model("layer_norm_epsilon", tie=False),
            "pattern": pattern, "blocks": {k: v for k, v in blocks.items() if k in pattern}}
    return data, r.notes
