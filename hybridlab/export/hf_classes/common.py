"""What every native transformers mapping shares: fit checks that name the hybridlab option a
class cannot express, and the weight maps of the blocks several classes reuse.

A class module's ``fit(model)`` returns a ``NativeExport`` (the transformers config fields and
the weights under transformers' names) or raises ``Misfit`` with one reason per option that has
no equivalent in that class. Nothing here imports transformers: the mapping is plain tensors,
checked against the class itself by ``hybridlab.export.hf_native`` when the folder is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from hybridlab.blocks.mlp import hidden_size


class Misfit(Exception):
    """The model has options a transformers class cannot express; ``reasons`` names each."""

    def __init__(self, class_name: str, reasons: list[str]):
        self.class_name = class_name
        self.reasons = list(reasons)
        super().__init__(f"{class_name}: " + "; ".join(self.reasons))


@dataclass
class NativeExport:
    model_type: str                       # transformers' model_type, e.g. "nemotron_h"
    architecture: str                     # the causal-LM class, e.g. "NemotronHForCausalLM"
    config: dict                          # keyword arguments of the class's config
    weights: dict[str, torch.Tensor]      # transformers parameter name -> tensor
    tied: bool = False                    # lm_head shares the embedding (omitted from weights)
    notes: list[str] = field(default_factory=list)


class Check:
    """Collects the reasons a model does not fit one class."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        self.reasons: list[str] = []

    def need(self, ok, reason: str) -> bool:
        if not ok and reason not in self.reasons:
            self.reasons.append(reason)
        return bool(ok)

    def done(self) -> None:
        if self.reasons:
            raise Misfit(self.class_name, self.reasons)


# -- the model as a whole ------------------------------------------------------------------------
def check_model(check: Check, spec, norm: str = "rmsnorm") -> None:
    """Settings no supported class has: meta tokens, a LayerNorm stack, plugin blocks, KV
    sharing across layers."""
    m = spec.model
    name = check.class_name
    check.need(m.meta_tokens == 0, f"model.meta_tokens = {m.meta_tokens}: {name} prepends no "
                                   "learned tokens")
    check.need(m.norm == norm, f"model.norm = {m.norm}: {name} uses {norm}")
    builtin = {"mamba1", "mamba2", "mamba3", "attention", "mlp", "moe", "shared_attention",
               "parallel"}
    for layer in spec.layers:
        if layer.type not in builtin:
            check.need(False, f"layer {layer.index} is a '{layer.type}' block (a plugin): "
                              f"{name} has no such layer")
        elif getattr(layer.config, "share_kv", False):
            check.need(False, f"blocks.{layer.name}.share_kv: {name} has no cross-layer KV "
                              "sharing")


def uniform(check: Check, layers, what: str):
    """The one config every layer in ``layers`` shares (transformers classes have one setting
    per layer kind), or None after naming the first field that differs."""
    if not layers:
        return None
    first = layers[0]
    for layer in layers[1:]:
        if layer.config != first.config:
            diff = [f.name for f in fields(first.config)
                    if getattr(first.config, f.name) != getattr(layer.config, f.name, None)]
            check.need(False, f"layers {first.index} and {layer.index} ({what}) differ in "
                              f"{', '.join(diff) or 'type'}: {check.class_name} has one "
                              f"{what} setting for every layer")
            return None
    return first.config


def types_only(check: Check, spec, allowed: set[str]) -> None:
    bad: dict[tuple[str, str], list[int]] = {}
    for layer in spec.layers:
        if layer.type not in allowed:
            bad.setdefault((layer.type, layer.name), []).append(layer.index)
    for (type_name, name), indices in bad.items():
        check.need(False, f"{layer_list(indices)} ('{name}') {type_name}: {check.class_name} has "
                          f"only {', '.join(sorted(allowed))} layers")


def layer_list(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:6])) + (", ..." if len(indices) > 6 else "")
    return f"layer {shown}" if len(indices) == 1 else f"layers {shown}"


def pairs(check: Check, spec, mixers: set[str], ffns: set[str]):
    """(mixer layer, ffn layer) pairs when the stack alternates mixer, FFN (one transformers
    decoder layer each), else None."""
    layers = list(spec.layers)
    ok = len(layers) % 2 == 0 and all(
        (layer.type in mixers) if i % 2 == 0 else (layer.type in ffns)
        for i, layer in enumerate(layers))
    shown = spec.pattern if len(spec.pattern) <= 40 else spec.pattern[:40] + "..."
    if not check.need(ok, f"the layers must alternate mixer ({'/'.join(sorted(mixers))}) and "
                          f"feed-forward ({'/'.join(sorted(ffns))}): a {check.class_name} "
                          f"decoder layer is one of each; got {shown}"):
        return None
    return list(zip(layers[0::2], layers[1::2]))


