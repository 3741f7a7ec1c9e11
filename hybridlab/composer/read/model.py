"""The spec's own settings: ``plugins:`` (imported only when allowed), ``name:`` and ``model:``."""
from __future__ import annotations

import sys

from hybridlab.blocks.norms import NORMS
from hybridlab.composer.plugins import read_plugins
from hybridlab.composer.read.context import Reading
from hybridlab.composer.spec import ModelConfig
from hybridlab.specs.problems import did_you_mean
from hybridlab.specs.typecheck import describe, is_int


def import_plugins(r: Reading, plugins) -> tuple[str, ...]:
    spec_dir = r.path.resolve().parent if r.path is not None else None
    names = read_plugins(plugins, r.problem, allow=r.allow_plugins, spec_dir=spec_dir)
    r.plugins_refused = not r.allow_plugins and any(sys.modules.get(m) is None for m in names)
    return names


def read_name(r: Reading, top: dict) -> str:
    default = r.path.stem if r.path is not None else "model"
    name = top.get("name", default)
    if not isinstance(name, str) or not name.strip():
        r.problem(("name",), f"name must be a non-empty string, got {describe(name)}")
        return default
    return name


def read_model(r: Reading, top: dict) -> ModelConfig | None:
    """The ``model:`` settings; sets ``r.d_model`` (when usable) for validating the blocks."""
    if "model" not in top:
        r.problem((), "missing required key 'model'", "model: {d_model: 256, vocab_size: 256}",
                  at=r.start_of(()))
        return None
    raw = top["model"]
    if isinstance(raw, dict) and is_int(raw.get("d_model")) and raw["d_model"] > 0:
        r.d_model = raw["d_model"]    # blocks can be validated despite other model errors
    model = r.build_config(ModelConfig, raw, ("model",), "model")
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
            r.problem(path, message, hint)
            bad = True
    return None if bad else model
