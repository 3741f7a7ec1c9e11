"""Hugging Face transformers integration: a config class and a causal-LM class around
``HybridModel``, registered with the Auto classes under ``model_type = "hybridlab"``, and the
``--format hf`` export.

    import hybridlab                                    # registers once transformers is imported
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("exports/best-hf")
    out = model.generate(input_ids, max_new_tokens=32)  # decodes through HybridModel.step

``write_hf`` writes the matching transformers class when the model fits one
(``hybridlab.export.hf_classes``: loads with transformers alone); otherwise hybridlab's own
classes plus a ``trust_remote_code`` package of hybridlab's source (``remote_code``), so the
folder loads with ``trust_remote_code=True`` where hybridlab is not installed, and without it
where hybridlab is.

* ``HybridLabConfig`` holds the full model spec as YAML (``spec_yaml``) and as plain data
  (``hybridlab_spec``, what the remote code reads), the usual ``vocab_size`` / ``hidden_size`` /
  ``num_hidden_layers``, the layout in HF notation (``hybridlab_layer_types``) and, where
  transformers' validator accepts it (mixer + FFN pairs), the HF ``layer_types`` /
  ``mlp_layer_types`` themselves.
* ``HybridLabForCausalLM`` (``remote_code/modeling.py``): the parallel forward, and generation
  through the recurrent step.

Importing this module imports transformers and registers the classes; ``hybridlab`` itself
registers them when transformers is imported (``hybridlab.export.hf_hook``).
"""
from __future__ import annotations

import os

from transformers import AutoConfig, AutoModelForCausalLM

from hybridlab.export.remote_code import configuration as _remote_config
from hybridlab.export.remote_code import modeling as _remote

MODEL_TYPE = _remote_config.HybridLabConfig.model_type
HybridLabCausalLMOutput = _remote.HybridLabCausalLMOutput
AUTO_MAP = {"AutoConfig": "configuration_hybridlab.HybridLabConfig",
            "AutoModelForCausalLM": "modeling_hybridlab.HybridLabForCausalLM"}


class HybridLabConfig(_remote_config.HybridLabConfig):
    """hybridlab's config: reads ``spec_yaml`` with hybridlab's loader to fill in the rest."""

    def __init__(self, spec_yaml: str = "", hybridlab_spec: dict | None = None, **kwargs):
        if spec_yaml:
            spec = _load(spec_yaml)
            m = spec.model
            if hybridlab_spec is None:
                hybridlab_spec = _remote.spec_to_dict(spec)
            kwargs.setdefault("vocab_size", m.vocab_size)
            kwargs.setdefault("hidden_size", m.d_model)
            kwargs.setdefault("tie_word_embeddings", bool(m.tie_embeddings))
            kwargs.setdefault("hybrid_pattern", spec.pattern)
            kwargs.setdefault("hybridlab_layers", len(spec.layers))
            if "layer_types" not in kwargs and "hybridlab_layer_types" not in kwargs:
                try:
                    from hybridlab.composer.convert import to_hf
                    notation = to_hf(spec)
                except Exception:       # a layout HF notation cannot express: leave it out
                    notation = None
                if notation is not None:
                    kwargs["hybridlab_layer_types"] = notation
                    if _valid_for_hf(notation):
                        kwargs.update(notation)
            # an HF decoder layer is a mixer (+ its FFN when layer_types pairs them)
            kwargs.setdefault("num_hidden_layers", len(kwargs.get("layer_types") or spec.layers))
        super().__init__(spec_yaml=spec_yaml, hybridlab_spec=hybridlab_spec, **kwargs)


def _valid_for_hf(notation: dict) -> bool:
    """Whether transformers' config validator accepts these ``layer_types`` (it knows no
    separate FFN layers, e.g. Nemotron-H's flat list with ``mlp`` / ``moe`` entries)."""
    try:
        from transformers.configuration_utils import (ALLOWED_ATTN_LAYER_TYPES,
                                                      ALLOWED_MLP_LAYER_TYPES)
    except ImportError:
        return True
    return all(t in ALLOWED_ATTN_LAYER_TYPES for t in notation.get("layer_types", [])) and \
        all(t in ALLOWED_MLP_LAYER_TYPES for t in notation.get("mlp_layer_types", []))


def _load(spec_yaml: str):
    from hybridlab.composer.loader import load_spec
    return load_spec(spec_yaml, source="<config.json spec_yaml>")


class HybridLabPreTrainedModel(_remote.HybridLabPreTrainedModel):
    config_class = HybridLabConfig


class HybridLabForCausalLM(_remote.HybridLabForCausalLM):
    """Built from ``spec_yaml`` with hybridlab's loader (validated); ``hybridlab_spec`` (the
    remote code's source) when a config has no YAML."""

    config_class = HybridLabConfig

    @classmethod
    def model_spec(cls, config):
        if getattr(config, "spec_yaml", ""):
            return _load(config.spec_yaml)
        return super().model_spec(config)


_registered = False


def register() -> None:
    """Register the config and model with transformers' Auto classes (idempotent; runs when
    this module is imported, and from ``hybridlab.export.hf_hook``)."""
    global _registered
    if _registered:
        return
    AutoConfig.register(MODEL_TYPE, HybridLabConfig, exist_ok=True)
    AutoModelForCausalLM.register(HybridLabConfig, HybridLabForCausalLM, exist_ok=True)
    _registered = True


def from_hybrid_model(model) -> HybridLabForCausalLM:
    """Wrap a trained ``HybridModel`` (weights shared, not copied)."""
    from hybridlab.composer.canonical import dump_spec_yaml
    config = HybridLabConfig(spec_yaml=dump_spec_yaml(model.spec))
    wrapper = HybridLabForCausalLM(config)
    wrapper.model = model
    return wrapper.eval()


