"""Hugging Face transformers integration: a config class and a causal-LM class around
``HybridModel``, registered with the Auto classes under ``model_type = "hybridlab"``.

    import hybridlab                                    # registers once transformers is imported
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("exports/best-hf")
    out = model.generate(input_ids, max_new_tokens=32)  # decodes through HybridModel.step

* ``HybridLabConfig`` holds the full model spec as YAML (``spec_yaml``) plus the usual
  ``vocab_size`` / ``hidden_size`` / ``num_hidden_layers``, the layout in HF notation
  (``hybridlab_layer_types``) and, where transformers' validator accepts it (mixer + FFN pairs),
  the HF ``layer_types`` / ``mlp_layer_types`` themselves.
* ``HybridLabForCausalLM.forward(input_ids, labels=None)`` is the parallel forward. During
  ``generate`` the model keeps a hybridlab ``DecodeCache`` (SSM states + KV caches) under the
  model kwarg ``hl_cache``: the prompt is stepped through the recurrence once, then one
  ``step`` per new token. Greedy search and sampling work (``num_beams=1``); padded batches
  (attention masks with zeros) and beam search are not supported and raise.

Importing this module imports transformers; ``register()`` is what ``hybridlab`` calls (see
``hybridlab.export.hf_hook``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig
from transformers import PreTrainedModel
from transformers.generation.configuration_utils import GenerationMode
from transformers.utils import ModelOutput

MODEL_TYPE = "hybridlab"


class HybridLabConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, spec_yaml: str = "", **kwargs):
        self.spec_yaml = spec_yaml
        if spec_yaml:
            spec = _load(spec_yaml)
            m = spec.model
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
        super().__init__(**kwargs)


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
    import hybridlab
    return hybridlab.load_spec(spec_yaml, source="<config.json spec_yaml>")


@dataclass
class HybridLabCausalLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hl_cache: object | None = None


class HybridLabPreTrainedModel(PreTrainedModel):
    config_class = HybridLabConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules: list[str] = []

    def _init_weights(self, module):
        """HybridModel initialises its own weights when it is built."""


class HybridLabForCausalLM(HybridLabPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"model.head.weight": "model.embed.weight"}
    _is_stateful = True
    _supported_generation_modes = [GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE]

    def __init__(self, config: HybridLabConfig):
        super().__init__(config)
        from hybridlab.composer.builder import HybridModel
        self.model = HybridModel(_load(config.spec_yaml))
        self.post_init()

    # -- embeddings (for HF utilities) ---------------------------------------------------------
    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value):
        self.model.embed = value

    def get_output_embeddings(self):
        return self.model.head

    def set_output_embeddings(self, value):
        self.model.head = value

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, input_ids: torch.LongTensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.LongTensor | None = None,
                hl_cache=None, use_cache: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> HybridLabCausalLMOutput:
        if input_ids is None:
            raise ValueError("HybridLabForCausalLM needs input_ids (inputs_embeds are not "
                             "supported)")
        if attention_mask is not None and bool((attention_mask == 0).any()):
            raise ValueError("padded batches are not supported: hybridlab models decode with a "
                             "recurrent state; give prompts of equal length without padding")
        if hl_cache is None:
            logits = self.model(input_ids)
        else:
            steps = []
            for t in range(input_ids.shape[1]):
                step_logits, hl_cache = self.model.step(input_ids[:, t], hl_cache)
                steps.append(step_logits)
            logits = torch.stack(steps, dim=1)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return HybridLabCausalLMOutput(loss=loss, logits=logits, hl_cache=hl_cache)

    # -- generation through the recurrent step -------------------------------------------------
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode,
                                      batch_size, max_cache_length, *args, **kwargs):
        if generation_config.use_cache is False or model_kwargs.get("hl_cache") is not None:
            return
        if getattr(generation_config, "num_beams", 1) not in (None, 1):
            raise ValueError("beam search is not supported by hybridlab models (num_beams=1)")
        model_kwargs["hl_cache"] = self.model.init_cache(batch_size, int(max_cache_length))

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None,
                                      hl_cache=None, attention_mask=None, **kwargs):
        if hl_cache is not None and hl_cache.position > self.model.n_meta:
            input_ids = input_ids[:, -1:]         # the state holds everything before
        inputs = {"input_ids": input_ids, "hl_cache": hl_cache,
                  "attention_mask": attention_mask}
        if "use_cache" in kwargs:
            inputs["use_cache"] = kwargs["use_cache"]
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False,
                                            num_new_tokens=1):
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder,
            num_new_tokens=num_new_tokens)
        model_kwargs["hl_cache"] = outputs.hl_cache
        return model_kwargs


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
    parts = [f"{m.class_name}: {'; '.join(m.reasons[:2])}"
             + (f" (+{len(m.reasons) - 2} more)" if len(m.reasons) > 2 else "")
             for m in misfits]
    return "no transformers class fits (" + " | ".join(parts) + ")"


def write_hf(out_dir: str | os.PathLike, model, *, source=None, native: bool = True):
    """Write ``model`` (HybridModel) as a transformers folder: the matching transformers class
    when one fits (``native``; loads with transformers alone), else hybridlab's own classes.
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
            wrapper = from_hybrid_model(model)
            wrapper.config.update({k: v for k, v in hf_tokenizer.special_ids(vocab).items()})
            _save(wrapper, tmp)
            if misfits:
                notes.append(_fallback_note(misfits))
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
        how = ("```python\nimport hybridlab\nfrom transformers import "
               "AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(\"path/to/"
               "this/folder\")\nout = model.generate(input_ids, max_new_tokens=32)\n```\n\n"
               "Or natively:\n")
    return card.replace("## How to load\n", "## How to load\n\n" + how, 1)


register()      # importing this module means transformers is here: register now
