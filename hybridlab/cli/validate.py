"""`hybridlab validate SPEC...`: check spec files; every problem as file:line:col, exit 2 if any.

Model specs and search specs are both accepted: a file with top-level `space` or `objectives`
is a search spec (its base model spec is validated with it)."""
from __future__ import annotations

import sys
from pathlib import Path

from hybridlab.cli.options import add_allow_plugins, allow_plugins
from hybridlab.errors import SpecError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate", help="check model spec files and report every problem as file:line:col",
        description="Load and fully validate each spec (keys, types, block settings, pattern or "
                    "layout, overrides). Prints 'ok  FILE  N layers  PATTERN' per valid file, "
                    "otherwise each problem as 'file:line:col: field: message' with hints. "
                    "Exit status: 0 all valid, 2 any invalid.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="model or search spec YAML file(s)")
    add_allow_plugins(p)
    p.set_defaults(func=run)


def _is_search_spec(path: str) -> bool:
    """Peek at the top-level keys (bounded reads); anything unreadable goes to the model loader
    for its error, and so does what can be read only once (a pipe such as /dev/stdin)."""
    from hybridlab.specs.source import parse_yaml, read_text_file
    from hybridlab.search.spec import SEARCH_MARKS
    if not Path(path).is_file():
        return False
    try:
        text = read_text_file(path, path)
    except SpecError:
        return False
    try:
        data, _ = parse_yaml(text, path)
    except SpecError:               # broken YAML: its lines say which loader reports it better
        return SEARCH_MARKS.looks_like(text)
    return isinstance(data, dict) and any(key in data for key in SEARCH_MARKS.keys)


def _validate_search(path: str, plugins: bool) -> str:
    from hybridlab.search.spec import load_search_spec
    search = load_search_spec(Path(path), allow_plugins=plugins)
    return f"ok  {path}  search '{search.name}'  {len(search.space)} parameters  {search.trials} trials"


def run(args) -> int:
    from hybridlab.composer.loader import load_spec

    plugins = allow_plugins(args)
    status = 0
    for path in args.specs:
        try:
            if _is_search_spec(path):
                print(_validate_search(path, plugins))
                continue
            # always a file, never inline YAML
            spec = load_spec(Path(path), source=path, allow_plugins=plugins)
        except SpecError as e:
            for problem in e.problems:
                print(problem.format(), file=sys.stderr)
            status = max(status, 2)
            continue
        except Exception as e:      # a bug, not the user's fault: say so, keep going, no traceback
            print(f"{path}:0:0: internal error while validating: {type(e).__name__}: {e}\n"
                  f"    hint: this is a hybridlab bug; please report it with the spec file",
                  file=sys.stderr)
            status = max(status, 1)
            continue
        n = len(spec.layers)
        print(f"ok  {path}  {n} layer{'s' if n != 1 else ''}  {spec.pattern}")
    return status
