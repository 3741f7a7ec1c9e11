"""The ``blocks:`` section: each name -> its block's ``Config`` (type-checked, then validated),
and resolving a name the pattern or layout uses (a defined block, or a default symbol)."""
from __future__ import annotations

from hybridlab.blocks.registry import block_types, get_block
from hybridlab.composer.pattern import RESERVED
from hybridlab.composer.read.context import Block, Reading
from hybridlab.specs.limits import MAX_BLOCKS
from hybridlab.specs.problems import did_you_mean, with_suggestion
from hybridlab.specs.source import Position
from hybridlab.specs.typecheck import describe

#: Pattern symbols that work without a `blocks` entry, each with its Config defaults.
DEFAULT_SYMBOLS = {"M": "mamba2", "*": "attention", "-": "mlp", "E": "moe"}


def read_blocks(r: Reading, blocks) -> None:
    """Fill ``r.blocks`` (None for an entry that is invalid) and ``r.defined``."""
    if blocks is None:
        return
    if not isinstance(blocks, dict):
        hint = "blocks: {M: {type: mamba2}, \"*\": {type: attention}}"
        if isinstance(blocks, list):
            hint = "blocks is a mapping, not a list; note that '- ' starts a list item " \
                   "in YAML, so write the MLP symbol quoted: \"-\": {type: mlp}"
        r.problem(("blocks",), f"blocks must be a mapping of name -> block, got "
                               f"{describe(blocks)}", hint)
        return
    if len(blocks) > MAX_BLOCKS:
        r.problem(("blocks",), f"{len(blocks)} blocks are defined; the limit is {MAX_BLOCKS}",
                  "use overrides for per-layer changes", key=True)
        return
    for name, entry in blocks.items():
        path = ("blocks", name)
        problem = block_name_problem(name)
        if problem:
            r.problem(path, problem, key=True)
            continue
        r.defined.append(name)
        r.blocks[name] = _read_block(r, name, entry, path)


def _read_block(r: Reading, name: str, entry, path: tuple) -> Block | None:
    if not isinstance(entry, dict):
        r.problem(path, f"a block must be a mapping, got {describe(entry)}",
                  f"{name}: {{type: mamba2, d_state: 16}}")
        return None
    if "type" not in entry:
        r.problem(path, "missing required key 'type'", types_hint(), key=True)
        return None
    type_name = entry["type"]
    cls = _block_class(r, type_name, path + ("type",))
    if cls is None:
        return None
    config = r.build_config(cls.Config, entry, path, f"block '{name}' ({type_name})",
                            skip=("type",))
    if config is None:
        return None
    ok = True

    def report(field, message):
        nonlocal ok
        ok = False
        field_path = path + tuple(field.split(".")) if field else path
        r.problem(field_path, message, key=not r.smap.has(field_path))
    r.run_validate(config, report)
    return Block(name, type_name, cls, config) if ok else None


def _block_class(r: Reading, type_name, path: tuple):
    if not isinstance(type_name, str):
        r.problem(path, f"type must be a string, got {describe(type_name)}", types_hint())
        return None
    try:
        return get_block(type_name)
    except KeyError:
        hint = types_hint(type_name)
        if r.plugins_refused:
            hint += " (the plugins this spec names were not imported)"
        r.problem(path, f"unknown block type '{type_name}'", hint)
        return None


def resolve(r: Reading, name: str, at: Position, path: tuple) -> Block | None:
    """Block for a name used in the pattern/layout; defaults for M * - E; None if unusable
    (reported once per name)."""
    if name in r.blocks:
        return r.blocks[name]
    if name in r.missing:        # reported already
        return None
    default_type = DEFAULT_SYMBOLS.get(name)
    if default_type is None or default_type not in block_types():
        r.problem(path, f"block '{name}' is not defined", _undefined_hint(r, name), at=at)
        r.missing.add(name)
        return None
    cls = get_block(default_type)
    try:
        config = cls.Config()
    except Exception as e:
        r.problem(path, f"default block '{name}' ({default_type}) cannot be built: {e}", at=at)
        return None
    errors = []
    r.run_validate(config, lambda field, msg: errors.append(f"{field}: {msg}" if field else msg))
    for message in errors:
        r.problem(path, f"default block '{name}' ({default_type}) is invalid: {message}",
                  f"define '{name}' under blocks: to set its fields", at=at)
    block = Block(name, default_type, cls, config) if not errors else None
    r.blocks[name] = block
    return block


def check_kind(r: Reading, name: str, kind: str, path: tuple) -> bool:
    """``name`` resolves to a block of ``kind`` ("mixer" or "ffn"), for the layout's lists."""
    block = resolve(r, name, r.smap.key(path), path)
    if block is None:
        return False
    actual = getattr(block.cls, "kind", "mixer")
    if actual != kind:
        what = "an FFN block" if actual == "ffn" else "a sequence mixer"
        where = "mix lists sequence mixers" if kind == "mixer" else "ffn lists FFN blocks"
        r.problem(path, f"'{name}' ({block.type}) is {what}, but {where}", key=kind == "mixer")
        return False
    return True


def _undefined_hint(r: Reading, name: str) -> str:
    defined = r.defined
    default_type = DEFAULT_SYMBOLS.get(name)
    if default_type is not None:
        listing = (f"'{name}' defaults to type '{default_type}', which is not registered; "
                   f"registered types: {', '.join(block_types()) or 'none'}")
    else:
        listing = ("defined blocks: " + (", ".join(defined) or "none") + "; defaults: "
                   + ", ".join(f"{s} ({t})" for s, t in DEFAULT_SYMBOLS.items()))
    if name == "/":
        return f"Megatron's '/' (multi-token prediction) separator is not supported ({listing})"
    if len(name) > 1 and all(c in defined or c in DEFAULT_SYMBOLS for c in name):
        return (f"a list entry is one block name; for a row of symbols use a pattern string: "
                f"pattern: \"{name}\"")
    return with_suggestion(name, defined + list(DEFAULT_SYMBOLS), listing)


def types_hint(wrong: str | None = None) -> str:
    listing = "registered types: " + (", ".join(block_types()) or "none")
    close = did_you_mean(wrong, block_types()) if wrong else ""
    return f"{close} {listing}" if close else listing


def block_name_problem(name) -> str:
    if not isinstance(name, str) or not name:
        return f"a block name must be a non-empty string, got {describe(name)}"
    bad = [c for c in name if c.isspace() or c in "()[]|"]
    if bad:
        return f"block name '{name}' contains '{bad[0]}', which the pattern syntax reserves"
    if len(name) == 1 and name in RESERVED:
        return f"block name '{name}' is reserved in patterns (digits are repeat counts)"
    return ""
