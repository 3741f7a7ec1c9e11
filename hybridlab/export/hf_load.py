"""``load_model`` for transformers folders: an ``export --format hf`` folder, or any
``save_pretrained`` copy of one (which keeps config.json and the weights, not spec.yaml).

* ``model_type: hybridlab``: the spec is config.json's ``spec_yaml`` (plugins never imported);
  weights carry the ``model.`` prefix (tied copies may be missing: save_pretrained drops them).
* a transformers class hybridlab maps (``hybridlab.export.hf_classes``): the spec is spec.yaml
  when the folder has one, else read from config.json (``hybridlab.export.hf_config.from_hf``);
  the weights are mapped back by running the export mapping in reverse.

    model = load_hf_folder(folder)     # HybridModel, or None: a folder load_model reads itself
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from hybridlab.composer.builder import build_model
from hybridlab.errors import ExportError, SpecError

CONFIG_FILE = "config.json"
SHARDS_INDEX = "model.safetensors.index.json"


def load_hf_folder(folder: str | os.PathLike, device=None, dtype=None):
    """The model in a transformers folder (eval mode, on ``device``, cast to ``dtype``), or None
    when ``folder`` has no config.json or is a hybridlab folder with its spec.yaml (the native
    reader handles those). Raises ``ExportError`` naming the file for anything else wrong."""
    from hybridlab.export.native import SPEC_FILE, WEIGHTS_FILE, _load_state, check_weights
    from hybridlab.export.native import load_export_spec

    folder = Path(folder)
    config_file, spec_file = folder / CONFIG_FILE, folder / SPEC_FILE
    weights = folder / WEIGHTS_FILE
    if not config_file.is_file() and not config_file.is_symlink():
        return None
    config = _read_config(config_file)
    model_type = config.get("model_type")
    if model_type == "hybridlab" and spec_file.is_file():
        return None
    for f in (config_file, weights):
        if f.is_symlink():
            raise ExportError(f"{f} is a symlink (to {os.readlink(f)}); a model folder's files "
                              "are plain files: put a copy of the file in its place")
    if not weights.is_file():
        if (folder / SHARDS_INDEX).is_file():
            raise ExportError(f"{folder} holds sharded weights ({SHARDS_INDEX}); hybridlab reads "
                              f"one {WEIGHTS_FILE}: save it again with save_pretrained(..., "
                              "max_shard_size='100GB')")
        raise ExportError(f"{folder} holds no {WEIGHTS_FILE}: the folder is incomplete")
    if model_type == "hybridlab":
        spec = _hybridlab_spec(config, config_file)
        prefix = check_weights(spec, weights)
        model = build_model(spec, device="cpu")
        state = _read_weights(weights)
        state = {k[len(prefix):]: v for k, v in state.items()}
    else:
        from hybridlab.export.hf_classes import module_for_type, to_hybridlab_state

        if module_for_type(str(model_type)) is None:
            raise ExportError(f"{config_file}: model_type {model_type!r} is neither hybridlab's "
                              "nor a transformers class hybridlab maps (nemotron_h, jamba, "
                              "bamba, zamba2, falcon_h1, granitemoehybrid, mamba, mamba2)")
        spec = load_export_spec(spec_file) if spec_file.is_file() else \
            _spec_from_config(config, config_file)
        model = build_model(spec, device="cpu")
        state = to_hybridlab_state(model, model_type, _read_weights(weights), str(weights))
    _load_state(model, state, weights)
    if dtype is not None:
        model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _read_config(config_file: Path) -> dict:
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ExportError(f"cannot read {config_file}: {e}") from None
    if not isinstance(config, dict):
        raise ExportError(f"{config_file} is not a JSON object")
    return config


def _read_weights(weights: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(weights), device="cpu")
    except Exception as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ExportError(f"{weights} is not a readable safetensors file ({detail})") from None


def _hybridlab_spec(config: dict, config_file: Path):
    from hybridlab.export.source import load_stored_spec

    text = config.get("spec_yaml")
    if not isinstance(text, str) or not text.strip():
        raise ExportError(f"{config_file} has no spec_yaml: not written by hybridlab's HF export")
    return load_stored_spec(text, f"{config_file} spec_yaml", where=f"{config_file} (spec_yaml)",
                            origin="a model folder", then="call load_model again")


def _spec_from_config(config: dict, config_file: Path):
    from hybridlab.export.hf_config import from_hf
    from hybridlab.composer.loader import load_spec

    try:
        text, left_out = from_hf(config, source=str(config_file))
        spec = load_spec(text, source=str(config_file))
    except SpecError as e:
        raise ExportError(f"{config_file} cannot be read as a hybridlab spec:\n"
                          + "\n".join(e.lines())) from None
    from hybridlab.export.hf_classes.common import ZeroWeights

    left_out = [n for n in left_out if not isinstance(n, ZeroWeights)]   # the mapping checks
    if left_out:                                                          # those are zero
        raise ExportError(f"{config_file} has settings hybridlab's model cannot reproduce, so "
                          f"its weights would not give the same outputs: {'; '.join(left_out)}")
    return spec
