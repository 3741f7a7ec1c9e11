"""The composer: YAML spec -> validated ModelSpec -> model.

* ``load_spec`` / ``dump_spec_yaml``  read and write specs (``loader``, ``canonical``)
* ``canonical_dict`` / ``spec_hash``   what a spec builds, for duplicate detection (``canonical``)
* ``build_model`` / ``summarize``      imported on first use, since they pull in torch modules
"""
from hybridlab.composer.canonical import canonical_dict, dump_spec_yaml, spec_hash
from hybridlab.composer.loader import load_spec

_LAZY = {"build_model": "hybridlab.composer.builder", "summarize": "hybridlab.composer.summary"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybridlab.composer' has no attribute {name!r}")


__all__ = ["load_spec", "dump_spec_yaml", "canonical_dict", "spec_hash", "build_model", "summarize"]