def int_expand(check: Check, name: str, expand) -> int | None:
    if check.need(float(expand).is_integer(), f"blocks.{name}.expand = {expand}: "
                                                f"{check.class_name} needs a whole number"):
        return int(expand)
    return None


# -- weights -------------------------------------------------------------------------------------
def prefixed(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def mamba_weights(block_state: dict) -> dict:
    """Mamba-1 and Mamba-2 mixers: hybridlab keeps mamba-ssm's names, as transformers does."""
    return dict(block_state)


def attention_weights(block_state: dict, attn, out_bias: bool = False) -> dict:
    """Fused wqkv -> q_proj, k_proj, v_proj; wo -> o_proj (a zero bias where the class puts one
    on o_proj too, e.g. Llama-style attention_bias)."""
    sizes = [attn.q_size, attn.kv_size, attn.kv_size]
    out = {}
    for name, part in zip(("q_proj", "k_proj", "v_proj"),
                          block_state["wqkv.weight"].split(sizes, dim=0)):
        out[f"{name}.weight"] = part
    if "wqkv.bias" in block_state:
        for name, part in zip(("q_proj", "k_proj", "v_proj"),
                              block_state["wqkv.bias"].split(sizes, dim=0)):
            out[f"{name}.bias"] = part
    out["o_proj.weight"] = block_state["wo.weight"]
    if out_bias:
        out["o_proj.bias"] = torch.zeros(block_state["wo.weight"].shape[0],
                                         dtype=block_state["wo.weight"].dtype)
    return out


def mlp_weights(ffn_state: dict, gated: bool, bias: bool = False) -> dict:
    """FeedForward (w_in, w_out) -> gate_proj/up_proj/down_proj (SwiGLU) or up_proj/down_proj."""
    w_in, w_out = ffn_state["w_in.weight"], ffn_state["w_out.weight"]
    out = {"down_proj.weight": w_out}
    if gated:
        gate, up = w_in.chunk(2, dim=0)
        out.update({"gate_proj.weight": gate, "up_proj.weight": up})
        if bias:
            b_gate, b_up = ffn_state["w_in.bias"].chunk(2, dim=0)
            out.update({"gate_proj.bias": b_gate, "up_proj.bias": b_up})
    else:
        out["up_proj.weight"] = w_in
        if bias:
            out["up_proj.bias"] = ffn_state["w_in.bias"]
    if bias:
        out["down_proj.bias"] = ffn_state["w_out.bias"]
    return out


def experts_gate_up(block_state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """MoE experts stacked as transformers stores them: gate_up_proj (E, 2h, d) with gate rows
    first, down_proj (E, d, h) -- hybridlab keeps (E, d, 2h) and (E, h, d)."""
    return (block_state["w_in"].transpose(1, 2).contiguous(),
            block_state["w_out"].transpose(1, 2).contiguous())


def mlp_hidden(cfg, d_model: int) -> int:
    return hidden_size(d_model, cfg.hidden_mult, cfg.multiple_of)


def head_weights(state: dict, embed_name: str, head_name: str, tied: bool) -> dict:
    out = {embed_name: state["embed.weight"]}
    if not tied:
        out[head_name] = state["head.weight"]
    return out


def contiguous(weights: dict) -> dict:
    """Fresh contiguous CPU copies (safetensors refuses views sharing storage); meta tensors
    (a model built for its layout only) stay as they are."""
    return {k: v.detach() if v.is_meta else v.detach().cpu().clone().contiguous()
            for k, v in weights.items()}


def rope_parameters(check: Check, c, name: str, head_dim: int, partial: bool = True,
                    nope: bool = False) -> dict | None:
    """transformers' ``rope_parameters`` for an attention config: default RoPE with hybridlab's
    theta and rotated share (``partial_rotary_factor`` where the class applies one); None for
    NoPE where the class allows it."""
    from hybridlab.blocks.rope import rotary_dim

    cls = check.class_name
    if not c.rope:
        check.need(nope, f"blocks.{name}.rope: false: {cls} attention always uses RoPE")
        return None
    rot = rotary_dim(head_dim, c.rope_fraction)
    factor = rot / head_dim
    if partial:
        check.need(int(head_dim * factor) == rot, f"blocks.{name}.rope_fraction = "
                   f"{c.rope_fraction}: {cls} cannot rotate exactly {rot} of {head_dim} dims")
    else:
        check.need(rot == head_dim, f"blocks.{name}.rope_fraction = {c.rope_fraction}: {cls} "
                                    "rotates every dimension of a head")
    params = {"rope_type": "default", "rope_theta": float(c.rope_theta)}
    if partial:
        params["partial_rotary_factor"] = factor
    return params


def mamba2_fields(c, block, prefix: str = "mamba_") -> dict:
    """The ``mamba_*`` config fields Bamba and GraniteMoeHybrid share."""
    return {f"{prefix}n_heads": block.nheads, f"{prefix}d_head": c.headdim,
            f"{prefix}n_groups": c.ngroups, f"{prefix}d_state": c.d_state,
            f"{prefix}d_conv": c.d_conv, f"{prefix}expand": block.d_inner // block.layer.d_model,
            f"{prefix}chunk_size": c.chunk_size, f"{prefix}conv_bias": c.conv_bias,
            f"{prefix}proj_bias": c.bias, "time_step_limit": list(c.dt_limit)}


# -- reading a transformers config into a spec (convert --from hf) -------------------------------
class ZeroWeights(str):
    """A left-out note about weights the class has and hybridlab's block lacks (biases,
    adapters): weights can still be read back when those are zero, as hybridlab's export
    writes them."""


class Reader:
    """A transformers config object read into spec data; ``notes`` lists what the spec leaves
    out (settings hybridlab cannot express: the spec then describes the layout, not these
    exact weights)."""

    def __init__(self, config, class_name: str):
        self.c = config
        self.class_name = class_name
        self.notes: list[str] = []

    def zero_weights(self, ok: bool, text: str) -> None:
        if not ok:
            self.notes.append(ZeroWeights(text + " (weights load only where they are zero)"))

    def get(self, name: str, default=None):
        return getattr(self.c, name, default)

    def expect(self, name: str, want, why: str = "") -> None:
        got = self.get(name, want)
        same = (abs(float(got) - float(want)) <= 1e-12 * max(1.0, abs(float(want)))
                if isinstance(want, (int, float)) and not isinstance(want, bool)
                and isinstance(got, (int, float)) else got == want)
        if not same:
            self.notes.append(f"{name} = {got!r}: {why or f'hybridlab has no such setting (only {want!r})'}")

    def model(self, norm_eps_field: str = "rms_norm_eps", tie: bool | None = None) -> dict:
        c = self.c
        return {"d_model": int(c.hidden_size), "vocab_size": int(c.vocab_size),
                "norm": "rmsnorm", "norm_eps": float(getattr(c, norm_eps_field)),
                "tie_embeddings": bool(c.tie_word_embeddings) if tie is None else tie,
                "init": {"std": float(self.get("initializer_range", 0.02))}}

    def mult(self, width: int) -> float:
        """hidden_mult giving ``width`` at this d_model (round(mult * d_model) == width)."""
        mult = int(width) / int(self.c.hidden_size)
        assert round(mult * int(self.c.hidden_size)) == int(width)
        return mult

    def rope(self, nope: bool = False) -> dict:
        """Attention position fields from ``rope_parameters`` (default RoPE only)."""
        if nope:
            return {"rope": False}
        params = dict(self.get("rope_parameters") or {})
        if params.get("rope_type", "default") != "default":
            self.notes.append(f"rope_parameters.rope_type = {params['rope_type']!r}: hybridlab "
                              "has default RoPE only")
        return {"rope": True, "rope_theta": float(params.get("rope_theta", 10000.0)),
                "rope_fraction": float(params.get("partial_rotary_factor", 1.0))}


def mamba2_block(c, heads: int, head_dim: int, d_state: int, d_conv: int, ngroups: int,
                 chunk: int, conv_bias: bool, bias: bool, dt_limit, norm_eps: float,
                 dt: tuple = ()) -> dict:
    """A mamba2 block for transformers' Mamba-2 fields; ``d_ssm`` only where the width is not
    expand * d_model."""
    d_model = int(c.hidden_size)
    width = int(heads) * int(head_dim)
    lo, hi = (list(dt_limit) + [0.0, float("inf")])[:2]
    out = {"type": "mamba2", "d_state": int(d_state), "d_conv": int(d_conv),
           "headdim": int(head_dim), "ngroups": int(ngroups), "chunk_size": int(chunk),
           "conv_bias": bool(conv_bias), "bias": bool(bias), "norm_eps": float(norm_eps),
           "dt_limit": [float(lo), None if hi == float("inf") else float(hi)]}
    if width % d_model:
        out["d_ssm"] = width
    else:
        out["expand"] = width // d_model
    if dt:
        out.update(dt_min=float(dt[0]), dt_max=float(dt[1]), dt_init_floor=float(dt[2]))
    return out


def attention_block(c, heads: int, kv_heads: int, head_dim: int | None, position: dict) -> dict:
    out = {"type": "attention", "n_heads": int(heads), "n_kv_heads": int(kv_heads), **position}
    if head_dim is not None and int(head_dim) != int(c.hidden_size) // int(heads):
        out["head_dim"] = int(head_dim)
    return out
