"""Per-layer and total accounting of a spec: parameters, decode state, KV cache, FLOPs per token.

The model is built on the meta device (shapes only, no memory), so a 50B layout takes seconds.
Conventions:
* a layer's params include its pre-norm; shared weights count at their first use only, so the
  per-layer counts, embeddings and final norm add up to ``sum(p.numel())`` of the built model;
* params_embedding = token embedding + untied LM head + meta tokens; the rest is non-embedding;
* meta tokens occupy the first positions of every sequence, so KV bytes and FLOPs at context C
  are those at C + meta_tokens;
* flops_per_token: forward FLOPs (2 per multiply-add) of one token at that context, LM head
  included.
"""
from __future__ import annotations

import torch

from hybridlab.formatting import human_bytes, human_count  # noqa: F401  (re-exported)
from hybridlab.composer.builder import HybridModel, build_model
from hybridlab.composer.loader import load_spec
from hybridlab.composer.spec import ModelSpec


#: dtype names accepted besides torch dtypes (CLI and UI spellings)
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(spec, contexts=(4096,), dtype: torch.dtype = torch.bfloat16) -> dict:
    """Spec (ModelSpec or anything ``load_spec`` takes) -> plain dict of counts (see module doc).

    ``contexts``: context lengths (an int or a sequence) for KV bytes and FLOPs; ``dtype``: element
    type of cached state and KV, a torch dtype or a name (bf16, fp16, fp32).
    """
    if not isinstance(spec, ModelSpec):
        spec = load_spec(spec)
    model: HybridModel = build_model(spec, device="meta")
    contexts = (contexts,) if isinstance(contexts, int) else tuple(int(c) for c in contexts)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    meta = model.n_meta

    layers = []
    for layer_spec, layer in zip(spec.layers, model.layers):
        block, norm = layer.block, _numel(layer.norm)
        layers.append({
            "index": layer_spec.index,
            "symbol": layer_spec.name,
            "type": layer_spec.type,
            "params": block.num_parameters(active=False) + norm,
            "params_active": block.num_parameters(active=True) + norm,
            "state_bytes": block.state_bytes(dtype),
            "kv_bytes": {str(c): block.kv_bytes(c + meta, dtype) for c in contexts},
            "flops_per_token": {str(c): block.flops_per_token(c + meta) for c in contexts},
        })

    embedding = model.embed.weight.numel() + (meta * spec.model.d_model)
    if not spec.model.tie_embeddings:
        embedding += model.head.weight.numel()
    total = model.num_parameters()
    head_flops = 2 * model.head.weight.numel()
    return {
        "name": spec.name,
        "pattern": spec.pattern,
        "params_total": total,
        "params_active": model.num_parameters(active=True),
        "params_embedding": embedding,
        "params_non_embedding": total - embedding,
        "contexts": list(contexts),
        "dtype": str(dtype).removeprefix("torch."),
        "state_bytes": sum(entry["state_bytes"] for entry in layers),
        "kv_bytes": {str(c): sum(e["kv_bytes"][str(c)] for e in layers) for c in contexts},
        "flops_per_token": {str(c): head_flops + sum(e["flops_per_token"][str(c)] for e in layers)
                            for c in contexts},
        "layers": layers,
    }


# -- human-readable numbers ----------------------------------------------------------------

