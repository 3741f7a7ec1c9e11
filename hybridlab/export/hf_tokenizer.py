"""Tokenizer and generation settings shipped with a Hugging Face export.

hybridlab's byte-level models (vocab_size >= 256: token id = byte value, as ``hybridlab generate``
reads them) get a byte-level ``tokenizer.json`` -- GPT-2's byte-to-character alphabet, no merges,
so every UTF-8 byte is one token whose id is the byte -- with its ``tokenizer_config.json`` and
``special_tokens_map.json``. Byte 0 (NUL, which never occurs in text) doubles as bos, eos and pad:
the models were trained on raw bytes with no special tokens, so generation runs to
``max_new_tokens``. Ids from 256 up are never sampled (``suppress_tokens``), as in
``hybridlab generate``; the tokenizer names them ``<|unused_N|>``.

    ids = special_ids(vocab_size)          # {"bos_token_id": 0, ...} or {} (not byte-level)
    write_tokenizer(folder, vocab_size)    # the tokenizer files (byte-level models only)
    generation_config(vocab_size)          # transformers GenerationConfig with the ids set
"""
from __future__ import annotations

import json
import os

BYTES = 256
NUL = 0


def is_byte_level(vocab_size: int) -> bool:
    return vocab_size >= BYTES


def special_ids(vocab_size: int) -> dict:
    """bos/eos/pad ids for the model config and generation config."""
    if not is_byte_level(vocab_size):
        return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    return {"bos_token_id": NUL, "eos_token_id": NUL, "pad_token_id": NUL}


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte (``bytes_to_unicode``), indexed by byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(BYTES):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(BYTES + extra)
            extra += 1
    return [chars[b] for b in range(BYTES)]


def build_tokenizer(vocab_size: int):
    """A ``PreTrainedTokenizerFast`` with id == byte (ids >= 256 as unused special tokens)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = byte_alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    unused = [AddedToken(f"<|unused_{i}|>", special=True, normalized=False)
              for i in range(BYTES, vocab_size)]
    if unused:
        tok.add_special_tokens(unused)
    nul = alphabet[NUL]
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=nul, eos_token=nul,
                                   pad_token=nul, clean_up_tokenization_spaces=False,
                                   add_prefix_space=False)


def write_tokenizer(folder: str | os.PathLike, vocab_size: int) -> bool:
    """The tokenizer files into ``folder``; False (nothing written) when not byte-level."""
    if not is_byte_level(vocab_size):
        return False
    tok = build_tokenizer(vocab_size)
    ids = tok.convert_tokens_to_ids([tok.eos_token])
    if ids != [NUL] or len(tok) != vocab_size:     # the tokenizer must agree with the model
        raise AssertionError(f"byte tokenizer has eos {ids} and {len(tok)} tokens, "
                             f"expected [{NUL}] and {vocab_size}")
    tok.save_pretrained(folder)
    # the class name every transformers release knows (5.x writes its own backend's name), and
    # the special-tokens map older releases read
    config_file = os.path.join(folder, "tokenizer_config.json")
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token")}
    for name, data in ((config_file, config),
                       (os.path.join(folder, "special_tokens_map.json"), special)):
        with open(name, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
    return True


def generation_config(vocab_size: int):
    from transformers import GenerationConfig

    ids = special_ids(vocab_size)
    extra = {}
    if is_byte_level(vocab_size) and vocab_size > BYTES:
        extra["suppress_tokens"] = list(range(BYTES, vocab_size))
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None}, **extra)
