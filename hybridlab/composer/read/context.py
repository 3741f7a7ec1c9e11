"""One model spec being read: where its fields are, the problems found so far, and what the
earlier steps learned (``d_model``, the blocks), with the checks every step uses: keys, typed
configs (a mapping -> a Config dataclass) and a Config's own ``validate``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridlab.errors import SpecError
from hybridlab.specs.problems import Problems, with_suggestion
from hybridlab.specs.source import Position, SourceMap
from hybridlab.specs.typecheck import (Mismatch, convert, describe, init_fields, is_required,
                                       type_hints)


@dataclass
class Block:
    """A resolved block name: its type, class and validated config."""
    name: str
    type: str
    cls: type
    config: Any


class Reading:
    def __init__(self, smap: SourceMap, source: str | None, path: Path | None, *,
                 from_text: bool = True, allow_plugins: bool = False):
        self.smap = smap
        self.source = source                          # becomes ModelSpec.source
        self.path = path                              # the file, when read from one
        self.from_text = from_text
        self.allow_plugins = allow_plugins
        self.problems = Problems(smap)
        self.d_model: int | None = None
        self.plugins_refused = False                  # plugins named but not imported
        self.blocks: dict[str, Block | None] = {}     # None: defined but invalid
        self.missing: set[str] = set()                # used but never defined (reported once)
        self.defined: list[str] = []                  # names written under `blocks:`

    # -- reporting -------------------------------------------------------------------------------

    def problem(self, path: tuple, message: str, hint: str = "", *, at: Position | None = None,
                key: bool = False) -> None:
        self.problems.add(path, message, hint, at=at, key=key)

    def type_problem(self, path: tuple, mismatch: Mismatch) -> None:
        self.problem(path + mismatch.at, mismatch.message, mismatch.hint)

    def unknown_key(self, path: tuple, key, allowed, what: str) -> None:
        listing = "allowed keys: " + ", ".join(allowed) if allowed else f"{what} takes no settings"
        self.problem(path + (key,), f"unknown key '{key}' in {what}",
                     with_suggestion(str(key), allowed, listing), key=True)

    def check_keys(self, path: tuple, mapping: dict, allowed, what: str) -> None:
        for key in mapping:
            if not isinstance(key, str):
                self.problem(path + (key,), f"keys must be strings, got {describe(key)}",
                             key=True)
            elif key not in allowed:
                self.unknown_key(path, key, list(allowed), what)

    def start_of(self, path: tuple) -> Position:
        """Where to point for something missing: the enclosing value, or line 1 of a file."""
        pos = self.smap.value(path)
        return Position(1, 1) if pos.line == 0 and self.from_text else pos

    def fail(self, path: tuple, message: str, hint: str = ""):
        """Report a problem nothing else can be read past, and stop."""
        self.problem(path, message, hint, at=self.start_of(path))
        raise SpecError(self.problems.items)

    # -- typed configs ---------------------------------------------------------------------------

    def build_config(self, cls, mapping, path: tuple, what: str, skip=()):
        """Mapping -> instance of dataclass ``cls``, type-checked; None (with problems) if not."""
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            self.problem(path, f"{what} must be a mapping, got {describe(mapping)}")
            return None
        fields = init_fields(cls)
        hints = type_hints(cls)
        values, ok = {}, True
        for key, value in mapping.items():
            if key in skip:
                continue
            if not isinstance(key, str) or key not in fields:
                if isinstance(key, str):
                    self.unknown_key(path, key, list(fields), what)
                else:
                    self.problem(path + (key,), f"keys must be strings, got {describe(key)}",
                                 key=True)
                ok = False
                continue
            hint = hints.get(key, Any)
            if dataclasses.is_dataclass(hint) and isinstance(hint, type):
                sub = self.build_config(hint, value, path + (key,), f"{what}.{key}")
                ok = ok and sub is not None
                values[key] = sub
                continue
            try:
                values[key] = convert(value, hint)
            except Mismatch as m:
                self.type_problem(path + (key,), m)
                ok = False
        for field in fields.values():
            if is_required(field) and field.name not in mapping:
                self.problem(path, f"missing required field '{field.name}'", key=True)
                ok = False
        if not ok:
            return None
        try:
            return cls(**values)
        except Exception as e:       # a Config's __post_init__ may reject combinations
            self.problem(path, f"invalid {what}: {e}", key=True)
            return None

    def run_validate(self, config, report) -> None:
        """Call ``config.validate(d_model)``; ``report(field, message)`` for each complaint."""
        if self.d_model is None:
            return
        try:
            complaints = config.validate(self.d_model) or []
        except Exception as e:
            report("", f"validate() failed: {type(e).__name__}: {e}")
            return
        for item in complaints:
            field, message = item if isinstance(item, tuple) and len(item) == 2 else ("", str(item))
            report(str(field or ""), str(message))
