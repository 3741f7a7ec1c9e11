"""A transformers config.json (NemotronH, Jamba, Bamba, Zamba2, FalconH1, GraniteMoeHybrid,
Mamba, Mamba2) as a hybridlab spec of the same layout and sizes: its parameter count is
transformers' for that config. The class mappings live in ``hybridlab.export.hf_classes``; the
settings a spec cannot hold (muP multipliers, ...) are returned and written as comments.
"""
from __future__ import annotations

import json

import yaml

from hybridlab.composer.loader import load_spec
from hybridlab.errors import Problem, SpecError
from hybridlab.export.hf_classes import spec_from_hf_config
from hybridlab.specs.source import read_text_file


def read_hf_config(path) -> dict:
    """A config.json file -> dict; unreadable files and bad JSON are SpecErrors with the line."""
    text = read_text_file(path, str(path))
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(Problem(f"not valid JSON: {e.msg}", file=str(path), line=e.lineno,
                                col=e.colno)) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise SpecError(Problem("a transformers config.json is a JSON object with a model_type",
                                file=str(path), field="model_type"))
    return config


def from_hf(config: dict, source: str = "<config.json>", name: str | None = None
            ) -> tuple[str, list[str]]:
    """transformers config (dict) -> (YAML spec text, settings the spec leaves out). The text is
    validated before it is returned; the left-out settings are also comments at its top."""
    data, notes = spec_from_hf_config(config, source)
    if name:
        data["name"] = name
    header = f"# converted from {source} (transformers model_type {config['model_type']})\n"
    header += "".join(f"# left out: {note}\n" for note in notes)
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    load_spec(text, source=f"<from-hf {source}>")
    return text, notes