def export_hf(store, study: str, out_dir: str | os.PathLike, *, trial: int | None = None,
              best: str | None = None):
    """Export a trained trial as a transformers folder (plus spec.yaml, metrics.json, README)."""
    from hybridlab.export.native import find_trial, load_trial_model

    src = find_trial(store, study, trial=trial, best=best)
    return write_hf(out_dir, load_trial_model(src), source=src)


def _save(wrapper: HybridLabForCausalLM, folder: str) -> None:
    """config.json and model.safetensors with one entry per parameter name. Weights shared
    inside the model (tied embeddings, shared attention blocks) are written under each of their
    names, so loading needs no knowledge of the sharing; the model's own construction re-shares
    them."""
    from safetensors.torch import save_file

    config = wrapper.config
    config.architectures = [type(wrapper).__name__]
    config.dtype = next(wrapper.parameters()).dtype
    config.save_pretrained(folder)
    state = {k: v.detach().cpu().clone().contiguous()
             for k, v in wrapper.state_dict(keep_vars=False).items()}
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def _fallback_note(misfits) -> str:
    """Why no transformers class fits, one line: each class with its first reasons."""
    parts = [f"{m.class_name}: {m.reasons[0]}"
             + (f" (+{len(m.reasons) - 1} more)" if len(m.reasons) > 1 else "")
             for m in misfits]
    return "no transformers class fits -- " + " | ".join(parts)


def write_hf(out_dir: str | os.PathLike, model, *, source=None, native: bool = True):
    """Write ``model`` (HybridModel) as a transformers folder: the matching transformers class
    when one fits (``native``; loads with transformers alone), else hybridlab's own classes with
    their ``trust_remote_code`` package (loads where hybridlab is not installed).
    Files go first into a private temporary folder inside ``out_dir``, then each is moved into
    place (nothing written outside)."""
    import json
    import shutil
    import tempfile

    from hybridlab.composer.canonical import dump_spec_yaml
    from hybridlab.export import hf_tokenizer
    from hybridlab.export.hf_classes import find_class, write_native
    from hybridlab.export.native import (CARD_FILE, METRICS_FILE, SPEC_FILE, ExportResult,
                                         export_metrics, model_card)
    from hybridlab.export.safe import ExportDir
    from hybridlab.storage.repository import file_sha256

    register()
    out = ExportDir(out_dir)
    model = model.cpu().eval()
    vocab = model.spec.model.vocab_size
    found, misfits = find_class(model) if native else (None, [])
    notes: list[str] = []
    tmp = tempfile.mkdtemp(prefix=".hf-", dir=out.path)
    files = []
    try:
        if found is not None:
            write_native(found, tmp, extra_config=hf_tokenizer.special_ids(vocab))
            notes += found.notes
        else:
            from hybridlab.export.remote_code.package import write_package

            wrapper = from_hybrid_model(model)
            wrapper.config.update({k: v for k, v in hf_tokenizer.special_ids(vocab).items()})
            wrapper.config.auto_map = dict(AUTO_MAP)
            _save(wrapper, tmp)
            write_package(tmp, model.spec)
            if misfits:
                notes.append(_fallback_note(misfits))
            notes.append("remote code: loads with trust_remote_code=True without hybridlab "
                         "(modeling_hybridlab.py and hybridlab's block sources in the folder)")
        hf_tokenizer.generation_config(vocab).save_pretrained(tmp)
        if hf_tokenizer.write_tokenizer(tmp, vocab):
            notes.append("byte-level tokenizer: token id = byte value; byte 0 (NUL) is "
                         "bos/eos/pad")
        for name in sorted(os.listdir(tmp)):
            path = os.path.join(tmp, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files.append(out.copy_in(name, path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metrics = export_metrics(model, source)
    weights = out.path / "model.safetensors"
    if weights.is_file():
        metrics["weights_sha256"] = file_sha256(weights)[0]
    metrics["format"] = "hf"
    metrics["hf_architecture"] = found.architecture if found else HybridLabForCausalLM.__name__
    metrics["hf_notes"] = notes
    files.append(out.write_text(SPEC_FILE, dump_spec_yaml(model.spec)))
    files.append(out.write_text(METRICS_FILE, json.dumps(metrics, indent=2, default=str) + "\n"))
    files.append(out.write_text(CARD_FILE, _card(model_card(metrics), found)))
    return ExportResult(path=out.path, files=sorted(set(files)),
                        study=source.study if source else "",
                        trial=source.number if source else None, format="hf", notes=notes)


def _card(card: str, found) -> str:
    if found is not None:
        how = (f"A `{found.architecture}` folder: transformers loads it alone, no hybridlab "
               "and no remote code.\n\n```python\nfrom transformers import "
               "AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(\"path/to/"
               "this/folder\")\nout = model.generate(input_ids, max_new_tokens=32)\n```\n\n"
               "Or natively:\n")
    else:
        how = ("hybridlab's own classes; the folder carries their source (remote code), so "
               "transformers loads it without hybridlab when you trust it:\n\n```python\nfrom "
               "transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM."
               "from_pretrained(\"path/to/this/folder\", trust_remote_code=True)\nout = "
               "model.generate(input_ids, max_new_tokens=32)\n```\n\nWith hybridlab "
               "installed, `import hybridlab` first and leave out trust_remote_code. "
               "Or natively:\n")
    return card.replace("## How to load\n", "## How to load\n\n" + how, 1)


register()      # importing this module means transformers is here: register now
