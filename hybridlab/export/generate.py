"""Token generation through the model's recurrent ``step`` (no recomputation of the prefix).

    ids = generate_tokens(model, prompt_ids, max_new_tokens=32, temperature=0.0)
    text = generate_text(model, "Hello", max_new_tokens=32)      # byte-level models

The prompt is fed one token at a time through ``HybridModel.step`` (Mamba layers advance their
state, attention layers fill their KV cache), then each new token is sampled from the last
logits. ``temperature <= 0`` is greedy.
"""
from __future__ import annotations

import torch

BYTE_VOCAB = 256


@torch.no_grad()
def generate_tokens(model, prompt_ids, max_new_tokens: int = 32, temperature: float = 0.0,
                    top_k: int | None = None, seed: int | None = None,
                    allowed_vocab: int | None = None) -> torch.Tensor:
    """prompt_ids (B, L) or (L,) long -> (B, L + max_new_tokens) long.

    ``allowed_vocab`` restricts sampling to token ids below it (bytes: 256)."""
    ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.shape[1] < 1:
        raise ValueError("the prompt needs at least one token")
    device = next(model.parameters()).device
    ids = ids.to(device)
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    batch, length = ids.shape
    cache = model.init_cache(batch, length + max_new_tokens)
    logits = None
    for t in range(length):
        logits, cache = model.step(ids[:, t], cache)
    out = [ids]
    for _ in range(max_new_tokens):
        nxt = _pick(logits.float(), temperature, top_k, gen, allowed_vocab)
        out.append(nxt[:, None])
        logits, cache = model.step(nxt, cache)
    return torch.cat(out, dim=1)


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen, allowed: int | None):
    if allowed is not None and allowed < logits.shape[-1]:
        logits = logits[:, :allowed]
    if temperature is None or temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / float(temperature)
    if top_k:
        k = min(int(top_k), logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


def generate_text(model, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                  top_k: int | None = None, seed: int | None = None) -> str:
    """Byte-level generation: UTF-8 bytes of ``prompt`` in, the new bytes out (decoded with
    replacement characters where they are not valid UTF-8)."""
    vocab = model.spec.model.vocab_size
    if vocab < BYTE_VOCAB:
        raise ValueError(f"this model has a vocabulary of {vocab} tokens; byte-level generation "
                         f"needs at least {BYTE_VOCAB} (one token per byte)")
    data = prompt.encode("utf-8")
    if not data:
        raise ValueError("the prompt is empty")
    out = generate_tokens(model, list(data), max_new_tokens=max_new_tokens,
                          temperature=temperature, top_k=top_k, seed=seed,
                          allowed_vocab=BYTE_VOCAB)
    new = out[0, len(data):].tolist()
    return bytes(new).decode("utf-8", errors="replace")
