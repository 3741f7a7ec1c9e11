"""Spec loader: YAML file, YAML text or dict -> validated ``ModelSpec``.

This is the edge of the product: everything downstream trusts what it returns. Every problem
found is collected (not just the first) and raised together as one ``SpecError`` whose problems
point at file:line:col of the offending key, value, or pattern symbol.

Steps: read the YAML (bounded: ``limits``) -> check the top-level keys -> ``plugins`` (imported
only with ``allow_plugins``: ``plugins``) -> ``model`` -> ``blocks`` (each entry becomes its
block's ``Config`` dataclass, type-checked, then ``Config.validate(d_model)``) -> ``pattern`` or
``layout`` -> one layer per name -> ``overrides`` (per-layer copies of the Config) -> the sizes
it would build (``sizes``) -> ``ModelSpec``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridlab.blocks.registry import block_types, get_block
from hybridlab.composer.canonical import dump_spec_yaml  # noqa: F401  (re-exported: load/dump pair)
from hybridlab.composer.layout import PLACEMENTS, Layout, LayoutError, expand_layout
from hybridlab.composer.pattern import (RESERVED, PatternError, Symbol, assign_stages,
                                        parse_pattern)
from hybridlab.composer.plugins import read_plugins
from hybridlab.composer.sizes import check_sizes
from hybridlab.composer.spec import LayerSpec, ModelConfig, ModelSpec
from hybridlab.errors import SpecError
from hybridlab.specs.limits import MAX_BLOCKS, MAX_LAYERS, MAX_OVERRIDES
from hybridlab.specs.problems import Problems, did_you_mean, join_ints, plural, with_suggestion
from hybridlab.specs.source import Position, SourceMap, SpecKind, parse_yaml, read_text_file
from hybridlab.specs.typecheck import (Mismatch, convert, describe, init_fields, is_int,
                                       is_number, is_required, type_hints)

#: Pattern symbols that work without a `blocks` entry, each with its Config defaults.
DEFAULT_SYMBOLS = {"M": "mamba2", "*": "attention", "-": "mlp", "E": "moe"}
TOP_KEYS = ("name", "model", "blocks", "pattern", "layout", "overrides", "plugins")
LAYOUT_KEYS = ("layers", "mix", "place", "ffn")
OVERRIDE_KEYS = ("at", "set")
NORMS = ("rmsnorm", "layernorm")
#: a file read as a model spec must have one of these top-level keys, or it is reported as
#: "not a hybridlab model spec" without quoting it (``name`` alone is too common elsewhere)
MODEL_SPEC = SpecKind("model spec", ("model", "blocks", "pattern", "layout", "overrides",
                                     "plugins"),
                      "a model spec is a YAML mapping with model: and pattern: (or layout:); "
                      "see docs/spec-format.md")


def load_spec(spec, source: str | None = None, *, allow_plugins: bool = False) -> ModelSpec:
    """Path, YAML text, dict or ModelSpec -> validated ``ModelSpec``. Raises ``SpecError``.

    ``source`` names the input in error messages (and becomes ``ModelSpec.source``); it defaults
    to the path, or ``<text>`` / ``<dict>``. ``allow_plugins``: import the modules the spec lists
    under ``plugins:`` (this runs their code); by default a spec naming a module that is not
    imported already is refused (``hybridlab.composer.plugins``).
    """
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        file = source or "<dict>"
        return _SpecReader(copy.deepcopy(spec), SourceMap.empty(file), source, None,
                           from_text=False, allow_plugins=allow_plugins).read()
    if isinstance(spec, (str, Path)) and not _looks_like_yaml_text(spec):
        file = source or str(spec)
        text = read_text_file(spec, shown_as=file)
        data, smap = parse_yaml(text, file, kind=MODEL_SPEC)
        return _SpecReader(data, smap, file, Path(spec), allow_plugins=allow_plugins).read()
    if isinstance(spec, str):
        file = source or "<text>"
        data, smap = parse_yaml(spec, file)
        return _SpecReader(data, smap, source, None, allow_plugins=allow_plugins).read()
    raise TypeError(f"load_spec expects a path, YAML text, dict or ModelSpec, "
                    f"got {type(spec).__name__}")


def _looks_like_yaml_text(spec) -> bool:
    if isinstance(spec, Path):
        return False
    return "\n" in spec or (":" in spec and not os.path.exists(spec))


@dataclass
class _Block:
    """A resolved block name: its type, class and validated config (None if invalid)."""
    name: str
    type: str
    cls: type
    config: Any


@dataclass
class _Slot:
    name: str
    stage: int


class _SpecReader:
    """Reads one spec, collecting problems; ``read()`` returns the ModelSpec or raises."""

    def __init__(self, data, smap: SourceMap, source: str | None, path: Path | None,
                 from_text: bool = True, allow_plugins: bool = False):
        self.data = data
        self.allow_plugins = allow_plugins
        self.from_text = from_text
        self.smap = smap
        self.source = source
        self.path = path
        self.problems = Problems(smap)
        self.blocks: dict[str, _Block | None] = {}   # None: defined but invalid
        self.missing: set[str] = set()               # used but never defined (reported once)
        self.defined: list[str] = []                 # names written under `blocks:`
        self.d_model: int | None = None
        self.plugins_refused = False                 # plugins named but not imported

    # -- reporting ---------------------------------------------------------------------------

    def problem(self, path: tuple, message: str, hint: str = "", *, at: Position | None = None,
                key: bool = False) -> None:
        self.problems.add(path, message, hint, at=at, key=key)

    def type_problem(self, path: tuple, mismatch: Mismatch) -> None:
        full = path + mismatch.at
        self.problem(full, mismatch.message, mismatch.hint)

    def unknown_key(self, path: tuple, key, allowed, what: str) -> None:
        listing = "allowed keys: " + ", ".join(allowed) if allowed else f"{what} takes no settings"
        self.problem(path + (key,), f"unknown key '{key}' in {what}",
                     with_suggestion(str(key), allowed, listing), key=True)

    # -- the steps -----------------------------------------------------------------------------

    def read(self) -> ModelSpec:
        top = self.data
        if top is None:
            self.fail((), "the spec is empty",
                      "a spec is a mapping with name, model, blocks and pattern (or layout)")
        if not isinstance(top, dict):
            self.fail((), f"the top level of a spec must be a mapping, got {describe(top)}",
                      "a spec is a mapping with name, model, blocks and pattern (or layout)")
        self.problems.duplicates(lambda key: (
            f"duplicate key '{key}'",
            "YAML would silently keep only the last one; remove or rename one"))
        self.check_keys((), top, TOP_KEYS, "the spec")
        plugins = self.import_plugins(top.get("plugins"))
        name = self.read_name(top)
        model = self.read_model(top)
        self.read_blocks(top.get("blocks"))
        slots = self.read_layer_names(top)
        layers = self.apply_overrides(top.get("overrides"), self.make_layers(slots))
        if not self.problems and layers is not None:
            self.check_kv_sharing(layers)
        if not self.problems and layers is not None and model is not None:
            for size in check_sizes(model, layers):
                self.problem(size.path, size.message, size.hint, key=True)
        if self.problems or model is None or layers is None:
            raise SpecError(self.problems.sorted())
        return ModelSpec(name=name, model=model, layers=tuple(layers), plugins=plugins,
                         source=self.source, raw=top)

    def fail(self, path: tuple, message: str, hint: str = ""):
        self.problem(path, message, hint, at=self.start_of(path))
        raise SpecError(self.problems.items)

    def check_keys(self, path: tuple, mapping: dict, allowed, what: str) -> None:
        for key in mapping:
            if not isinstance(key, str):
                self.problem(path + (key,), f"keys must be strings, got {describe(key)}",
                             key=True)
            elif key not in allowed:
                self.unknown_key(path, key, list(allowed), what)

    def import_plugins(self, plugins) -> tuple[str, ...]:
        spec_dir = self.path.resolve().parent if self.path is not None else None
        names = read_plugins(plugins, self.problem, allow=self.allow_plugins, spec_dir=spec_dir)
        self.plugins_refused = not self.allow_plugins and any(sys.modules.get(m) is None
                                                              for m in names)
        return names

    def read_name(self, top: dict) -> str:
        default = self.path.stem if self.path is not None else "model"
        name = top.get("name", default)
        if not isinstance(name, str) or not name.strip():
            self.problem(("name",), f"name must be a non-empty string, got {describe(name)}")
            return default
        return name

    def read_model(self, top: dict) -> ModelConfig | None:
        if "model" not in top:
            self.problem((), "missing required key 'model'",
                         "model: {d_model: 256, vocab_size: 256}", at=self.start_of(()))
            return None
        raw = top["model"]
        if isinstance(raw, dict) and is_int(raw.get("d_model")) and raw["d_model"] > 0:
            self.d_model = raw["d_model"]    # blocks can be validated despite other model errors
        model = self.build_config(ModelConfig, raw, ("model",), "model")
        if model is None:
            return None
        checks = [("d_model", model.d_model > 0, "must be > 0"),
                  ("vocab_size", model.vocab_size > 0, "must be > 0"),
                  ("norm", model.norm in NORMS, "must be one of " + ", ".join(NORMS)),
                  ("norm_eps", model.norm_eps > 0, "must be > 0"),
                  ("meta_tokens", model.meta_tokens >= 0, "must be >= 0"),
                  ("init.std", model.init.std > 0, "must be > 0")]
        bad = False
        for field, ok, message in checks:
            if not ok:
                path = ("model",) + tuple(field.split("."))
                hint = did_you_mean(model.norm, NORMS) if field == "norm" else ""
                self.problem(path, message, hint)
                bad = True
        return None if bad else model

    def start_of(self, path: tuple) -> Position:
        """Where to point for something missing: the enclosing value, or line 1 of a file."""
        pos = self.smap.value(path)
        return Position(1, 1) if pos.line == 0 and self.from_text else pos

    # -- typed configs -------------------------------------------------------------------------

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

    # -- blocks --------------------------------------------------------------------------------

    def read_blocks(self, blocks) -> None:
        if blocks is None:
            return
        if not isinstance(blocks, dict):
            hint = "blocks: {M: {type: mamba2}, \"*\": {type: attention}}"
            if isinstance(blocks, list):
                hint = "blocks is a mapping, not a list; note that '- ' starts a list item " \
                       "in YAML, so write the MLP symbol quoted: \"-\": {type: mlp}"
            self.problem(("blocks",), f"blocks must be a mapping of name -> block, got "
                                      f"{describe(blocks)}", hint)
            return
        if len(blocks) > MAX_BLOCKS:
            self.problem(("blocks",), f"{len(blocks)} blocks are defined; the limit is "
                                      f"{MAX_BLOCKS}", "use overrides for per-layer changes",
                         key=True)
            return
        for name, entry in blocks.items():
            path = ("blocks", name)
            problem = block_name_problem(name)
            if problem:
                self.problem(path, problem, key=True)
                continue
            self.defined.append(name)
            self.blocks[name] = self.read_block(name, entry, path)

    def read_block(self, name: str, entry, path: tuple) -> _Block | None:
        if not isinstance(entry, dict):
            self.problem(path, f"a block must be a mapping, got {describe(entry)}",
                         f"{name}: {{type: mamba2, d_state: 16}}")
            return None
        if "type" not in entry:
            self.problem(path, "missing required key 'type'", types_hint(), key=True)
            return None
        type_name = entry["type"]
        cls = self.block_class(type_name, path + ("type",))
        if cls is None:
            return None
        config = self.build_config(cls.Config, entry, path, f"block '{name}' ({type_name})",
                                   skip=("type",))
        if config is None:
            return None
        ok = True

        def report(field, message):
            nonlocal ok
            ok = False
            field_path = path + tuple(field.split(".")) if field else path
            self.problem(field_path, message, key=not self.smap.has(field_path))
        self.run_validate(config, report)
        return _Block(name, type_name, cls, config) if ok else None

    def block_class(self, type_name, path: tuple):
        if not isinstance(type_name, str):
            self.problem(path, f"type must be a string, got {describe(type_name)}", types_hint())
            return None
        try:
            return get_block(type_name)
        except KeyError:
            hint = types_hint(type_name)
            if self.plugins_refused:
                hint += " (the plugins this spec names were not imported)"
            self.problem(path, f"unknown block type '{type_name}'", hint)
            return None

    def resolve(self, name: str, at: Position, path: tuple) -> _Block | None:
        """Block for a name used in the pattern/layout; defaults for M * - E; None if unusable."""
        if name in self.blocks:
            return self.blocks[name]
        if name in self.missing:        # reported already
            return None
        default_type = DEFAULT_SYMBOLS.get(name)
        if default_type is None or default_type not in block_types():
            self.problem(path, f"block '{name}' is not defined", self.undefined_hint(name),
                         at=at)
            self.missing.add(name)
            return None
        cls = get_block(default_type)
        try:
            config = cls.Config()
        except Exception as e:
            self.problem(path, f"default block '{name}' ({default_type}) cannot be built: {e}",
                         at=at)
            return None
        errors = []
        self.run_validate(config, lambda field, msg: errors.append(f"{field}: {msg}" if field
                                                                   else msg))
        for message in errors:
            self.problem(path, f"default block '{name}' ({default_type}) is invalid: {message}",
                         f"define '{name}' under blocks: to set its fields", at=at)
        block = _Block(name, default_type, cls, config) if not errors else None
        self.blocks[name] = block
        return block

    def undefined_hint(self, name: str) -> str:
        defined = self.defined
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

    # -- pattern / layout ---------------------------------------------------------------------

    def read_layer_names(self, top: dict) -> list[_Slot] | None:
        has_pattern, has_layout = "pattern" in top, "layout" in top
        if has_pattern and has_layout:
            self.problem(("layout",), "give either 'pattern' or 'layout', not both",
                         "pattern lists the layers; layout derives them from ratios", key=True)
            return None
        if has_pattern:
            return self.read_pattern(top["pattern"])
        if has_layout:
            return self.read_layout(top["layout"])
        self.problem((), "missing 'pattern' (or 'layout')",
                     "pattern: \"(M-M-M*-) x 4\", or layout: {layers: 12, mix: {M: 3, \"*\": 1}}",
                     at=self.start_of(()))
        return None

    def read_pattern(self, pattern) -> list[_Slot] | None:
        if isinstance(pattern, list):
            return self.read_pattern_list(pattern)
        if not isinstance(pattern, str):
            self.problem(("pattern",), f"pattern must be a string or a list of block names, got "
                                       f"{describe(pattern)}", 'pattern: "(M-M-M*-) x 4"')
            return None
        if not pattern.strip():
            self.problem(("pattern",), "pattern is empty", 'pattern: "(M-M-M*-) x 4"')
            return None
        try:
            flat = parse_pattern(pattern)
        except PatternError as e:
            self.problem(("pattern",), e.message, e.hint, at=self.smap.char(("pattern",), e.offset))
            return None
        ok = True
        unbracketed = None          # found only when a symbol is unknown (it scans the string)
        reported: set = set()
        for item in flat:
            if not isinstance(item, Symbol):
                continue
            if item.name in self.blocks or item.name in self.missing:   # known (or reported):
                ok = ok and self.blocks.get(item.name) is not None        # no position needed
                continue
            if item.name in DEFAULT_SYMBOLS:
                span = None
            else:
                unbracketed = self.unbracketed_names(pattern) if unbracketed is None else unbracketed
                span = unbracketed.get(item.offset)
            if span:
                ok = False              # e.g. "M swa M": one problem for 'swa', not for s, w, a
                if span not in reported:
                    reported.add(span)
                    self.problem(("pattern",), f"block name '{span[2]}' must be written in "
                                               f"brackets in a pattern string: [{span[2]}]",
                                 "each character of a pattern string is one block name",
                                 at=self.smap.char(("pattern",), span[0]))
                continue
            at = self.smap.char(("pattern",), item.offset)
            ok = self.resolve(item.name, at, ("pattern",)) is not None and ok
        try:
            slots = assign_stages(flat)
        except PatternError as e:
            self.problem(("pattern",), e.message, e.hint, at=self.smap.char(("pattern",), e.offset))
            return None
        return [_Slot(s.name, s.stage) for s in slots] if ok else None

    def unbracketed_names(self, pattern: str) -> dict[int, tuple[int, int, str]]:
        """Offset -> (start, end, name) of the defined multi-character name written there
        without [ ] (the first such name, in definition order). Bracketed text is skipped, and
        at most ``_MAX_COVERED`` offsets are recorded: this only words a problem already found."""
        outside = _BRACKETED.sub(lambda m: " " * len(m.group(0)), pattern)
        cover: dict[int, tuple[int, int, str]] = {}
        for name in self.defined:
            if len(name) < 2:
                continue
            for m in re.finditer(re.escape(name), outside):
                span = (m.start(), m.end(), name)
                for offset in range(m.start(), m.end()):
                    cover.setdefault(offset, span)
                if len(cover) > _MAX_COVERED:
                    return cover
        return cover

    def read_pattern_list(self, items: list) -> list[_Slot] | None:
        if not items:
            self.problem(("pattern",), "pattern is empty", "pattern: [mamba, mamba, attn]")
            return None
        n_layers = sum(1 for item in items if item != "|")
        if n_layers > MAX_LAYERS:
            self.problem(("pattern",), f"pattern lists {n_layers} layers; the limit is "
                                       f"{MAX_LAYERS}", "write repeats as groups in a pattern "
                                                        "string: (M-) x 24")
            return None
        slots, stage, ok = [], 0, True
        for i, item in enumerate(items):
            path = ("pattern", i)
            if not isinstance(item, str) or not item.strip():
                self.problem(path, f"a pattern entry is a block name, got {describe(item)}")
                ok = False
                continue
            if item == "|":
                if not slots or (i + 1 < len(items) and items[i + 1] == "|") or i + 1 == len(items):
                    self.problem(path, "empty pipeline stage", "put '|' only between layers")
                    ok = False
                stage += 1
                continue
            ok = self.resolve(item, self.smap.value(path), path) is not None and ok
            slots.append(_Slot(item, stage))
        return slots if ok else None

    def read_layout(self, layout) -> list[_Slot] | None:
        if not isinstance(layout, dict):
            self.problem(("layout",), f"layout must be a mapping, got {describe(layout)}",
                         "layout: {layers: 12, mix: {M: 3, \"*\": 1}, place: even, ffn: [\"-\"]}")
            return None
        n_before = len(self.problems)
        self.check_keys(("layout",), layout, LAYOUT_KEYS, "layout")
        layers = self.layout_layers(layout)
        mix = self.layout_mix(layout)
        place = self.layout_place(layout.get("place", "even"))
        ffn = self.layout_ffn(layout.get("ffn", []))
        if len(self.problems) > n_before or None in (layers, mix, place, ffn):
            return None
        try:
            names = expand_layout(Layout(layers, mix, place, ffn))
        except LayoutError as e:
            self.problem(("layout",) + e.where, e.message, e.hint)
            return None
        return [_Slot(name, 0) for name in names]

    def layout_layers(self, layout: dict) -> int | None:
        if "layers" not in layout:
            self.problem(("layout",), "missing required key 'layers'", "layers: 12", key=True)
            return None
        value = layout["layers"]
        if not is_int(value):
            self.problem(("layout", "layers"), f"expected an integer, got {describe(value)}")
            return None
        if value < 1:
            self.problem(("layout", "layers"), "the layout has no layers: layers must be >= 1")
            return None
        if value > MAX_LAYERS:
            self.problem(("layout", "layers"), f"{value} layers is over the limit of {MAX_LAYERS}")
            return None
        return value

    def layout_mix(self, layout: dict):
        if "mix" not in layout:
            self.problem(("layout",), "missing required key 'mix'", 'mix: {M: 7, "*": 1}', key=True)
            return None
        mix = layout["mix"]
        if not isinstance(mix, dict) or not mix:
            self.problem(("layout", "mix"), "mix must be a non-empty mapping of mixer -> weight",
                         'mix: {M: 7, "*": 1}')
            return None
        out, ok = [], True
        for name, weight in mix.items():
            path = ("layout", "mix", name)
            if not is_number(weight) or weight < 0:
                self.problem(path, f"a weight must be a number >= 0, got {describe(weight)}")
                ok = False
            if not isinstance(name, str):
                self.problem(path, f"a mixer name must be a string, got {describe(name)}",
                             key=True)
                ok = False
                continue
            ok = self.check_kind(name, "mixer", path) and ok
            out.append((name, weight))
        if ok and sum(w for _, w in out) <= 0:
            self.problem(("layout", "mix"), "the layout has no layers: every weight is 0",
                         "give at least one mixer a weight > 0")
            ok = False
        return tuple(out) if ok else None

    def layout_place(self, place):
        if isinstance(place, str):
            if place in PLACEMENTS:
                return place
            self.problem(("layout", "place"), f"unknown placement '{place}'",
                         did_you_mean(place, PLACEMENTS) or
                         "use even, first, last, middle or a list of mixer indices")
            return None
        if isinstance(place, list) and place and all(is_int(i) for i in place):
            return tuple(place)
        self.problem(("layout", "place"), f"place must be even, first, last, middle or a list of "
                                          f"mixer indices, got {describe(place)}")
        return None

    def layout_ffn(self, ffn):
        if not isinstance(ffn, list):
            self.problem(("layout", "ffn"), f"ffn must be a list of FFN block names (or []), got "
                                            f"{describe(ffn)}", 'ffn: ["-"]')
            return None
        ok = True
        for i, name in enumerate(ffn):
            if not isinstance(name, str):
                self.problem(("layout", "ffn", i), f"expected a block name, got {describe(name)}")
                ok = False
                continue
            ok = self.check_kind(name, "ffn", ("layout", "ffn", i)) and ok
        return tuple(ffn) if ok else None

    def check_kind(self, name: str, kind: str, path: tuple) -> bool:
        block = self.resolve(name, self.smap.key(path), path)
        if block is None:
            return False
        actual = getattr(block.cls, "kind", "mixer")
        if actual != kind:
            what = "an FFN block" if actual == "ffn" else "a sequence mixer"
            where = "mix lists sequence mixers" if kind == "mixer" else "ffn lists FFN blocks"
            self.problem(path, f"'{name}' ({block.type}) is {what}, but {where}",
                         key=kind == "mixer")
            return False
        return True

    # -- layers and overrides -----------------------------------------------------------------

    def make_layers(self, slots: list[_Slot] | None) -> list[LayerSpec] | None:
        if slots is None:
            return None
        layers = []
        for i, slot in enumerate(slots):
            block = self.blocks.get(slot.name)
            if block is None:
                return None
            layers.append(LayerSpec(index=i, name=slot.name, type=block.type, config=block.config,
                                    stage=slot.stage))
        return layers

    def apply_overrides(self, overrides, layers: list[LayerSpec] | None) -> list[LayerSpec] | None:
        if overrides is None:
            return layers
        if not isinstance(overrides, list):
            self.problem(("overrides",), f"overrides must be a list, got {describe(overrides)}",
                         "overrides: [{at: [0, 5], set: {window: null}}]")
            return None
        if layers is None:          # no layer list to apply them to (already reported)
            return None
        if self.problems.too_many(("overrides",), overrides, MAX_OVERRIDES, "overrides",
                                  "one override may list many layers under at:", key=True):
            return None
        n_before = len(self.problems)
        set_by: dict[int, dict[str, int]] = {}     # layer -> field -> override that set it last
        for k, entry in enumerate(overrides):
            for index, values in self.read_override(k, entry, layers):
                layer = layers[index]
                try:
                    config = dataclasses.replace(layer.config, **values)
                except Exception as e:
                    self.problem(("overrides", k, "set"), f"layer {index}: invalid settings: {e}")
                    continue
                layers[index] = dataclasses.replace(layer, config=config)
                set_by.setdefault(index, {}).update({name: k for name in values})
        self.validate_overridden(layers, set_by)
        return layers if len(self.problems) == n_before else None

    def read_override(self, k: int, entry, layers: list[LayerSpec]):
        """Yields (layer index, converted values) for one override entry, reporting problems."""
        path = ("overrides", k)
        if not isinstance(entry, dict):
            self.problem(path, f"an override is a mapping {{at: [...], set: {{...}}}}, got "
                               f"{describe(entry)}")
            return
        self.check_keys(path, entry, OVERRIDE_KEYS, "an override")
        for key in OVERRIDE_KEYS:
            if key not in entry:
                self.problem(path, f"missing required key '{key}'", key=True)
        indices = self.override_indices(path, entry.get("at"), len(layers))
        values = entry.get("set")
        if values is not None and (not isinstance(values, dict) or not values):
            self.problem(path + ("set",), "set must be a non-empty mapping of field -> value")
            return
        if not indices or not values:
            return
        per_layer, missing = [], {}
        for index in indices:
            checked = self.override_values(path + ("set",), values, layers[index])
            if checked is None:
                continue
            converted, unknown = checked
            for field in unknown:
                missing.setdefault(field, []).append(index)
            if not unknown:
                per_layer.append((index, converted))
        for field, where in missing.items():
            kinds = sorted({f"'{layers[i].name}': {layers[i].type}" for i in where})
            fields = init_fields(get_block(layers[where[0]].type).Config)
            hint = did_you_mean(field, list(fields)) or "fields: " + ", ".join(fields)
            self.problem(path + ("set", field),
                         f"{plural('layer', where)} {join_ints(where)} ({', '.join(kinds)}) "
                         f"{'has' if len(where) == 1 else 'have'} no field '{field}'", hint,
                         key=True)
        yield from per_layer

    def override_indices(self, path: tuple, at, n_layers: int) -> list[int]:
        if at is None:
            return []
        items = [(at, path + ("at",))] if not isinstance(at, list) else \
            [(v, path + ("at", i)) for i, v in enumerate(at)]
        if not items:
            self.problem(path + ("at",), "at must list at least one layer index")
        out = []
        for value, where in items:
            if not is_int(value):
                self.problem(where, f"a layer index must be an integer, got {describe(value)}")
            elif not 0 <= value < n_layers:
                self.problem(where, f"layer index {value} is out of range: the model has "
                                    f"{n_layers} layers (0..{n_layers - 1})",
                             "indices count every layer of the expanded pattern, FFN layers "
                             "included")
            else:
                out.append(value)
        return sorted(set(out))

    def override_values(self, path: tuple, values: dict, layer: LayerSpec):
        """(converted values, fields the layer's Config lacks), or None after a type problem."""
        cls = type(layer.config)
        fields = init_fields(cls)
        hints = type_hints(cls)
        out, unknown = {}, []
        for key, value in values.items():
            if key == "type":
                self.problem(path + (key,), "an override cannot change the block type",
                             "define another block and use it in the pattern", key=True)
                return None
            if key not in fields:
                unknown.append(key)
                continue
            try:
                out[key] = convert(value, hints.get(key, Any))
            except Mismatch as m:
                self.type_problem(path + (key,), m)
                return None
        return out, unknown

    def check_kv_sharing(self, layers: list[LayerSpec]) -> None:
        """A layer that shares keys and values (``Config.shares_kv``) needs an earlier attention
        layer (``Config.kv_source``) whose heads, head_dim, window and rope match its own."""
        source = None                                    # (index, what it leaves)
        for layer in layers:
            here = layer.config.kv_source(self.d_model)
            field = layer.config.shares_kv()
            if field:
                path = ("blocks", layer.name) + tuple(field.split("."))
                if source is None:
                    self.problem(path, f"layer {layer.index}: no earlier attention layer to share "
                                       "keys and values with",
                                 "put an attention layer (share_kv false) before it")
                else:
                    differ = [f"{k} {here[k]!r} vs {source[1][k]!r}" for k in here if here[k] != source[1][k]]
                    if differ:
                        self.problem(path, f"layer {layer.index} shares the keys and values of layer "
                                           f"{source[0]}, which differ: {', '.join(differ)}",
                                     "give both layers the same n_kv_heads, head_dim, window and rope")
            if here is not None:
                source = (layer.index, here)

    def validate_overridden(self, layers: list[LayerSpec], set_by: dict[int, dict[str, int]]):
        """Validate each overridden layer; blame the override that set the field (or the last)."""
        found: dict[tuple, list[int]] = {}
        for index, fields in sorted(set_by.items()):
            last = max(fields.values())

            def report(field, message, fields=fields, last=last, index=index):
                parts = tuple(field.split(".")) if field else ()
                if parts and parts[0] in fields:
                    where = ("overrides", fields[parts[0]], "set") + parts
                else:
                    where = ("overrides", last, "set")
                named = not field or parts[0] in fields      # the path already names the field
                text = message if named else f"{field}: {message}"
                found.setdefault((where, text), []).append(index)
            self.run_validate(layers[index].config, report)
        for (where, text), indices in found.items():
            self.problem(where, f"{plural('layer', indices)} {join_ints(indices)}: {text}")

_BRACKETED = re.compile(r"\[[^\]]*\]")      # a long name in a pattern string: [swa]
_MAX_COVERED = 100_000


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
