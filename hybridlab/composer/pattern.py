"""Pattern strings: ``"(M- ME M- ME *- ME M- ME) x 2"`` -> one block name per layer.

Grammar (whitespace is ignored everywhere)::

    pattern := item*
    item    := SYMBOL              one-character block name, e.g. M * - E
             | "[" NAME "]"        a block name of any length, e.g. [swa]
             | "|"                 pipeline-stage boundary (kept as LayerSpec.stage)
             | "(" pattern ")" [ "x" N ]   a group, repeated N >= 1 times (default once)

Reserved characters, never symbols: ``( ) [ ] |``, digits and whitespace. A block named ``x``
cannot directly follow a group, since ``) x`` starts a repeat.

Errors carry the character offset of the offending symbol so the loader can point at its column.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from hybridlab.specs.limits import MAX_LAYERS, MAX_PATTERN_DEPTH

RESERVED = set("()[]|0123456789")
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")   # a repeat count; sign and decimals read to report them
_MAX_COUNT_DIGITS = 9   # a longer repeat count is over MAX_LAYERS anyway (and int() of it is slow)


@dataclass
class PatternError(Exception):
    message: str
    offset: int            # character index in the pattern string
    hint: str = ""


@dataclass(frozen=True)
class Slot:
    """One layer of an expanded pattern."""
    name: str
    stage: int
    offset: int            # where the symbol is written (first occurrence, for error messages)


# -- syntax tree ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Symbol:
    name: str
    offset: int


@dataclass(frozen=True)
class StageBreak:
    offset: int


@dataclass(frozen=True)
class _Group:
    items: tuple
    count: int
    offset: int


def format_name(name: str) -> str:
    """How a block name is written in a pattern string: ``M`` or ``[swa]``."""
    return name if len(name) == 1 else f"[{name}]"


def parse_pattern(text: str) -> list[Symbol | StageBreak]:
    """Pattern string -> flat list of symbols and stage breaks, groups repeated out.

    Raises PatternError for bad syntax or a pattern longer than MAX_LAYERS."""
    parser = _Parser(text)
    items = parser.sequence(depth=0)
    size = _expanded_size(items)
    if size > MAX_LAYERS:
        raise PatternError(f"pattern expands to {size} entries; the limit is {MAX_LAYERS}", 0,
                           "check the repeat counts")
    flat: list = []
    _expand(items, flat)
    return flat


def expand_pattern(text: str) -> list[Slot]:
    """Pattern string -> one Slot per layer, with stage numbers. Raises PatternError."""
    return assign_stages(parse_pattern(text))


def assign_stages(flat: list) -> list[Slot]:
    """Number the stages between '|' marks; an empty stage (||, or '|' at an end) is an error."""
    slots: list[Slot] = []
    stage = 0
    last_break = None
    for item in flat:
        if isinstance(item, StageBreak):
            if not slots or last_break is not None:
                where = "at the start of the pattern" if not slots else "right after another '|'"
                raise PatternError(f"empty pipeline stage: '|' {where}", item.offset,
                                   "put '|' only between layers")
            stage += 1
            last_break = item
        else:
            slots.append(Slot(item.name, stage, item.offset))
            last_break = None
    if last_break is not None:
        raise PatternError("empty pipeline stage: '|' at the end of the pattern",
                           last_break.offset, "put '|' only between layers")
    return slots


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def sequence(self, depth: int) -> tuple:
        items = []
        while True:
            self._skip_space()
            if self.pos >= len(self.text):
                return tuple(items)
            if len(items) > MAX_LAYERS:     # each item expands to at least one entry
                raise PatternError(f"pattern has more than {MAX_LAYERS} entries; the limit is "
                                   f"{MAX_LAYERS}", 0, "check the repeat counts")
            ch = self.text[self.pos]
            if ch == ")":
                if depth == 0:
                    raise PatternError("unbalanced parentheses: ')' has no matching '('", self.pos)
                return tuple(items)
            if ch == "(":
                items.append(self._group(depth))
            elif ch == "[":
                items.append(self._long_name())
            elif ch == "]":
                raise PatternError("']' has no matching '['", self.pos)
            elif ch == "|":
                items.append(StageBreak(self.pos))
                self.pos += 1
            elif ch.isdigit():
                raise PatternError(f"unexpected number '{ch}'", self.pos,
                                   "a repeat count follows a group: (M-) x 2")
            else:
                items.append(Symbol(ch, self.pos))
                self.pos += 1

    def _group(self, depth: int) -> _Group:
        start = self.pos
        if depth >= MAX_PATTERN_DEPTH:
            raise PatternError(f"groups are nested more than {MAX_PATTERN_DEPTH} deep", start,
                               "a pattern needs a few levels of ( ) at most")
        self.pos += 1
        inner = self.sequence(depth + 1)
        if self.pos >= len(self.text):
            raise PatternError("unbalanced parentheses: '(' is never closed", start,
                               "add the missing ')'")
        self.pos += 1                       # the ')'
        if not inner:
            raise PatternError("empty group '()'", start)
        return _Group(inner, self._repeat_count(), start)

    def _repeat_count(self) -> int:
        save = self.pos
        self._skip_space()
        if self.pos >= len(self.text) or self.text[self.pos] not in "x×":
            self.pos = save
            return 1
        x_at = self.pos
        self.pos += 1
        self._skip_space()
        start = self.pos
        match = _NUMBER.match(self.text, self.pos)
        number = match.group(0) if match else ""
        self.pos += len(number)
        if not number:
            raise PatternError("expected a repeat count after 'x'", x_at, "write (M-) x 4")
        if len(number.lstrip("+-").split(".")[0]) > _MAX_COUNT_DIGITS:
            raise PatternError(f"repeat count has {len(number)} digits; a pattern has at most "
                               f"{MAX_LAYERS} layers", start, "check the repeat counts")
        try:
            count = int(number)
        except ValueError:
            raise PatternError(f"repeat count must be a whole number, got '{number}'",
                               start) from None
        if count < 1:
            raise PatternError(f"repeat count must be at least 1, got {count}", start)
        return count

    def _long_name(self) -> Symbol:
        start = self.pos
        end = self.text.find("]", start)
        if end < 0:
            raise PatternError("'[' is never closed", start, "write long block names as [name]")
        name = self.text[start + 1:end].strip()
        if not name:
            raise PatternError("empty block name '[]'", start)
        self.pos = end + 1
        return Symbol(name, start + 1 + self.text[start + 1:end].index(name[0]))

    def _skip_space(self):
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1


def _expanded_size(items) -> int:
    total = 0
    for item in items:
        if isinstance(item, _Group):
            total += item.count * _expanded_size(item.items)
        else:
            total += 1
    return total


def _expand(items, out: list) -> None:
    for item in items:
        if isinstance(item, _Group):
            for _ in range(item.count):
                _expand(item.items, out)
        else:
            out.append(item)
