"""Line-aware, bounded YAML: the loaded data plus a map from field paths to file positions.

``parse_yaml(text, file)`` returns the same data ``yaml.safe_load`` would, and a ``SourceMap``
that answers "where is ``blocks.M.d_state``?" (1-based line and column), so every problem the
loader finds can point at the exact spot. A *path* is a tuple of mapping keys and list indices,
e.g. ``("overrides", 0, "set", "window")``.

Input is bounded before anything walks it (``hybridlab.specs.limits``): a file is read at most
``MAX_SPEC_BYTES`` + 1 bytes, and the composer counts values as it builds the node graph, every
use of an alias counted again, so an alias bomb stops at ``MAX_YAML_NODES`` within milliseconds.

A file that is not recognisably a spec (``SpecKind``) is reported without quoting a byte of it:
pointed at an arbitrary file, the loaders say "FILE is not a hybridlab model spec" and nothing else.

Plain dicts have no positions: ``SourceMap.empty(file)`` answers line 0, column 0 everywhere.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hybridlab.specs.limits import (MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES,
                                       human_bytes_limit)
from hybridlab.errors import Problem, SpecError

_MERGE_TAG = "tag:yaml.org,2002:merge"
_ESCAPE_LENGTH = {"x": 4, "u": 6, "U": 10}     # "\x41" "\u0041" "\U00000041"; others are 2


@dataclass(frozen=True)
class Position:
    line: int   # 1-based; 0 when unknown
    col: int    # 1-based; 0 when unknown


UNKNOWN = Position(0, 0)


@dataclass(frozen=True)
class Duplicate:
    """A key written twice in one mapping (YAML would silently keep the last one)."""
    path: tuple
    key: Any
    position: Position


class SourceMap:
    """Positions of the keys and values of one YAML document."""

    def __init__(self, file: str, text: str = "", nodes: dict | None = None,
                 duplicates: list[Duplicate] | None = None):
        self.file = file
        self._text = text
        self._nodes = nodes or {}          # path -> (key node or None, value node)
        self.duplicates = duplicates or []
        self._offsets: dict[tuple, list[int]] = {}   # path -> source offset of each character

    @classmethod
    def empty(cls, file: str) -> "SourceMap":
        return cls(file)

    def value(self, path: tuple) -> Position:
        """Where the value at ``path`` starts (or the nearest enclosing value that exists)."""
        _, node = self._nearest(path)
        return _mark(node.start_mark) if node is not None else UNKNOWN

    def key(self, path: tuple) -> Position:
        """Where the key of ``path`` is written (list items: the item itself)."""
        entry = self._nodes.get(tuple(path))
        if entry is None:
            return self.value(path)
        key_node, value_node = entry
        return _mark((key_node or value_node).start_mark)

    def char(self, path: tuple, index: int) -> Position:
        """Position of character ``index`` of the string value at ``path``."""
        entry = self._nodes.get(tuple(path))
        if entry is None:
            return self.value(path)
        node = entry[1]
        if not isinstance(node, yaml.ScalarNode):
            return _mark(node.start_mark)
        offsets = self._offsets.get(tuple(path))
        if offsets is None:                 # one walk per string, not one per character asked
            offsets = self._offsets[tuple(path)] = _source_offsets(self._text, node)
        offset = offsets[index] if 0 <= index < len(offsets) else \
            _offset_in_source(self._text, node, index)
        return _position_of_offset(self._text, offset)

    def has(self, path: tuple) -> bool:
        return tuple(path) in self._nodes

    def _nearest(self, path: tuple):
        path = tuple(path)
        while path not in self._nodes and path:
            path = path[:-1]
        entry = self._nodes.get(path)
        return entry if entry is not None else (None, None)


@dataclass(frozen=True)
class SpecKind:
    """What a file read as a spec should look like, to tell a spec with typos from any other file.

    ``keys``: top-level keys only this kind of spec has (``name`` alone is too common)."""
    what: str                     # "model spec"
    keys: tuple[str, ...]
    shape: str = ""               # the hint: what such a spec looks like

    def recognises(self, data) -> bool:
        """An empty mapping, or one with at least one key of this kind."""
        return isinstance(data, dict) and (not data or any(k in self.keys for k in data
                                                           if isinstance(k, str)))

    def looks_like(self, text: str) -> bool:
        """For text that is not valid YAML: does some line start with one of the keys?"""
        keys = "|".join(re.escape(k) for k in self.keys)
        return re.search(rf"^[\"']?(?:{keys})[\"']?[ \t]*:", text, re.MULTILINE) is not None

    def problem(self, file: str, reason: str) -> Problem:
        return Problem(f"{file} is not a hybridlab {self.what}: {reason}", file=file,
                       hint=self.shape)


def read_text_file(path: str | Path, shown_as: str, *, limit: int = MAX_SPEC_BYTES) -> str:
    """File contents as text, or a SpecError that says plainly why it cannot be read.

    Reads at most ``limit`` + 1 bytes, so /dev/zero or a huge file fails at once; a named pipe
    nobody writes to reads as empty instead of blocking."""
    p = Path(path)
    try:
        if "\0" in str(p) or not p.exists():
            raise SpecError(Problem("file not found", file=shown_as,
                                    hint="" if "\0" in str(p) else f"looked for {p.resolve()}"))
        if p.is_dir():
            raise SpecError(Problem("is a directory, not a spec file", file=shown_as,
                                    hint="pass the YAML file itself, e.g. specs/model.yaml"))
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))   # no wait for a writer
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise SpecError(Problem(f"cannot read file: {e.strerror or e}", file=shown_as)) from None
    if len(data) > limit:
        raise SpecError(too_large(shown_as, limit))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError(Problem("not a text file (invalid UTF-8)", file=shown_as, line=line,
                                col=col, hint="a spec is a UTF-8 YAML file")) from None


def too_large(file: str, limit: int = MAX_SPEC_BYTES) -> Problem:
    return Problem(f"the spec is larger than {human_bytes_limit(limit)}, the limit", file=file,
                   hint="a spec is a short YAML file; write repeats as groups: (M-) x 24")


def check_text_size(text: str, file: str, limit: int = MAX_SPEC_BYTES) -> None:
    """SpecError when ``text`` is over ``limit`` bytes as UTF-8 (counted only when it may be)."""
    if len(text) > limit or (len(text) * 4 > limit and
                             len(text.encode("utf-8", "surrogatepass")) > limit):
        raise SpecError(too_large(file, limit))


def parse_yaml(text: str, file: str, *, kind: SpecKind | None = None) -> tuple[Any, SourceMap]:
    """YAML text -> (data as yaml.safe_load gives it, SourceMap). Syntax errors -> SpecError.

    ``kind``: the text is a file of unknown content; when it is not recognisably that kind of
    spec, the only problem is "FILE is not a hybridlab ...", quoting nothing from it."""
    check_text_size(text, file)
    text = text.replace("\r\n", "\n")
    try:
        data, nodes, duplicates = _load(text, file)
    except _OverLimit:
        raise                       # says which limit, quotes nothing
    except SpecError:
        if kind is not None and not kind.looks_like(text):
            raise SpecError(kind.problem(file, "it is not valid YAML")) from None
        raise
    if kind is not None and data is not None and not kind.recognises(data):
        reason = ("none of its top-level keys is a spec key" if isinstance(data, dict) else
                  "it is not a YAML mapping")
        raise SpecError(kind.problem(file, reason))
    return data, SourceMap(file, text, nodes, duplicates)


class _OverLimit(SpecError):
    """A YAML limit (values, nesting): the message quotes nothing from the text."""


class LimitExceeded(Exception):
    def __init__(self, message: str, mark, hint: str = ""):
        super().__init__(message)
        self.message, self.mark, self.hint = message, mark, hint


class _Counting(yaml.composer.Composer):
    """A composer that counts values (each use of an alias counted again) and nesting, and stops
    at the limits before the document is constructed or walked."""

    def _start_counting(self):
        self._sizes: dict[int, int] = {}     # id(finished node) -> values it expands to
        self._total = 0                      # values so far, aliases expanded: fails fast
        self._depth = 0

    def _count(self, n: int, mark) -> None:
        self._total += n
        if self._total > MAX_YAML_NODES:
            raise LimitExceeded(f"the document holds more than {MAX_YAML_NODES:,} values "
                                "(every use of an alias counted again)", mark,
                                "a spec is short; write repeats as groups: (M-) x 24")

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:          # an alias inside its own anchor
                raise LimitExceeded("an alias refers to a value that contains it (a recursive "
                                    "structure)", mark, "remove the alias")
            self._count(self._sizes[id(node)], mark)
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise LimitExceeded(f"values are nested more than {MAX_YAML_DEPTH} levels deep", mark)
        self._count(1, mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(item)] for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:    # 2020-13-45, a 5000-digit integer ...
            reason = "too many digits" if "digits" in str(e) else str(e)
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({reason})", node.start_mark) from None


#: a text up to this long is read again by the pure-Python parser after a syntax error
_PY_REREAD_CHARS = 64 << 10


class _PyLoader(_Counting, yaml.SafeLoader):
    """Pure-Python scanner and parser: slower, and the source of our syntax messages."""

    def __init__(self, text: str):
        yaml.SafeLoader.__init__(self, text)
        self._start_counting()


try:        # libyaml's scanner and parser, our composer: the same nodes, several times faster
    from yaml._yaml import CParser as _CParser

    class _CLoader(_Counting, _CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        def __init__(self, text: str):
            _CParser.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._start_counting()
except ImportError:                  # PyYAML built without libyaml
    _CLoader = None


def _load(text: str, file: str):
    """(data, path -> nodes, duplicate keys) or SpecError. libyaml scans and parses when it is
    there; on a syntax error in a text of normal size the pure-Python parser reads it again, for
    its messages (and to accept what ``yaml.safe_load`` accepts). A large text keeps libyaml's
    message: the pure-Python scanner would take seconds over it."""
    syntax = (yaml.scanner.ScannerError, yaml.parser.ParserError, yaml.reader.ReaderError)
    try:
        if _CLoader is not None:
            try:
                return _compose(_CLoader, text)
            except UnicodeEncodeError:          # a lone surrogate: the reader below names it
                pass
            except syntax as e:
                if "maximum nesting depth" in str(getattr(e, "problem", "")):
                    raise LimitExceeded(f"values are nested more than {MAX_YAML_DEPTH} levels "
                                        "deep", e.problem_mark) from None
                if len(text) > _PY_REREAD_CHARS and isinstance(e, yaml.MarkedYAMLError):
                    raise
        return _compose(_PyLoader, text)
    except LimitExceeded as e:
        raise _OverLimit(Problem(f"YAML: {e.message}", file=file, line=e.mark.line + 1,
                                 col=e.mark.column + 1, hint=e.hint)) from None
    except yaml.MarkedYAMLError as e:
        raise SpecError(_syntax_problem(e, file, text)) from None
    except yaml.reader.ReaderError as e:      # a character YAML does not allow (NUL, controls)
        pos = _position_of_offset(text, e.position)
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise SpecError(Problem(f"YAML error: unacceptable character U+{code:04X}", file=file,
                                line=pos.line, col=pos.col,
                                hint="a spec is a plain-text YAML file")) from None
    except yaml.YAMLError as e:
        raise SpecError(Problem(f"YAML error: {type(e).__name__}", file=file)) from None
    except RecursionError:
        raise SpecError(Problem("YAML error: the document is nested too deeply",
                                file=file)) from None


def _compose(loader_class, text: str):
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        duplicates = _find_duplicates(root) if root is not None else []
        data = loader.construct_document(root) if root is not None else None
        nodes: dict = {}
        if root is not None:
            _index_nodes(loader, root, (), None, nodes, set())
        return data, nodes, duplicates
    finally:
        loader.dispose()


# -- helpers -------------------------------------------------------------------------------------

def _mark(mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _syntax_problem(e: yaml.MarkedYAMLError, file: str, text: str = "") -> Problem:
    mark = e.problem_mark or e.context_mark
    what = e.problem or e.context or "invalid YAML"
    if mark is not None and "cannot start any token" in what and "'" not in what and \
            0 <= mark.index < len(text):        # libyaml's wording names no character
        what = what.replace("character", f"character {text[mark.index]!r}")
    if e.problem and e.context:
        ctx_mark = e.context_mark
        where = f" that starts at line {ctx_mark.line + 1}" if ctx_mark and mark and \
            ctx_mark.line != mark.line else ""
        what = f"{what} ({e.context}{where})"
    return Problem(f"YAML syntax error: {what}", file=file,
                   line=mark.line + 1 if mark else 0, col=mark.column + 1 if mark else 0,
                   hint=_syntax_hint(what))


def _syntax_hint(what: str) -> str:
    if "'\\t'" in what:
        return "YAML does not allow tabs for indentation; use spaces"
    if "alias" in what:
        return "'*' starts a YAML alias; quote keys and values that start with it: " \
               "\"*\": {type: attention}, pattern: \"*-M-\""
    if "sequence entries are not allowed" in what:
        return "'- ' starts a YAML list item; quote the MLP symbol: \"-\""
    if "block scalar" in what:
        return "'|' and '>' start a YAML block scalar; quote a pattern that starts with one"
    if "mapping values are not allowed" in what:
        return "check the indentation, or quote a value that contains ': '"
    if "single document" in what or "another document" in what:
        return "a spec file holds one YAML document; remove the extra '---'"
    return "check indentation, brackets and quotes"


def _find_duplicates(root) -> list[Duplicate]:
    """Keys written twice in the same mapping, found before merge keys (<<) are flattened."""
    found: list[Duplicate] = []
    seen_nodes: set[int] = set()

    def walk(node, path):
        if id(node) in seen_nodes:         # aliases point at the same node: visit once
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                if isinstance(key_node, yaml.ScalarNode):
                    ident = (key_node.tag, key_node.value)
                    if ident in seen:
                        found.append(Duplicate(path, key_node.value, _mark(key_node.start_mark)))
                    seen.add(ident)
                    walk(value_node, path + (key_node.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    walk(root, ())
    return found


def _index_nodes(loader, node, path, key_node, out, visited):
    """Record (key node, value node) for every path, after construction (merges flattened).

    A node reached again through an alias is recorded but not entered twice, so aliases of
    aliases ("billion laughs") cannot blow up; paths inside it fall back to the alias itself.
    """
    out[path] = (key_node, node)
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for k_node, v_node in node.value:
            if not isinstance(k_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(k_node)
            _index_nodes(loader, v_node, path + (key,), k_node, out, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_nodes(loader, item, path + (i,), None, out, visited)


def _offset_in_source(text: str, node: yaml.ScalarNode, index: int) -> int:
    """Source offset of character ``index`` of a scalar's value.

    Walks value and source side by side: equal characters advance both, an escape sequence in a
    double-quoted scalar counts as one character, and anything else in the source (quotes, line
    folding, indentation, a block scalar's header) is skipped.
    """
    start, end = node.start_mark.index, node.end_mark.index
    raw = text[start:end]
    pos = 0
    if node.style in ("|", ">"):
        pos = raw.find("\n") + 1            # skip the header line (| or > and indicators)
    elif node.style in ("'", '"'):
        pos = 1
    escapes = node.style == '"'
    for i, ch in enumerate(node.value):
        while pos < len(raw):
            if escapes and raw[pos] == "\\":
                length = _ESCAPE_LENGTH.get(raw[pos + 1:pos + 2], 2)
                if raw[pos + 1:pos + 2] != "\n":
                    break                   # this escape sequence produced `ch`
                pos += length               # an escaped line break produces nothing
            elif raw[pos] == ch:
                length = 1
                break
            else:
                pos += 1
        if pos >= len(raw):
            return start
        if i == index:
            return start + pos
        pos += length
    return start + min(pos, len(raw))


def _source_offsets(text: str, node: yaml.ScalarNode) -> list[int]:
    """Source offset of every character of a scalar's value: ``_offset_in_source`` for all
    indices in one walk."""
    start, end = node.start_mark.index, node.end_mark.index
    raw = text[start:end]
    pos = 0
    if node.style in ("|", ">"):
        pos = raw.find("\n") + 1
    elif node.style in ("'", '"'):
        pos = 1
    escapes = node.style == '"'
    out: list[int] = []
    for ch in node.value:
        length = 1
        while pos < len(raw):
            if escapes and raw[pos] == "\\":
                length = _ESCAPE_LENGTH.get(raw[pos + 1:pos + 2], 2)
                if raw[pos + 1:pos + 2] != "\n":
                    break
                pos += length
            elif raw[pos] == ch:
                length = 1
                break
            else:
                pos += 1
        if pos >= len(raw):
            out.extend([start] * (len(node.value) - len(out)))
            break
        out.append(start + pos)
        pos += length
    return out


def _position_of_offset(text: str, offset: int) -> Position:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Position(line, col)
