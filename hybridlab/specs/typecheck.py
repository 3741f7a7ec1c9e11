"""Type checking of YAML values against dataclass annotations.

Shared by the model-spec and search-spec readers, so both accept the same values and word a
mismatch the same way: ``convert(value, hint)`` returns the value as the annotated type or raises
``Mismatch`` ("expected an integer, got string 'x'"). ``describe(value)`` is how a problem shows
a value; ``is_int`` / ``is_number`` / ``number`` are the checks both readers make by hand.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from typing import Any

from hybridlab.specs.problems import did_you_mean

# -- type checking of config values against dataclass annotations ----------------------------

class Mismatch(Exception):
    """A value that does not fit a field's annotation; ``at`` is the path inside the value."""

    def __init__(self, expected: str, got: str, at: tuple = (), hint: str = ""):
        super().__init__(expected)
        self.expected, self.got, self.at, self.hint = expected, got, at, hint

    @property
    def message(self) -> str:
        return f"expected {self.expected}, got {self.got}"


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")   # 1e-5: a string to YAML 1.1


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float (not a bool); an int beyond any float is not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def number(value):
    """Numbers as YAML gives them, plus exponent text like 5.0e7 (a string to YAML 1.1)."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


def convert(value, hint):
    """Check ``value`` against annotation ``hint``; return it converted (int -> float, list ->
    tuple where the field says so). Raises Mismatch. Unknown annotations accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option)
            except Mismatch:
                pass
        raise Mismatch(describe_type(hint), describe(value))
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        choices = [str(a) for a in args]
        raise Mismatch(describe_type(hint), describe(value),
                       hint=did_you_mean(str(value), choices) if isinstance(value, str) else "")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise Mismatch("true or false", describe(value))
    if hint is int:
        if is_int(value):
            return value
        raise Mismatch("an integer", describe(value))
    if hint is float:
        number = None
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            number = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:           # an int beyond any float
                number = math.inf
        if number is None:
            raise Mismatch("a number", describe(value))
        if not math.isfinite(number):       # .nan, .inf, 1.0e999
            raise Mismatch("a finite number", describe(value))
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise Mismatch("a string", describe(value))
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise Mismatch(describe_type(hint), describe(value))
        items = [_convert_item(v, _item_hint(hint, args, i, len(value)), i)
                 for i, v in enumerate(value)]
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise Mismatch(f"a list of {len(args)} items", f"{len(value)} items")
        return tuple(items) if tuple in (hint, origin) else items
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise Mismatch("a mapping", describe(value))
        return value
    return value


def _item_hint(hint, args, i: int, n: int):
    if not args:
        return Any
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return args[i] if i < len(args) else Any


def _convert_item(value, hint, i: int):
    try:
        return convert(value, hint)
    except Mismatch as m:
        raise Mismatch(m.expected, m.got, (i,) + m.at, m.hint) from None


def describe_type(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
              list: "a list", tuple: "a list", dict: "a mapping", type(None): "null"}
    if hint in simple:
        return simple[hint]
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(describe_type(a) for a in args)
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        if abs(value) >= 10 ** 30:         # don't print (or fail to print) hundreds of digits
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def init_fields(cls) -> dict[str, dataclasses.Field]:
    return dict(_init_fields(cls))


@functools.lru_cache(maxsize=1024)      # asked once per layer and override: keep it cheap
def _init_fields(cls) -> tuple:
    return tuple((f.name, f) for f in dataclasses.fields(cls) if f.init)


def is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def type_hints(cls) -> dict[str, Any]:
    """Resolved annotations; a Config whose annotations cannot be resolved is not type-checked."""
    return dict(_type_hints(cls))


@functools.lru_cache(maxsize=1024)      # get_type_hints compiles every string annotation
def _type_hints(cls) -> tuple:
    try:
        return tuple(typing.get_type_hints(cls).items())
    except Exception:
        return ()
