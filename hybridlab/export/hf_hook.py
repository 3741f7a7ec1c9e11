"""Register hybridlab with transformers' Auto classes without importing transformers.

``install()`` is cheap (no transformers import) and is meant to run in ``hybridlab/__init__``:

* transformers already imported  -> register now;
* not imported yet               -> a ``sys.meta_path`` finder waits for ``import transformers``
  and registers right after that import finishes, then removes itself;
* transformers first imported by ``hybridlab.export.hf`` itself -> that module registers when
  its own import finishes (the hook never reads a half-imported module).

So ``AutoModelForCausalLM.from_pretrained(export_dir)`` works after ``import hybridlab``, in
either import order, and a process that never imports transformers pays nothing.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading

_lock = threading.Lock()
_done = False


def _importing(name: str) -> bool:
    """Whether module ``name`` is being imported right now (its body has not finished)."""
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None),
                                               "_initializing", False))


def _register() -> None:
    global _done
    if _importing("hybridlab.export.hf"):
        # `import hybridlab.export.hf` itself imported transformers: hf registers at the end
        # of its own import (registering now would read a half-made module)
        return
    with _lock:
        if _done:
            return
        _done = True
    try:
        from hybridlab.export import hf
        hf.register()
    except Exception as e:   # never break the user's `import transformers`
        import warnings
        warnings.warn(f"hybridlab could not register with transformers: {type(e).__name__}: {e}",
                      RuntimeWarning, stacklevel=2)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _uninstall()
        _register()

    def __getattr__(self, name):          # e.g. get_resource_reader, is_package
        return getattr(self.inner, name)


class TransformersHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the real ``transformers`` package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, TransformersHook)]


def install() -> None:
    """Register now if transformers is loaded, else once it is imported (idempotent)."""
    if _done:
        return
    if "transformers" in sys.modules:
        _register()
        return
    if not any(isinstance(f, TransformersHook) for f in sys.meta_path):
        sys.meta_path.insert(0, TransformersHook())


def installed() -> bool:
    return any(isinstance(f, TransformersHook) for f in sys.meta_path)
