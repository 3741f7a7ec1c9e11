"""Dotted paths into a spec mapping: ``blocks."*".n_heads``, ``blocks['*'].n_heads``,
``layout.ffn[0]``, parsed into key tuples, written back, read and set."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any


class PathSyntaxError(ValueError):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


def parse_path(text: str) -> tuple:
    """``blocks."*".n_heads`` / ``blocks['*'].n_heads`` / ``layout.ffn[0]`` -> key tuple.

    Segments are separated by '.'; a segment in quotes (or in ``['...']``) is taken literally,
    so it may hold '.', '*', '[' or spaces. ``[N]`` (and a bare all-digit segment) is a list
    index. Bare ``*`` is also accepted as the key "*".
    """
    keys: list = []
    i, n = 0, len(text)
    expect_key = True
    if not text:
        raise PathSyntaxError("empty path", 0)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            end = text.find(ch, i + 1)
            if end < 0:
                raise PathSyntaxError(f"unclosed quote {ch}", i)
            if not expect_key:
                raise PathSyntaxError("expected '.' before a quoted key", i)
            keys.append(text[i + 1:end])
            i = end + 1
            expect_key = False
        elif ch == "[":
            end = text.find("]", i + 1)
            inner = text[i + 1:end] if end >= 0 else ""
            if end < 0:
                raise PathSyntaxError("unclosed '['", i)
            if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
                keys.append(inner[1:-1])
            elif re.fullmatch(r"\d+", inner):
                keys.append(int(inner))
            else:
                raise PathSyntaxError("inside [...] write a list index or a quoted key: "
                                      "[0] or ['*']", i)
            i = end + 1
            expect_key = False
        elif ch == ".":
            if expect_key:
                raise PathSyntaxError("empty segment (two dots, or a leading dot)", i)
            expect_key = True
            i += 1
        else:
            if not expect_key:
                raise PathSyntaxError("expected '.' or '[' here", i)
            j = i
            while j < n and text[j] not in ".[\"'":
                j += 1
            seg = text[i:j]
            keys.append(int(seg) if seg.isdigit() else seg)
            i = j
            expect_key = False
    if expect_key:
        raise PathSyntaxError("the path ends with '.'", n - 1)
    return tuple(keys)


def format_path(path: tuple) -> str:
    out = []
    for k in path:
        if isinstance(k, int):
            out.append(f"[{k}]")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*|\*", k):
            out.append(("." if out else "") + k)
        else:
            out.append(("." if out else "") + json.dumps(k))
    return "".join(out)


def get_path(data: Any, path: tuple) -> Any:
    """Value at ``path``; raises KeyError/IndexError/TypeError naming the failing depth."""
    cur = data
    for depth, key in enumerate(path):
        if isinstance(cur, Mapping):
            if key not in cur and isinstance(key, int) and str(key) in cur:
                key = str(key)
            cur = cur[key]
        elif isinstance(cur, list) and isinstance(key, int):
            cur = cur[key]
        else:
            raise TypeError(depth)
    return cur


def deepest(base, path):
    cur, prefix = base, ()
    for key in path:
        if isinstance(cur, Mapping) and key in cur:
            cur, prefix = cur[key], prefix + (key,)
        elif isinstance(cur, list) and isinstance(key, int) and key < len(cur):
            cur, prefix = cur[key], prefix + (key,)
        else:
            break
    options = list(cur.keys()) if isinstance(cur, Mapping) else []
    return prefix, options


def set_path(data: dict, path: tuple, value: Any) -> None:
    """Set ``value`` at ``path`` inside ``data`` (in place), creating the last key."""
    cur = data
    for key in path[:-1]:
        if isinstance(cur, Mapping) and key not in cur and isinstance(key, int) and str(key) in cur:
            key = str(key)
        cur = cur[key]
    leaf = path[-1]
    if isinstance(cur, Mapping) and leaf not in cur and isinstance(leaf, int) and str(leaf) in cur:
        leaf = str(leaf)
    cur[leaf] = value
