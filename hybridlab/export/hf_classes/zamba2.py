"""Mamba-2 layers and Zamba2 hybrid layers (``shared_attention`` with ``structure: zamba2``: a
shared transformer feeding the layer's own Mamba-2) as transformers' ``Zamba2ForCausalLM``.
Shared blocks used in turn (A, B, A, B, ...) are its ``num_mem_blocks``."""
from __future__ import annotations

import torch

from hybridlab.blocks.rope import rotary_dim
from hybridlab.export.hf_classes.common import (Check, NativeExport, attention_weights,
                                                check_model, contiguous, head_weights,
                                                int_expand, prefixed, types_only, uniform)
from hybridlab.export.hf_classes.mamba2 import check_mamba2

MODEL_TYPE = "zamba2"
ARCHITECTURE = "Zamba2ForCausalLM"
ACTS = {"swiglu": "silu", "geglu": "gelu"}
MAMBA_NORM_EPS = 1e-5                # Zamba2's gated norm eps is fixed


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    m = spec.model
    check = Check("Zamba2")
    check_model(check, spec)
    types_only(check, spec, {"mamba2", "shared_attention"})
    mambas = [la for la in spec.layers if la.type == "mamba2"]
    hybrids = [la for la in spec.layers if la.type == "shared_attention"]
    check.need(hybrids, "no shared_attention layer: a Zamba2 model has hybrid layers")
    for la in hybrids:
        check.need(la.config.structure == "zamba2", f"blocks.{la.name}.structure = "
                   f"{la.config.structure}: Zamba2's shared block is structure: zamba2")
    names = list(dict.fromkeys(la.name for la in hybrids))       # block ids, in order of use
    check.need(all(la.name == names[j % len(names)] for j, la in enumerate(hybrids)),
               f"shared blocks {', '.join(names)} are not used in turn: Zamba2 cycles its "
               "num_mem_blocks")
    ranks = {la.config.adapter_rank for la in hybrids}
    check.need(len(ranks) <= 1, f"adapter ranks differ between uses ({sorted(ranks)}): Zamba2 "
                                "has one adapter_rank")
    shared = {name: uniform(check, [la for la in hybrids if la.name == name], name)
              for name in names}
    sc = shared[names[0]] if names else None
    for name, c in shared.items():
        if c is None or sc is None:
            continue
        check.need(dict(c.core_key()) == dict(sc.core_key()),
                   f"blocks.{name} and blocks.{names[0]} differ: Zamba2's shared blocks have "
                   "one setting")
    mcs = [la.config for la in mambas] + [la.config.mamba_config() for la in hybrids
                                           if la.config.structure == "zamba2"]
    mc = mcs[0] if mcs else None
    check.need(all(c == mc for c in mcs), "the Mamba-2 layers (and the hybrid layers' own "
                                          "Mamba) differ: Zamba2 has one Mamba setting")
    if mc is not None:
        where = mambas[0].name if mambas else f"{hybrids[0].name}.mamba"
        check_mamba2(check, mc, where, MAMBA_NORM_EPS)
        expand = int_expand(check, where, mc.expand)
        lo, hi = mc.dt_limit
        check.need(lo > 0 and hi == float("inf"), f"blocks.{where}.dt_limit = {list(mc.dt_limit)}:"
                   " Zamba2 clamps dt to [time_step_min > 0, inf) (set dt_limit: [dt_min, null])")
    head_dim = None
    if sc is not None and sc.structure == "zamba2":
        name = names[0]
        width = 2 * m.d_model
        head_dim = sc.dim_per_head(width)
        check.need(head_dim == width // sc.n_heads, f"blocks.{name}.head_dim: Zamba2's is "
                                                    "2 * d_model / n_heads")
        check.need(sc.window is None, f"blocks.{name}.window: Zamba2 has no sliding window")
        check.need(not sc.qkv_bias, f"blocks.{name}.qkv_bias: Zamba2's attention has no biases")
        check.need(not sc.rope or rotary_dim(head_dim, sc.rope_fraction) == head_dim,
                   f"blocks.{name}.rope_fraction: Zamba2 rotates every dimension")
        check.need(sc.mlp_activation in ACTS, f"blocks.{name}.mlp_activation = "
                                              f"{sc.mlp_activation}: Zamba2's MLP is gated")
        check.need(sc.norm_eps == m.norm_eps, f"blocks.{name}.norm_eps = {sc.norm_eps}: Zamba2 "
                                              f"uses the model's norm_eps ({m.norm_eps})")
        check.need(not ranks - {0} or sc.kv_heads == sc.n_heads,
                   f"blocks.{name}.n_kv_heads: Zamba2's k/v adapters need n_kv_heads = n_heads")
    check.done()

    rank = ranks.pop()
    first = model.layers[hybrids[0].index].block
    hidden = first.core.mlp.w_out.in_features
    block0 = model.layers[(mambas or hybrids)[0].index].block
    mamba = block0 if mambas else block0.mamba
    config = dict(
        vocab_size=m.vocab_size, hidden_size=m.d_model, tie_word_embeddings=bool(m.tie_embeddings),
        num_hidden_layers=len(spec.layers), initializer_range=m.init.std, rms_norm_eps=m.norm_eps,
        layers_block_type=["hybrid" if la.type == "shared_attention" else "linear_attention"
                           for la in spec.layers],
        mamba_d_state=mc.d_state, mamba_d_conv=mc.d_conv, mamba_expand=expand,
        mamba_ngroups=mc.ngroups, n_mamba_heads=mamba.nheads, chunk_size=mc.chunk_size,
        use_conv_bias=mc.conv_bias, add_bias_linear=mc.bias, time_step_min=mc.dt_limit[0],
        time_step_max=max(mc.dt_max, mc.dt_limit[0]), time_step_floor=mc.dt_init_floor,
        intermediate_size=hidden, hidden_act=ACTS[sc.mlp_activation],
        num_attention_heads=sc.n_heads, num_key_value_heads=sc.kv_heads,
        num_mem_blocks=len(names), use_shared_attention_adapter=rank > 0,
        adapter_rank=max(rank, 1), use_mem_rope=bool(sc.rope), max_position_embeddings=4096)
    if sc.rope:
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": float(sc.rope_theta)}
    notes = [] if rank else ["Zamba2 always has LoRA adapters on the MLP's gate_up: written "
                             "rank 1 with zero weights, which add exactly 0"]
    state = model.state_dict() if state is None else state
    weights = head_weights(state, "model.embed_tokens.weight", "lm_head.weight",
                           m.tie_embeddings)
    uses = {name: [j for j, la in enumerate(hybrids) if la.name == name] for name in names}
    for layer in spec.layers:
        i, out = layer.index, f"model.layers.{layer.index}."
        block = prefixed(state, f"layers.{i}.block.")
        if layer.type == "mamba2":
            weights[out + "input_layernorm.weight"] = state[f"layers.{i}.norm.weight"]
            weights.update({out + "mamba." + k: v for k, v in block.items()})
            continue
        weights[out + "mamba_decoder.input_layernorm.weight"] = block["mamba_norm.weight"]
        weights.update({out + "mamba_decoder.mamba." + k: v
                        for k, v in prefixed(block, "mamba.").items()})
        weights[out + "linear.weight"] = block["proj.weight"]
        weights.update({out + "shared_transformer." + k: v for k, v in _shared(
            block, model.layers[i].block, uses[layer.name], hybrids, state, rank,
            mc.bias).items()})
    weights["model.final_layernorm.weight"] = state["norm_f.weight"]
    return NativeExport(MODEL_TYPE, ARCHITECTURE, config, contiguous(weights),
                        tied=bool(m.tie_embeddings), notes=notes)


