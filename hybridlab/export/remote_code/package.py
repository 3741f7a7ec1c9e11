"""The fallback export's ``trust_remote_code`` package: hybridlab's own source, copied.

``write_package(folder, spec)`` copies, verbatim, every hybridlab module the model needs --
``configuration.py`` and ``modeling.py`` of this package (as ``configuration_hybridlab.py`` and
``modeling_hybridlab.py``, the files ``auto_map`` names), the builder, the spec dataclasses, the
block modules, each kernel's pure-torch ``reference.py`` and the spec's plugin modules -- into one
flat folder, rewriting only their import statements:

    from hybridlab.blocks.base import Block   ->  from .hl_blocks_base import Block
    from .registry import register_block      ->  from .hl_blocks_registry import register_block
    from hybridlab.kernels import ssd         ->  from .hl_kernels import ssd   (reference ops)

The modules are found by following imports from the two entry files, so the copy is whatever
hybridlab runs today: it cannot drift from the blocks. Two small files are generated rather than
copied: ``hl_kernels.py`` (each op bound to its reference implementation, from
``hybridlab.kernels.dispatch.OPS``) and ``hl_plugins.py`` (imports the copied plugins);
``hl_facade.py`` stands in for ``import hybridlab`` in plugin code.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import types
from dataclasses import dataclass, field

from hybridlab.errors import ExportError

ENTRY = {"hybridlab.export.remote_code.configuration": "configuration_hybridlab",
         "hybridlab.export.remote_code.modeling": "modeling_hybridlab"}
KERNELS = "hybridlab.kernels"
PLUGINS = "hybridlab.export.remote_code.plugins"
FACADE = "hl_facade"
GENERATED = {KERNELS: "hl_kernels", PLUGINS: "hl_plugins"}


def flat_name(module: str, plugins: dict[str, str]) -> str:
    if module in ENTRY:
        return ENTRY[module]
    if module in GENERATED:
        return GENERATED[module]
    if module in plugins:
        return plugins[module]
    return "hl_" + module.removeprefix("hybridlab.").replace(".", "_")


@dataclass
class Package:
    plugins: dict[str, str] = field(default_factory=dict)   # plugin module -> flat name
    files: dict[str, str] = field(default_factory=dict)     # flat name -> source text
    queue: list[str] = field(default_factory=list)

    def want(self, module: str) -> str:
        name = flat_name(module, self.plugins)
        if name not in self.files and module not in self.queue:
            self.queue.append(module)
        return name

    def ours(self, module: str) -> bool:
        return module == "hybridlab" or module.startswith("hybridlab.") or module in self.plugins


def write_package(folder: str | os.PathLike, spec) -> list[str]:
    """Copy the modules ``spec`` needs into ``folder``; returns the file names written."""
    from hybridlab import __version__

    pkg = Package(plugins={m: "hl_plugin_" + m.replace(".", "_") for m in spec.plugins})
    pkg.queue = list(ENTRY) + list(pkg.plugins)
    pkg.files[GENERATED[PLUGINS]] = _plugins_file(pkg)
    pkg.files[GENERATED[KERNELS]] = _kernels_file(pkg)
    pkg.files[FACADE] = _facade_file(pkg)
    while pkg.queue:
        module = pkg.queue.pop(0)
        name = flat_name(module, pkg.plugins)
        if name in pkg.files:
            continue
        path = _source(module)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        header = (f"# Copied verbatim from {_shown(module, path)} (hybridlab {__version__}) by "
                  "hybridlab's HF export;\n# only import statements are rewritten (each still "
                  "one statement line).\n")
        pkg.files[name] = header + _rewrite(source, module, path, pkg)
    written = []
    for name, text in sorted(pkg.files.items()):
        with open(os.path.join(folder, name + ".py"), "w", encoding="utf-8") as f:
            f.write(text)
        written.append(name + ".py")
    return written


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ExportError(f"cannot package {module!r} for the remote-code export: no Python "
                          "source file (plugins must be plain .py modules)")
    return spec.origin


def _shown(module: str, path: str) -> str:
    if module.startswith("hybridlab"):
        return module.replace(".", "/") + ("/__init__.py" if path.endswith("__init__.py")
                                           else ".py")
    return f"plugin {module}"


def _rewrite(source: str, module: str, path: str, pkg: Package) -> str:
    """``source`` with every import of hybridlab (or a plugin) pointed at the flat copies."""
    tree = ast.parse(source, filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                 package) if node.level else node.module
            if not pkg.ours(target):
                continue
            edits.append((node, _from_import(node, target, pkg)))
        elif isinstance(node, ast.Import):
            if not any(pkg.ours(a.name) for a in node.names):
                continue
            edits.append((node, _plain_import(node, module, pkg)))
    for node, new in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        indent = " " * node.col_offset
        first, last = node.lineno - 1, node.end_lineno - 1
        prefix = lines[first][:node.col_offset]
        suffix = lines[last][node.end_col_offset:]
        body = ("\n" + indent).join(new)
        lines[first:last + 1] = [prefix + body + suffix]
    return "".join(lines)


def _from_import(node: ast.ImportFrom, target: str, pkg: Package) -> list[str]:
    """``from <ours> import a, b as c``; names that are submodules become module bindings."""
    out, names = [], []
    for alias in node.names:
        if alias.name != "*" and _is_module(target, alias.name):
            out += _bind_module(pkg.want(f"{target}.{alias.name}"), alias.asname or alias.name)
        else:
            names.append(alias.name + (f" as {alias.asname}" if alias.asname else ""))
    if names:
        out.insert(0, f"from .{pkg.want(target)} import {', '.join(names)}")
    return out


def _plain_import(node: ast.Import, module: str, pkg: Package) -> list[str]:
    out = []
    for alias in node.names:
        if alias.name == "hybridlab":
            out += _bind_module(FACADE, alias.asname or "hybridlab")
        elif alias.name in pkg.plugins and alias.asname:
            out += _bind_module(pkg.want(alias.name), alias.asname)
        elif pkg.ours(alias.name):
            raise ExportError(f"{module}: 'import {alias.name}' cannot be packaged for the "
                              f"remote-code export; write 'from {alias.name} import ...'")
        else:
            out.append(f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else ""))
    return out


def _bind_module(flat: str, as_name: str) -> list[str]:
    """A module bound to a name through a ``from .x import`` line, which transformers follows
    when it copies a remote-code package (it does not follow ``from . import x``); one line, so
    an import statement stays one line."""
    return [f"from .{flat} import __name__ as _hl_{as_name}_name; "
            f"{as_name} = __import__('sys').modules[_hl_{as_name}_name]"]


def _is_module(module: str, name: str) -> bool:
    """Whether ``from module import name`` binds a submodule (as Python would resolve it)."""
    if module in GENERATED:
        return False
    return isinstance(getattr(importlib.import_module(module), name, None), types.ModuleType)


def _kernels_file(pkg: Package) -> str:
    import hybridlab.kernels as kernels
    from hybridlab.kernels.dispatch import OPS

    lines = ['"""hybridlab.kernels in this copy: every op is its pure-torch reference '
             '(generated at export\nfrom hybridlab.kernels.dispatch.OPS)."""']
    ops = [op for op in kernels.__all__ if op in OPS]
    for op in ops:
        lines.append(f"from .{pkg.want(f'{KERNELS}.{OPS[op]}.reference')} import {op}")
    lines.append(f"\n__all__ = {ops!r}")
    return "\n".join(lines) + "\n"


def _plugins_file(pkg: Package) -> str:
    lines = ['"""The plugin modules this model uses, imported so their blocks register '
             '(generated at export)."""']
    for module, flat in pkg.plugins.items():
        lines.append(f"from .{flat} import __name__ as _hl_{flat}")
    lines.append(f"\nPLUGINS = {tuple(pkg.plugins)!r}")
    return "\n".join(lines) + "\n"


def _facade_file(pkg: Package) -> str:
    pkg.want("hybridlab.blocks")
    return ('"""What plugin code reaches through \'import hybridlab\', in this copy (generated '
            'at export)."""\n'
            "from .hl_blocks import Block, BlockConfig, ForwardContext, LayerContext\n"
            "from .hl_blocks import register_block, get_block, block_types\n"
            "from .hl_blocks import __name__ as _hl_blocks_name\n"
            "blocks = __import__('sys').modules[_hl_blocks_name]\n")
