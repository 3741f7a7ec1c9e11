"""`hybridlab generate DIR --prompt TEXT`: sample from an exported byte-level model.

    hybridlab generate exports/best --prompt "The cat" --max-new-tokens 64 --temperature 0.8
"""
from __future__ import annotations

import sys

from hybridlab.errors import Problem, SpecError


#: longest generation: the decode cache (KV, state) is allocated for prompt + new tokens
MAX_NEW_TOKENS = 100_000


def _check_device(device: str) -> None:
    import torch
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise SpecError(Problem(f"--device {device!r} is not a device", file="<command line>",
                                hint="cpu, cuda or cuda:N")) from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise SpecError(Problem("--device cuda, but no CUDA GPU is available here",
                                file="<command line>", hint="use --device cpu"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from an exported byte-level model (vocab >= 256)",
        description="Load an export (hybridlab export, native or hf) and continue a prompt. "
                    "Byte-level: the prompt's UTF-8 bytes are the tokens and each new token is "
                    "one byte, so the model needs a vocabulary of at least 256. Decoding runs "
                    "through the model's recurrent step (state + KV cache), one token at a time.")
    p.add_argument("model_dir", metavar="DIR", help="export folder (spec.yaml + model.safetensors)")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="bytes to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature; 0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="sample among the K most likely bytes only")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from hybridlab.export.generate import BYTE_VOCAB, generate_text
    from hybridlab.export.native import SPEC_FILE, load_model

    if args.max_new_tokens < 1:
        raise SpecError(Problem("--max-new-tokens must be >= 1", file="<command line>"))
    if args.temperature < 0:
        raise SpecError(Problem("--temperature must be >= 0", file="<command line>"))
    if args.max_new_tokens > MAX_NEW_TOKENS:
        raise SpecError(Problem(f"--max-new-tokens is at most {MAX_NEW_TOKENS:,} (the decode "
                                f"cache is sized for the whole sequence)", file="<command line>"))
    if args.top_k is not None and args.top_k < 1:
        raise SpecError(Problem("--top-k must be >= 1", file="<command line>"))
    if not args.prompt:
        raise SpecError(Problem("--prompt is empty", file="<command line>"))
    _check_device(args.device)
    model = load_model(args.model_dir, device=args.device)     # ExportError: what is wrong
    vocab = model.spec.model.vocab_size
    if vocab < BYTE_VOCAB:
        raise SpecError(Problem(f"the model's vocabulary has {vocab} tokens; byte-level "
                                f"generation needs {BYTE_VOCAB}", file=str(Path(args.model_dir)
                                                                         / SPEC_FILE),
                                field="model.vocab_size",
                                hint="this model was trained on synthetic tasks with their own "
                                     "token ids; generate works with byte-level models"))
    text = generate_text(model, args.prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    sys.stdout.write(args.prompt + text + "\n")
    return 0