def _shared(block: dict, use, uses: list[int], hybrids, state: dict, rank: int,
            bias: bool) -> dict:
    """One hybrid layer's shared_transformer: the core, and the adapters of every use of this
    block (transformers keeps them all in each tied copy, by hybrid-layer number)."""
    core = prefixed(block, "core.")
    out = {"input_layernorm.weight": core["norm_attn.weight"],
           "pre_ff_layernorm.weight": core["norm_mlp.weight"],
           "feed_forward.gate_up_proj.weight": core["mlp.w_in.weight"],
           "feed_forward.down_proj.weight": core["mlp.w_out.weight"]}
    out.update({"self_attn." + k: v for k, v in
                attention_weights(prefixed(core, "attn."), use.core.attn).items()})
    w = core["mlp.w_in.weight"]
    if bias:                 # add_bias_linear also puts biases on Zamba2's MLP: zero here
        out["feed_forward.gate_up_proj.bias"] = w.new_zeros(w.shape[0])
        out["feed_forward.down_proj.bias"] = w.new_zeros(core["mlp.w_out.weight"].shape[0])
    for j in uses:
        own = prefixed(state, f"layers.{hybrids[j].index}.block.")
        if rank:
            for name, k in (("q", 0), ("k", 1), ("v", 2)):
                lst = f"self_attn.linear_{name}_adapter_list.{j}."
                out[lst + "0.weight"] = own[f"adapter.down.{k}.weight"]
                out[lst + "1.weight"] = own[f"adapter.up.{k}.weight"]
            lst = f"feed_forward.gate_up_proj_adapter_list.{j}."
            out[lst + "0.weight"] = own["mlp_adapter.0.weight"]
            out[lst + "1.weight"] = own["mlp_adapter.1.weight"]
        else:
            lst = f"feed_forward.gate_up_proj_adapter_list.{j}."
            out[lst + "0.weight"] = torch.zeros(1, w.shape[1], dtype=w.dtype, device=w.device)
            out[lst + "1.weight"] = torch.zeros(w.shape[0], 1, dtype=w.dtype, device=w.device)
    return out


