"""The shape of the package, read from its source (``ast``, nothing imported):

* no import cycles among hybridlab modules, counting imports inside functions too (they hide a
  cycle, they do not remove it);
* the UI never imports the CLI; nothing in hybridlab imports ``benchmarks``;
* library code does not import the ``hybridlab`` facade;
* one did-you-mean (``hybridlab/specs/problems.py``);
* the modules listed in ``TOP_IMPORTS_ONLY`` import hybridlab modules at the top only.

What is not so yet is listed below, each entry naming the file's owner, so the lists can only
shrink: an entry that no longer applies fails the test until it is removed. Imports made from a
string (``importlib.import_module(name)``, the lazy ``__getattr__`` of package ``__init__``s) are
not seen.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hybridlab"

#: imports that close a cycle today (importer, imported) -> whose file it is and why it is there
ALLOWED_CYCLE_EDGES = {
    ("hybridlab.composer.builder", "hybridlab"):
        "composer/builder.py (not the spec work's): build_model() reaches load_spec through the "
        "facade, which the remote-code export rewrites",
    ("hybridlab.export.native", "hybridlab"): "HF export: export/native.py imports the facade",
    ("hybridlab.export.remote_code.package", "hybridlab"):
        "HF export: remote_code/package.py reads __version__ from the facade",
    ("hybridlab.export.native", "hybridlab.export.hf_load"):
        "HF export: native.load_model imports hf_load, which imports native",
    ("hybridlab.search.driver", "hybridlab.search.workers"):
        "storage/search driver: driver.run_search imports workers, which imports driver",
}
#: library modules that import the ``hybridlab`` facade today -> whose file it is
ALLOWED_FACADE_IMPORTS = {
    "hybridlab.composer.builder": "composer/builder.py (see ALLOWED_CYCLE_EDGES)",
    "hybridlab.export.native": "HF export",
    "hybridlab.export.remote_code.package": "HF export",
    "hybridlab.search.cost": "trainer (search/cost.py)",
    "hybridlab.search.objective": "storage (search/objective.py)",
    "hybridlab.cli.train": "trainer (cli/train.py)",
}
#: modules other than specs/problems.py that compute close matches themselves -> owner
ALLOWED_DIFFLIB = {
    "hybridlab.search.tasks": "trainer (search/tasks/__init__.py: unknown task names)",
}
#: packages and modules whose hybridlab imports are all at the top (add yours when it is)
TOP_IMPORTS_ONLY = ("hybridlab.specs", "hybridlab.composer.loader", "hybridlab.composer.read",
                    "hybridlab.composer.canonical", "hybridlab.composer.layout",
                    "hybridlab.composer.pattern", "hybridlab.composer.plugins",
                    "hybridlab.composer.sizes", "hybridlab.composer.spec",
                    "hybridlab.composer.summary", "hybridlab.search.spec",
                    "hybridlab.search.space", "hybridlab.search.samplers", "hybridlab.errors")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str          # the hybridlab module (or "benchmarks...", or another top-level name)
    line: int
    local: bool          # inside a function or class body


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.Module):
    """(node, local) for every import statement that runs, skipping ``if TYPE_CHECKING:``."""
    def walk(nodes, local):
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, local
            elif isinstance(node, ast.If) and _type_checking(node):
                yield from walk(node.orelse, local)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                   ast.Lambda)):
                yield from walk(ast.iter_child_nodes(node), True)
            else:
                yield from walk(ast.iter_child_nodes(node), local)
    yield from walk(tree.body, False)


def _owning_module(name: str) -> str:
    """The nearest enclosing hybridlab module of a dotted name (a class or function imported
    from a module counts as that module)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path) -> list[Import]:
    out = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node, local in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        for name in names:
            target = _owning_module(name) if name.split(".")[0] == "hybridlab" else name
            out.append(Import(module, target, node.lineno, local))
    return out


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _graph(skip=frozenset()) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.importer and \
                (imp.importer, imp.target) not in skip:
            graph[imp.importer].add(imp.target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _where(importer: str, target: str) -> str:
    lines = sorted({imp.line for imp in IMPORTS
                    if imp.importer == importer and imp.target == target})
    at = ", ".join(f"{MODULES[importer].relative_to(ROOT)}:{line}" for line in lines)
    return f"{importer} -> {target} ({at})"


# -- the tests -------------------------------------------------------------------------------------

def test_the_checker_sees_imports_and_cycles():
    """The walker finds top-level and function-local imports, and the cycle finder finds a
    cycle of three and ignores a chain (so the tests below can fail)."""
    loader = [imp for imp in IMPORTS if imp.importer == "hybridlab.composer.loader"]
    assert Import("hybridlab.composer.loader", "hybridlab.composer.read.context",
                  next(i.line for i in loader if i.target.endswith("read.context")),
                  False) in loader
    assert any(imp.local for imp in IMPORTS)              # e.g. the facade's lazy imports
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(_graph(skip=frozenset(ALLOWED_CYCLE_EDGES)))
    described = []
    for component in cycles:
        members = set(component)
        edges = sorted({(i.importer, i.target) for i in IMPORTS
                        if i.importer in members and i.target in members})
        described.append("\n  ".join(_where(*edge) for edge in edges))
    assert not cycles, "import cycles (every import inside each cycle):\n  " + \
        "\n\n  ".join(described)


@pytest.mark.parametrize("edge", sorted(ALLOWED_CYCLE_EDGES))
def test_allowed_cycle_edges_still_close_a_cycle(edge):
    """An allow-listed import that is gone, or no longer part of a cycle, leaves the list."""
    graph = _graph()
    assert edge[1] in graph[edge[0]], f"{edge} is no longer imported: remove it from the list"
    in_cycle = any(edge[0] in c and edge[1] in c for c in _cycles(graph))
    assert in_cycle, f"{edge} closes no cycle any more: remove it from ALLOWED_CYCLE_EDGES"


def test_ui_never_imports_cli():
    bad = [_where(i.importer, i.target) for i in IMPORTS
           if i.importer.startswith("hybridlab.ui") and i.target.startswith("hybridlab.cli")]
    assert not bad, "the UI imports the CLI:\n" + "\n".join(bad)


def test_nothing_in_hybridlab_imports_benchmarks():
    bad = [f"{MODULES[i.importer].relative_to(ROOT)}:{i.line}: {i.target}" for i in IMPORTS
           if i.target.split(".")[0] == "benchmarks"]
    assert not bad, "the product imports the lab:\n" + "\n".join(bad)


def test_library_does_not_import_the_facade():
    importers = {i.importer for i in IMPORTS
                 if i.target == "hybridlab" and i.importer != "hybridlab"}
    new = sorted(importers - set(ALLOWED_FACADE_IMPORTS))
    assert not new, ("import the submodule that defines the thing, not the hybridlab facade:\n"
                     + "\n".join(_where(m, "hybridlab") for m in new))
    gone = sorted(set(ALLOWED_FACADE_IMPORTS) - importers)
    assert not gone, f"no longer import the facade: remove {gone} from ALLOWED_FACADE_IMPORTS"


def test_one_did_you_mean():
    users = {i.importer for i in IMPORTS if i.target == "difflib"}
    assert "hybridlab.specs.problems" in users
    others = users - {"hybridlab.specs.problems"}
    new, gone = sorted(others - set(ALLOWED_DIFFLIB)), sorted(set(ALLOWED_DIFFLIB) - others)
    assert not new, f"use hybridlab.specs.problems.did_you_mean, not difflib, in {new}"
    assert not gone, f"{gone} no longer use difflib: remove them from ALLOWED_DIFFLIB"


def test_listed_modules_import_hybridlab_at_the_top_only():
    listed = [m for m in MODULES
              if any(m == p or m.startswith(p + ".") for p in TOP_IMPORTS_ONLY)]
    assert len(listed) >= len(TOP_IMPORTS_ONLY)
    bad = [f"{MODULES[i.importer].relative_to(ROOT)}:{i.line}: {i.target}" for i in IMPORTS
           if i.importer in listed and i.local and i.target.split(".")[0] == "hybridlab"]
    assert not bad, "function-local hybridlab imports (move them to the top):\n" + "\n".join(bad)


#: The layers of the README's "Layout of the code", top first: a module may import its own layer
#: and the layers above it, never one below (the arrows point one way).
LAYERS = [
    ("hybridlab.errors", "hybridlab.formatting", "hybridlab.interrupts"),
    ("hybridlab.specs",),
    ("hybridlab.kernels",),
    ("hybridlab.blocks",),
    ("hybridlab.composer",),
    ("hybridlab.storage",),
    ("hybridlab.export",),
    ("hybridlab.search",),
    ("hybridlab.ui",),
    ("hybridlab.cli",),
]


def _layer(module: str) -> int | None:
    for depth, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return depth
    return None


def test_every_package_has_a_layer():
    missing = sorted(m for m in MODULES if m != "hybridlab" and _layer(m) is None)
    assert not missing, "modules outside LAYERS (add them to the README's picture too):\n" + \
        "\n".join(missing)


def test_imports_point_up_the_layers_only():
    bad = [_where(i.importer, i.target) for i in IMPORTS
           if i.target in MODULES and i.target != "hybridlab"
           and _layer(i.importer) is not None and _layer(i.target) is not None
           and _layer(i.target) > _layer(i.importer)]
    assert not bad, "imports from a lower layer:\n" + "\n".join(bad)
