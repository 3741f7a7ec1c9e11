"""Native transformers classes: a hybridlab model written so that the matching transformers
class loads it with no hybridlab and no remote code.

    native, misfits = find_class(model)      # NativeExport, or None and why each class refused
    files = write_native(native, folder)     # config.json + model.safetensors, checked
    state = to_hybridlab_state(model, "nemotron_h", hf_state)   # and back, for load_model

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


def module_for_type(model_type: str):
    """The class module for a transformers ``model_type`` ("nemotron_h"), or None."""
    for name in CLASSES:
        module = class_module(name)
        if module.MODEL_TYPE == model_type:
            return module
    return None


def to_hybridlab_state(model, model_type: str, hf_state: dict, source: str = "") -> dict:
    """transformers weights -> ``model``'s state dict: the mapping run backwards.

    Every class mapping only selects, slices, transposes and stacks hybridlab's tensors (plus
    zeros where the class has a weight hybridlab lacks), so running it on *probe* tensors --
    each element holding its own position -- says where every transformers element comes
    from. Those zeros must still be zero, and weights hybridlab ties must still be equal."""
    import torch

    from hybridlab.errors import ExportError

    module = module_for_type(model_type)
    own = model.state_dict()
    probe, spans, start = {}, {}, 1                # id 0 marks an element hybridlab lacks
    for k, v in own.items():
        probe[k] = torch.arange(start, start + v.numel(), dtype=torch.float64).reshape(v.shape)
        spans[k] = (start, v.numel())
        start += v.numel()
    try:
        native = module.fit(model, probe)
    except Misfit as e:
        raise ExportError(f"{source}: the spec does not fit {model_type}: "
                          f"{'; '.join(e.reasons)}") from None
    extra = sorted(set(hf_state) - set(native.weights))
    if extra:
        raise ExportError(f"{source}: tensors the spec does not make: {', '.join(extra[:5])}")
    values = torch.zeros(start, dtype=torch.float64)
    covered = torch.zeros(start, dtype=torch.bool)
    for name, ids in native.weights.items():
        if name not in hf_state:
            continue                                # a tied copy transformers did not save
        got = hf_state[name]
        if tuple(got.shape) != tuple(ids.shape):
            raise ExportError(f"{source}: {name} has shape {list(got.shape)}, the spec makes "
                              f"{list(ids.shape)}")
        ids, vals = ids.reshape(-1), got.detach().to(torch.float64).reshape(-1)
        real = ids > 0
        if bool((vals[~real] != 0).any()):
            raise ExportError(f"{source}: {name} has non-zero entries where hybridlab has no "
                              "weight (written as zeros at export); the model was changed in a "
                              "way hybridlab cannot express")
        values[ids[real].long()] = vals[real]
        covered[ids[real].long()] = True
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in hf_state.values()) \
        else torch.float32
    state = {}
    for k, (s, n) in spans.items():
        seen = covered[s:s + n]
        if bool(seen.all()):
            state[k] = values[s:s + n].reshape(own[k].shape).to(dtype)
        elif bool(seen.any()):
            raise ExportError(f"{source}: {k} is only partly in the file")
    _check_ties(model, state, source)
    return state


def _check_ties(model, state: dict, source: str) -> None:
    """Weights shared in ``model`` (tied embeddings, a shared core) must agree in the file."""
    from hybridlab.errors import ExportError

    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    for names in groups.values():
        found = [n for n in names if n in state]
        for other in found[1:]:
            if not state[other].equal(state[found[0]]):
                raise ExportError(f"{source}: {found[0]} and {other} differ, but the spec "
                                  "shares one weight between them (tied embeddings or a shared "
                                  "block)")


IGNORED_CONFIG_KEYS = ("model_type", "architectures", "transformers_version", "auto_map",
                       "dtype", "torch_dtype")


def spec_from_hf_config(config: dict, source: str = "<config.json>") -> tuple[dict, list[str]]:
    """A transformers config.json (as a dict) -> spec data and the settings it leaves out.
    transformers' own config class fills the defaults and checks the fields first."""
    from transformers import CONFIG_MAPPING

    from hybridlab.errors import Problem, SpecError

    model_type = config.get("model_type")
    module = module_for_type(str(model_type))
    if module is None:
        known = ", ".join(class_module(n).MODEL_TYPE for n in CLASSES)
        raise SpecError(Problem(f"model_type {model_type!r} has no hybridlab mapping",
                                file=source, field="model_type", hint=f"supported: {known}"))
    kwargs = {k: _floats(v) for k, v in config.items() if k not in IGNORED_CONFIG_KEYS}
    try:
        hf_config = CONFIG_MAPPING[model_type](**kwargs)
    except Exception as e:             # transformers' validators raise several kinds
        raise SpecError(Problem(f"transformers rejects this config: {str(e).splitlines()[0]}",
                                file=source, field="model_type")) from None
    return module.to_spec(hf_config)


def _floats(value):
    """transformers writes inf and nan in config.json as {"__float__": "Infinity"}."""
    if isinstance(value, dict):
        if set(value) == {"__float__"} and value["__float__"] in ("Infinity", "-Infinity", "NaN"):
            return float(value["__float__"].replace("Infinity", "inf"))
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def hf_config_for(spec) -> tuple[dict | None, list[Misfit]]:
    """The transformers config (fields, model_type, architectures) of the class ``spec`` fits,
    built on the meta device (any size), or None and why each class refused."""
    from hybridlab.composer.builder import build_model

    native, misfits = find_class(build_model(spec, device="meta"))
    if native is None:
        return None, misfits
    return {"model_type": native.model_type, "architectures": [native.architecture],
            **native.config}, misfits


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
           "hf_config_for", "make_config", "module_for_type", "spec_from_hf_config",
           "to_hybridlab_state", "write_native"]
