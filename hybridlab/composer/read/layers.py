"""Which block each layer is: ``pattern:`` (a pattern string or a list of block names) or
``layout:`` (ratios, ``read.layout``), then one ``LayerSpec`` per name."""
from __future__ import annotations

import re
from dataclasses import dataclass

from hybridlab.composer.pattern import PatternError, Symbol, assign_stages, parse_pattern
from hybridlab.composer.read.blocks import DEFAULT_SYMBOLS, resolve
from hybridlab.composer.read.context import Reading
from hybridlab.composer.read.layout import read_layout
from hybridlab.composer.spec import LayerSpec
from hybridlab.specs.limits import MAX_LAYERS
from hybridlab.specs.typecheck import describe

_BRACKETED = re.compile(r"\[[^\]]*\]")      # a long name in a pattern string: [swa]
_MAX_COVERED = 100_000


@dataclass
class Slot:
    """One layer's block name and pipeline stage."""
    name: str
    stage: int


def read_layer_names(r: Reading, top: dict) -> list[Slot] | None:
    has_pattern, has_layout = "pattern" in top, "layout" in top
    if has_pattern and has_layout:
        r.problem(("layout",), "give either 'pattern' or 'layout', not both",
                  "pattern lists the layers; layout derives them from ratios", key=True)
        return None
    if has_pattern:
        return _read_pattern(r, top["pattern"])
    if has_layout:
        names = read_layout(r, top["layout"])
        return None if names is None else [Slot(name, 0) for name in names]
    r.problem((), "missing 'pattern' (or 'layout')",
              "pattern: \"(M-M-M*-) x 4\", or layout: {layers: 12, mix: {M: 3, \"*\": 1}}",
              at=r.start_of(()))
    return None


def make_layers(r: Reading, slots: list[Slot] | None) -> list[LayerSpec] | None:
    """One LayerSpec per slot (None when a name has no valid block: reported already)."""
    if slots is None:
        return None
    layers = []
    for i, slot in enumerate(slots):
        block = r.blocks.get(slot.name)
        if block is None:
            return None
        layers.append(LayerSpec(index=i, name=slot.name, type=block.type, config=block.config,
                                stage=slot.stage))
    return layers


def _read_pattern(r: Reading, pattern) -> list[Slot] | None:
    if isinstance(pattern, list):
        return _read_pattern_list(r, pattern)
    if not isinstance(pattern, str):
        r.problem(("pattern",), f"pattern must be a string or a list of block names, got "
                                f"{describe(pattern)}", 'pattern: "(M-M-M*-) x 4"')
        return None
    if not pattern.strip():
        r.problem(("pattern",), "pattern is empty", 'pattern: "(M-M-M*-) x 4"')
        return None
    try:
        flat = parse_pattern(pattern)
    except PatternError as e:
        r.problem(("pattern",), e.message, e.hint, at=r.smap.char(("pattern",), e.offset))
        return None
    ok = True
    unbracketed = None          # found only when a symbol is unknown (it scans the string)
    reported: set = set()
    for item in flat:
        if not isinstance(item, Symbol):
            continue
        if item.name in r.blocks or item.name in r.missing:     # known (or reported):
            ok = ok and r.blocks.get(item.name) is not None     # no position needed
            continue
        if item.name in DEFAULT_SYMBOLS:
            span = None
        else:
            unbracketed = _unbracketed_names(r, pattern) if unbracketed is None else unbracketed
            span = unbracketed.get(item.offset)
        if span:
            ok = False              # e.g. "M swa M": one problem for 'swa', not for s, w, a
            if span not in reported:
                reported.add(span)
                r.problem(("pattern",), f"block name '{span[2]}' must be written in "
                                        f"brackets in a pattern string: [{span[2]}]",
                          "each character of a pattern string is one block name",
                          at=r.smap.char(("pattern",), span[0]))
            continue
        at = r.smap.char(("pattern",), item.offset)
        ok = resolve(r, item.name, at, ("pattern",)) is not None and ok
    try:
        slots = assign_stages(flat)
    except PatternError as e:
        r.problem(("pattern",), e.message, e.hint, at=r.smap.char(("pattern",), e.offset))
        return None
    return [Slot(s.name, s.stage) for s in slots] if ok else None


def _unbracketed_names(r: Reading, pattern: str) -> dict[int, tuple[int, int, str]]:
    """Offset -> (start, end, name) of the defined multi-character name written there
    without [ ] (the first such name, in definition order). Bracketed text is skipped, and
    at most ``_MAX_COVERED`` offsets are recorded: this only words a problem already found."""
    outside = _BRACKETED.sub(lambda m: " " * len(m.group(0)), pattern)
    cover: dict[int, tuple[int, int, str]] = {}
    for name in r.defined:
        if len(name) < 2:
            continue
        for m in re.finditer(re.escape(name), outside):
            span = (m.start(), m.end(), name)
            for offset in range(m.start(), m.end()):
                cover.setdefault(offset, span)
            if len(cover) > _MAX_COVERED:
                return cover
    return cover


def _read_pattern_list(r: Reading, items: list) -> list[Slot] | None:
    if not items:
        r.problem(("pattern",), "pattern is empty", "pattern: [mamba, mamba, attn]")
        return None
    n_layers = sum(1 for item in items if item != "|")
    if n_layers > MAX_LAYERS:
        r.problem(("pattern",), f"pattern lists {n_layers} layers; the limit is {MAX_LAYERS}",
                  "write repeats as groups in a pattern string: (M-) x 24")
        return None
    slots, stage, ok = [], 0, True
    for i, item in enumerate(items):
        path = ("pattern", i)
        if not isinstance(item, str) or not item.strip():
            r.problem(path, f"a pattern entry is a block name, got {describe(item)}")
            ok = False
            continue
        if item == "|":
            if not slots or (i + 1 < len(items) and items[i + 1] == "|") or i + 1 == len(items):
                r.problem(path, "empty pipeline stage", "put '|' only between layers")
                ok = False
            stage += 1
            continue
        ok = resolve(r, item, r.smap.value(path), path) is not None and ok
        slots.append(Slot(item, stage))
    return slots if ok else None
