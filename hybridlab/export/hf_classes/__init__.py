"""Native transformers classes: a hybridlab model written so that the matching transformers
class loads it with no hybridlab and no remote code.

    native, misfits = find_class(model)      # NativeExport, or None and why each class refused
    files = write_native(native, folder)     # config.json + model.safetensors, checked

One module per class, each with ``fit(model) -> NativeExport`` (raising ``Misfit`` with the
options the class lacks). ``find_class`` tries them most specific first: a pure Mamba-2 stack is
a ``Mamba2ForCausalLM`` rather than a one-kind NemotronH.
"""
from __future__ import annotations

import importlib
import os

from hybridlab.export.hf_classes.common import Misfit, NativeExport

#: module names under hybridlab.export.hf_classes, tried in this order
CLASSES = ("mamba", "mamba2", "jamba", "nemotron_h", "bamba", "granite_moe_hybrid", "falcon_h1",
           "zamba2")


def class_module(name: str):
    return importlib.import_module(f"hybridlab.export.hf_classes.{name}")


def find_class(model, state: dict | None = None) -> tuple[NativeExport | None, list[Misfit]]:
    """The first class ``model`` fits, or None and every class's reasons. ``state`` stands in
    for ``model.state_dict()`` (a meta-device model with real or probe tensors)."""
    misfits = []
    for name in CLASSES:
        try:
            module = class_module(name)
        except ModuleNotFoundError:          # a class not written yet
            continue
        try:
            return module.fit(model, state), misfits
        except Misfit as e:
            misfits.append(e)
    return None, misfits


def make_config(native: NativeExport, dtype, extra: dict | None = None):
    """The transformers config object (the class validates its own fields)."""
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[native.model_type](**native.config, **(extra or {}))
    config.architectures = [native.architecture]
    config.dtype = dtype
    return config


def check_weights(native: NativeExport, config) -> None:
    """Every parameter the transformers class has is in ``native.weights`` with its shape, and
    nothing else (a mapping bug fails here, at export, not at someone else's load)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config)
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    if native.tied:
        expected.pop("lm_head.weight", None)
    got = {k: tuple(v.shape) for k, v in native.weights.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or wrong:
        raise AssertionError(
            f"hybridlab's {native.architecture} mapping is wrong: missing {missing[:4]}, "
            f"unexpected {extra[:4]}, wrong shapes "
            f"{[(k, got[k], expected[k]) for k in wrong[:4]]}")


def write_native(native: NativeExport, folder: str | os.PathLike, extra_config: dict | None = None):
    """config.json and model.safetensors of ``native`` into ``folder``; returns the config."""
    from safetensors.torch import save_file

    dtype = next(iter(native.weights.values())).dtype
    config = make_config(native, dtype, extra_config)
    check_weights(native, config)
    config.save_pretrained(folder)
    save_file(native.weights, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})
    return config


__all__ = ["CLASSES", "Misfit", "NativeExport", "check_weights", "class_module", "find_class",
           "make_config", "write_native"]
