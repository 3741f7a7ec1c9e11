"""Hymba-style hybrid head: an attention branch and an SSM branch read the same input in one layer.

Each branch's output is RMS-normalised and scaled by a learned per-channel vector (init 1), so
neither branch drowns the other, then the two are averaged (or summed):

    out = combine(beta_attn * norm(attn(x)), beta_ssm * norm(ssm(x)))

The branches are ordinary registered blocks, built from the nested ``attention:`` and ``ssm:``
mappings, so any mixer type with a ``step`` (mamba1/2/3 or a plugin) can be the SSM branch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Block, BlockConfig, ForwardContext, LayerContext
from .norms import RMSNorm
from .registry import block_types, get_block, register_block

COMBINE = ("mean", "sum")


def _default_ssm() -> dict:
    return {"type": "mamba1"}


@dataclass
class ParallelConfig(BlockConfig):
    """Fields (YAML keys) and defaults:

    attention: {}               fields of the ``attention`` block (n_heads, window, rope, ...)
    ssm: {type: mamba1}         ``type`` (a registered mixer: mamba1 | mamba2 | mamba3 | plugin)
                                plus that block's fields (d_state, expand, ...)
    combine: "mean"             mean | sum of the two normalised, scaled branch outputs
    branch_norm: True           RMS-normalise and scale each branch (Hymba); false: combine the
                                raw outputs (FalconH1's parallel hybrid: attn(x) + ssm(x))
    """

    attention: dict = field(default_factory=dict)
    ssm: dict = field(default_factory=_default_ssm)
    combine: str = "mean"
    branch_norm: bool = True

    def branches(self) -> dict[str, tuple[str, BlockConfig]]:
        """{"attention": (type, Config), "ssm": (type, Config)}; raises TypeError on unknown keys."""
        ssm_fields = dict(self.ssm)
        ssm_type = ssm_fields.pop("type", "mamba1")
        return {"attention": ("attention", get_block("attention").Config(**self.attention)),
                "ssm": (ssm_type, get_block(ssm_type).Config(**ssm_fields))}

    def kv_source(self, d_model: int) -> dict:
        return self.branches()["attention"][1].kv_source(d_model)

    def shares_kv(self) -> str | None:
        return "attention.share_kv" if self.attention.get("share_kv") else None

    def validate(self, d_model: int) -> list[tuple[str, str]]:
        problems = []
        if self.combine not in COMBINE:
            problems.append(("combine", f"unknown combine {self.combine!r}; expected one of {', '.join(COMBINE)}"))
        ssm_type = dict(self.ssm).get("type", "mamba1")
        if ssm_type not in block_types():
            return problems + [("ssm.type", f"unknown block type {ssm_type!r}; "
                                            f"registered: {', '.join(block_types())}")]
        if get_block(ssm_type).kind != "mixer" or ssm_type in ("parallel", "attention", "shared_attention"):
            return problems + [("ssm.type", f"{ssm_type!r} is not an SSM mixer")]
        if "type" in self.attention:
            problems.append(("attention.type", "the attention branch is always type attention"))
            return problems
        for branch, fields in (("attention", self.attention), ("ssm", self.ssm)):
            cls = get_block("attention" if branch == "attention" else ssm_type).Config
            unknown = sorted(set(fields) - set(cls.field_names()) - {"type"})
            problems += [(f"{branch}.{name}", f"unknown field for {cls.__name__}") for name in unknown]
        if problems:
            return problems
        for branch, (_, cfg) in self.branches().items():
            problems += [(f"{branch}.{name}", msg) for name, msg in cfg.validate(d_model)]
        return problems


@register_block("parallel")
class Parallel(Block):
    Config = ParallelConfig
    kind = "mixer"
    megatron_symbol = ""           # no Megatron symbol for intra-layer hybrids
    hf_layer_type = "hybrid"

    def __init__(self, cfg: ParallelConfig, ctx: LayerContext):
        super().__init__(cfg, ctx)
        (_, attn_cfg), (ssm_type, ssm_cfg) = cfg.branches().values()
        d = ctx.d_model
        self.attn = get_block("attention")(attn_cfg, dataclasses.replace(ctx, name=f"{ctx.name}.attention"))
        self.ssm = get_block(ssm_type)(ssm_cfg, dataclasses.replace(ctx, name=f"{ctx.name}.ssm"))
        if cfg.branch_norm:
            self.norm_attn, self.norm_ssm = RMSNorm(d), RMSNorm(d)
            self.beta_attn = nn.Parameter(torch.ones(d))
            self.beta_ssm = nn.Parameter(torch.ones(d))

    def _combine(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if not self.cfg.branch_norm:
            y = a + s
            return y / 2 if self.cfg.combine == "mean" else y
        y = self.beta_attn * self.norm_attn(a) + self.beta_ssm * self.norm_ssm(s)
        return y / 2 if self.cfg.combine == "mean" else y

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self._combine(self.attn(x, ctx), self.ssm(x, ctx))

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None):
        return {"attention": self.attn.init_state(batch_size, max_len, device, dtype),
                "ssm": self.ssm.init_state(batch_size, max_len, device, dtype)}

    def step(self, x_t: torch.Tensor, state, ctx: ForwardContext):
        a, state["attention"] = self.attn.step(x_t, state["attention"], ctx)
        s, state["ssm"] = self.ssm.step(x_t, state["ssm"], ctx)
        return self._combine(a, s), state

    # -- accounting ------------------------------------------------------------------------
    def _glue_parameters(self) -> int:
        if not self.cfg.branch_norm:
            return 0
        return sum(p.numel() for m in (self.norm_attn, self.norm_ssm) for p in m.parameters()) + \
            self.beta_attn.numel() + self.beta_ssm.numel()

    def num_parameters(self, active: bool = False) -> int:
        return self.attn.num_parameters(active) + self.ssm.num_parameters(active) + self._glue_parameters()

    def state_bytes(self, dtype: torch.dtype = torch.bfloat16) -> int:
        return self.attn.state_bytes(dtype) + self.ssm.state_bytes(dtype)

    def kv_bytes(self, context: int, dtype: torch.dtype = torch.bfloat16) -> int:
        return self.attn.kv_bytes(context, dtype) + self.ssm.kv_bytes(context, dtype)

    def flops_per_token(self, context: int) -> int:
        return self.attn.flops_per_token(context) + self.ssm.flops_per_token(context) + \
            2 * self._glue_parameters()
