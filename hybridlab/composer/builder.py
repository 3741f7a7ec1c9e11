"""ModelSpec -> HybridModel: embedding, a stack of pre-norm residual layers, final norm, LM head.

    x = embed(tokens)                      (with meta tokens prepended, Hymba-style)
    for each layer:  x = x + block(norm(x))
    logits = head(final_norm(x))           (meta positions dropped)

The builder knows blocks only through the Block interface (hybridlab/blocks/base.py): each
layer's block comes from the registry and initialises its own weights; the builder initialises
the embedding, meta tokens and an untied head.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from hybridlab.blocks import ForwardContext, LayerContext, get_block
from hybridlab.blocks.norms import make_norm
from hybridlab.composer.spec import ModelSpec


class HybridLayer(nn.Module):
    """One pre-norm residual layer: x + block(norm(x))."""

    def __init__(self, norm: nn.Module, block: nn.Module):
        super().__init__()
        self.norm = norm
        self.block = block

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return x + self.block(self.norm(x), ctx)

    def step(self, x_t: torch.Tensor, state, ctx: ForwardContext):
        y, state = self.block.step(self.norm(x_t), state, ctx)
        return x_t + y, state


@dataclass
class DecodeCache:
    """Per-layer block states plus the absolute position of the next token (meta tokens included)."""

    states: list
    position: int = 0
    max_len: int = 0                # positions the cache can hold, meta tokens included


class HybridModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        m = spec.model
        n_layers = len(spec.layers)
        residual_scale = 1.0 / math.sqrt(2 * n_layers) if m.init.residual_scaling and n_layers else 1.0

        self.embed = nn.Embedding(m.vocab_size, m.d_model)
        self.meta_tokens = nn.Parameter(torch.empty(m.meta_tokens, m.d_model)) if m.meta_tokens else None

        shared: dict = {}                  # weight-sharing store, one entry per shared block name
        uses: dict[str, int] = {}
        layers = []
        for layer in spec.layers:
            ctx = LayerContext(index=layer.index, name=layer.name, d_model=m.d_model, n_layers=n_layers,
                               use_index=uses.get(layer.name, 0), shared=shared,
                               init_std=m.init.std, residual_scale=residual_scale, n_meta=m.meta_tokens)
            uses[layer.name] = ctx.use_index + 1
            block = get_block(layer.type)(layer.config, ctx)
            norm = make_norm(m.norm, m.d_model, m.norm_eps) if getattr(block, "pre_norm", True) \
                else nn.Identity()          # a block that norms its own input (zamba2 hybrid)
            layers.append(HybridLayer(norm, block))
        self.layers = nn.ModuleList(layers)

        self.norm_f = make_norm(m.norm, m.d_model, m.norm_eps)
        self.head = nn.Linear(m.d_model, m.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=m.init.std)
        if self.meta_tokens is not None:
            nn.init.normal_(self.meta_tokens, std=m.init.std)
        if m.tie_embeddings:
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.head.weight, std=m.init.std)

    @property
    def n_meta(self) -> int:
        return 0 if self.meta_tokens is None else self.meta_tokens.shape[0]

    # -- training forward ------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, L) long -> logits (B, L, vocab) for the real tokens only."""
        x = self.embed(input_ids)
        if self.meta_tokens is not None:
            meta = self.meta_tokens.to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([meta, x], dim=1)
        ctx = ForwardContext(embeddings=x)
        for layer in self.layers:
            x = layer(x, ctx)
        return self.head(self.norm_f(x[:, self.n_meta:]))

    def aux_loss(self) -> torch.Tensor:
        """Sum of the blocks' auxiliary losses (MoE balancing, z-loss) from the last forward."""
        losses = [aux for layer in self.layers if (aux := layer.block.aux_loss()) is not None]
        if not losses:
            return torch.zeros((), device=self.embed.weight.device)
        return sum(losses[1:], losses[0])

    # -- decoding --------------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int) -> DecodeCache:
        """Empty per-layer states for ``max_len`` real tokens; meta tokens are run through
        ``step`` right away, so the cache starts exactly where forward's real tokens start."""
        w = self.embed.weight
        total = max_len + self.n_meta
        cache = DecodeCache([layer.block.init_state(batch_size, total, w.device, w.dtype)
                             for layer in self.layers], position=0, max_len=total)
        if w.is_meta:                  # shapes only (accounting): nothing to compute
            cache.position = self.n_meta
            return cache
        for i in range(self.n_meta):
            self._step_embedding(self.meta_tokens[i].to(w.dtype).expand(batch_size, -1), cache)
        return cache

    def step(self, input_ids_t: torch.Tensor, cache: DecodeCache):
        """input_ids_t (B,) long -> (logits (B, vocab), cache): one new token per sequence."""
        x = self._step_embedding(self.embed(input_ids_t), cache)
        return self.head(self.norm_f(x)), cache

    def _step_embedding(self, x: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
        if cache.position >= cache.max_len:
            raise IndexError(f"decode cache is full ({cache.max_len} positions); raise max_len")
        ctx = ForwardContext(embeddings=x, position=cache.position)
        for i, layer in enumerate(self.layers):
            x, cache.states[i] = layer.step(x, cache.states[i], ctx)
        cache.position += 1
        return x

    # -- accounting ------------------------------------------------------------------------
    def num_parameters(self, active: bool = False) -> int:
        """Unique parameters (shared and tied weights once); ``active`` counts what one token
        uses: MoE top-k and shared experts only."""
        if not active:
            return sum(p.numel() for p in self.parameters())
        in_blocks = {id(p) for layer in self.layers for p in layer.block.parameters()}
        outside = sum(p.numel() for p in self.parameters() if id(p) not in in_blocks)
        return outside + sum(layer.block.num_parameters(active=True) for layer in self.layers)


def build_model(spec, device=None, dtype=None) -> HybridModel:
    """``ModelSpec`` (or a path / YAML text / dict for ``hybridlab.load_spec``) -> ``HybridModel``.

    ``device="meta"`` builds without allocating memory (for counting); ``dtype`` converts the
    floating-point weights after construction.
    """
    if not isinstance(spec, ModelSpec):
        import hybridlab
        spec = hybridlab.load_spec(spec)
    place = torch.device(device) if device is not None else contextlib.nullcontext()
    with place:
        model = HybridModel(spec)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model
