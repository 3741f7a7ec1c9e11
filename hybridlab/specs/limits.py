"""Bounds on spec input, far beyond any real model, so that hostile or broken specs fail fast.

Every model spec and search spec (a file, YAML text from the UI or a database) is checked
against these before anything walks it; each breach is a ``SpecError`` that names the limit.
"""
from __future__ import annotations

#: bytes of one spec file or spec text (a file is read at most this + 1 bytes)
MAX_SPEC_BYTES = 1 << 20
#: values in one YAML document, every use of an alias counted again ("billion laughs")
MAX_YAML_NODES = 50_000
#: nesting of YAML mappings and lists
MAX_YAML_DEPTH = 64
#: layers of a model, however the pattern is written (string, list or layout)
MAX_LAYERS = 10_000
#: pattern-string group nesting: ((((M)))) ...
MAX_PATTERN_DEPTH = 32
#: entries under ``blocks:``, and distinct layer configurations after ``overrides``
MAX_BLOCKS = 256
MAX_LAYER_CONFIGS = 512
#: entries under ``overrides:``
MAX_OVERRIDES = 1_000
#: elements of any one weight tensor, and parameters of the whole model (about 1.1e12)
MAX_ELEMENTS = 1 << 40
#: search specs: dimensions of the space, values of one ``choice:``, tasks, objectives,
#: constraints and baselines
MAX_SPACE_DIMS = 64
MAX_CHOICES = 1_024
MAX_TASKS = 64
MAX_OBJECTIVES = 16
MAX_CONSTRAINTS = 64
MAX_BASELINES = 1_024


def human_bytes_limit(n: int) -> str:
    """1048576 -> '1 MiB' (the limits are whole KiB/MiB)."""
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"
