"""A stack of Mamba-2 mixers (no FFN layers) as transformers' ``Mamba2ForCausalLM``."""
from __future__ import annotations

from hybridlab.export.hf_classes.common import (Check, NativeExport, check_model, contiguous,
                                                head_weights, prefixed, types_only, uniform)

MODEL_TYPE = "mamba2"
ARCHITECTURE = "Mamba2ForCausalLM"


def check_mamba2(check: Check, c, name: str, norm_eps: float | None, own_width: bool = False):
    """The Mamba-2 options transformers' Mamba-2 mixers share (Mamba2, NemotronH, Bamba,
    GraniteMoeHybrid, Zamba2, FalconH1): gated RMSNorm after the gate, D per head; the gated
    norm's eps is the model's where the class has one eps (``norm_eps`` not None)."""
    cls = check.class_name
    check.need(c.rmsnorm, f"blocks.{name}.rmsnorm: false: {cls} always has the gated RMSNorm")
    check.need(not c.norm_before_gate, f"blocks.{name}.norm_before_gate: {cls} normalises "
                                       "y * silu(z) (norm_before_gate: false)")
    check.need(not c.D_has_hdim, f"blocks.{name}.D_has_hdim: {cls} has one D per head")
    if norm_eps is not None:
        check.need(c.norm_eps == norm_eps, f"blocks.{name}.norm_eps = {c.norm_eps}: {cls} uses "
                                           f"the model's norm eps ({norm_eps}) in the gated norm")
    if not own_width:
        check.need(getattr(c, "d_ssm", None) is None,
                   f"blocks.{name}.d_ssm: {cls} sets the SSM width by expand * d_model")


def fit(model, state: dict | None = None) -> NativeExport:
    spec = model.spec
    m = spec.model
    check = Check("Mamba2")
    check_model(check, spec)
    types_only(check, spec, {"mamba2"})
    c = uniform(check, [la for la in spec.layers if la.type == "mamba2"], "mamba2")
    if c is not None:
        check_mamba2(check, c, spec.layers[0].name, m.norm_eps)
    check.done()
    block = model.layers[0].block
    config = dict(
        num_heads=block.nheads, head_dim=c.headdim, vocab_size=m.vocab_size,
        hidden_size=m.d_model, state_size=c.d_state, num_hidden_layers=len(spec.layers),
        layer_norm_epsilon=m.norm_eps, expand=block.d_inner // m.d_model, conv_kernel=c.d_conv,
        n_groups=c.ngroups, use_bias=c.bias, use_conv_bias=c.conv_bias, hidden_act="silu",
        time_step_min=c.dt_min, time_step_max=c.dt_max, time_step_floor=c.dt_init_floor,
        time_step_limit=list(c.dt_limit), residual_in_fp32=False, chunk_size=c.chunk_size,
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
    """A ``Mamba2Config`` -> spec data (and what it leaves out)."""
    from hybridlab.export.hf_classes.common import Reader, mamba2_block

    r = Reader(c, "Mamba2")
    r.expect("hidden_act", "silu")
    block = mamba2_block(c, c.num_heads, c.head_dim, c.state_size, c.conv_kernel, c.n_groups,
                         c.chunk_size, c.use_conv_bias, c.use_bias, c.time_step_limit,
                         c.layer_norm_epsilon)
    data = {"name": "mamba2", "model": r.model("layer_norm_epsilon"), "blocks": {"M": block},
            "pattern": f"(M) x {int(c.num_hidden_layers)}"}
    return data, r.notes
