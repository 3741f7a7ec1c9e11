"""A model spec's ``plugins:``: Python modules that register blocks, i.e. code that runs.

They are imported only when the person at the keyboard asked for it: ``load_spec(...,
allow_plugins=True)``, which the CLI passes for ``--allow-plugins`` or ``HYBRIDLAB_PLUGINS=1``
(``hybridlab/cli/options.py``; the library never reads that variable). Everywhere else -- the
web UI, ``load_model``, the HF loader, specs read back from a database -- the default is False:
a spec naming a module is refused with a problem that names the opt-in, and nothing is imported.

One exception keeps Python users working: a module already in ``sys.modules`` is accepted
without importing anything (the user imported it, and its blocks are registered).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import Callable

from hybridlab.specs.typecheck import describe

OPT_IN_HINT = ("run with --allow-plugins (or HYBRIDLAB_PLUGINS=1), or in Python "
               "load_spec(..., allow_plugins=True); a module you have already imported yourself "
               "is accepted without it")

#: report(path, message, hint, key) -- the loader's way to record a problem
Report = Callable[..., None]


def read_plugins(plugins, report: Report, *, allow: bool, spec_dir: Path | None) -> tuple[str, ...]:
    """The module names under ``plugins:``; imported when ``allow``, else only checked."""
    if plugins is None:
        return ()
    if isinstance(plugins, str):
        plugins = [plugins]
        where = lambda i: ("plugins",)  # noqa: E731
    elif isinstance(plugins, list):
        where = lambda i: ("plugins", i)  # noqa: E731
    else:
        report(("plugins",), f"plugins must be a list of module names, got {describe(plugins)}",
               "plugins: [my_blocks]")
        return ()
    names = []
    for i, module in enumerate(plugins):
        if not isinstance(module, str) or not module.strip():
            report(where(i), f"a plugin is a module name, got {describe(module)}")
            continue
        names.append((module, where(i)))
    if not allow:
        missing = [m for m, _ in names if sys.modules.get(m) is None]
        if missing:
            report(("plugins",), f"this spec imports Python modules ({', '.join(missing)}), "
                                 "which runs their code: allowed only when you ask for it",
                   OPT_IN_HINT, key=True)
        return tuple(m for m, _ in names)
    with _import_path(spec_dir):
        for module, path in names:
            _import(module, path, report)
    return tuple(m for m, _ in names)


@contextlib.contextmanager
def _import_path(spec_dir: Path | None):
    """Plugins are importable from the spec's folder and the current directory."""
    extra = [str(spec_dir)] if spec_dir is not None else []
    extra.append(os.getcwd())
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)


def _import(module: str, path: tuple, report: Report) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            hint = "plugins are Python module names importable from the spec's folder or " \
                   "the current directory"
            if module.endswith(".py") or "/" in module:
                hint = f"write the module name ('{Path(module).stem}'), not a file path"
            missing = "no such module" if e.name == module else f"no module named '{e.name}'"
            report(path, f"cannot import plugin '{module}': {missing}", hint)
        else:
            report(path, f"plugin '{module}' failed to import: {e}")
    except (Exception, SystemExit) as e:
        report(path, f"plugin '{module}' failed to import: {type(e).__name__}: {e}")