def to_spec(c) -> tuple[dict, list[str]]:
    """A ``Zamba2Config`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader, mamba2_block

    r = Reader(c, "Zamba2")
    gates = {v: k for k, v in ACTS.items()}
    act = gates.get(c.hidden_act, "geglu")
    r.expect("hidden_act", {"swiglu": "silu", "geglu": "gelu"}[act], "hybridlab's zamba2 MLP "
             "gates with silu or gelu")
    r.zero_weights(not c.add_bias_linear, "add_bias_linear = True: Zamba2's MLP biases are not "
                   "in hybridlab's zamba2 block")
    r.expect("use_long_context", False, "hybridlab does not rescale RoPE")
    rank = int(c.adapter_rank) if c.use_shared_attention_adapter else 0
    r.zero_weights(bool(rank), f"use_shared_attention_adapter = False: Zamba2's MLP adapters "
                   f"(rank {c.adapter_rank}) are not in hybridlab's zamba2 block without q/k/v "
                   "adapters")
    d = int(c.hidden_size)
    mamba = mamba2_block(c, c.n_mamba_heads, c.mamba_expand * d // c.n_mamba_heads,
                         c.mamba_d_state, c.mamba_d_conv, c.mamba_ngroups, c.chunk_size,
                         c.use_conv_bias, c.add_bias_linear, (c.time_step_min, float("inf")),
                         MAMBA_NORM_EPS, (c.time_step_min, c.time_step_max, c.time_step_floor))
    shared = {"type": "shared_attention", "structure": "zamba2",
              "n_heads": int(c.num_attention_heads), "n_kv_heads": int(c.num_key_value_heads),
              **r.rope(nope=not c.use_mem_rope), "concat_embeddings": True,
              "mlp_hidden_mult": r.mult(c.intermediate_size), "mlp_activation": act,
              "adapter_rank": rank, "norm_eps": float(c.rms_norm_eps),
              "mamba": {k: v for k, v in mamba.items() if k != "type"}}
    shared.pop("rope_fraction", None)
    names = [chr(ord("A") + i) for i in range(int(c.num_mem_blocks))]
    blocks = {"M": mamba, **{name: dict(shared) for name in names}}
    hybrid, pattern = 0, []
    for t in c.layers_block_type:
        if t == "hybrid":
            pattern.append(names[hybrid % len(names)])
            hybrid += 1
        else:
            pattern.append("M")
    data = {"name": "zamba2", "model": r.model(), "blocks": blocks, "pattern": " ".join(pattern)}
    return data, r.notes
