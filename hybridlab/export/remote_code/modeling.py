"""The transformers causal-LM class around ``HybridModel``.

One source for two uses, like ``configuration.py``: ``hybridlab.export.hf`` builds on these
classes, and the fallback export copies this file verbatim (imports rewritten) into the model
folder as ``modeling_hybridlab.py``, beside copies of the builder and block modules, so the
folder runs with ``trust_remote_code=True`` where hybridlab is not installed.

* ``forward(input_ids, labels=None)`` is the parallel forward.
* During ``generate`` the model keeps a ``DecodeCache`` (SSM states + KV caches) under the model
  kwarg ``hl_cache``: the prompt is stepped through the recurrence once, then one ``step`` per
  new token. Greedy search and sampling work (``num_beams=1``); padded batches (attention masks
  with zeros) and beam search are not supported and raise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.generation.configuration_utils import GenerationMode
from transformers.utils import ModelOutput

from hybridlab.blocks.registry import get_block
from hybridlab.composer.builder import HybridModel
from hybridlab.composer.spec import InitConfig, LayerSpec, ModelConfig, ModelSpec
from hybridlab.export.remote_code.configuration import HybridLabConfig
from hybridlab.export.remote_code.plugins import PLUGINS  # noqa: F401  (registers plugin blocks)


def spec_to_dict(spec: ModelSpec) -> dict:
    """``ModelSpec`` -> plain JSON data (``HybridLabConfig.hybridlab_spec``)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return {"name": spec.name, "model": plain(spec.model), "plugins": list(spec.plugins),
            "layers": [{"index": la.index, "name": la.name, "type": la.type, "stage": la.stage,
                        "config": plain(la.config)} for la in spec.layers]}


def spec_from_dict(data: dict) -> ModelSpec:
    """``HybridLabConfig.hybridlab_spec`` -> ``ModelSpec`` (the blocks' Config classes)."""
    model = dict(data["model"])
    model["init"] = InitConfig(**model.get("init", {}))
    layers = tuple(LayerSpec(index=int(la["index"]), name=la["name"], type=la["type"],
                             config=get_block(la["type"]).Config(**la["config"]),
                             stage=int(la.get("stage", 0)))
                   for la in data["layers"])
    return ModelSpec(name=data.get("name", "model"), model=ModelConfig(**model), layers=layers,
                     plugins=tuple(data.get("plugins", ())))


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
        self.model = HybridModel(self.model_spec(config))
        self.post_init()

    @classmethod
    def model_spec(cls, config) -> ModelSpec:
        """The model the config describes (hybridlab's own subclass reads ``spec_yaml``)."""
        if not config.hybridlab_spec:
            raise ValueError("this config has no hybridlab_spec: export it again with "
                             "hybridlab export --format hf")
        return spec_from_dict(config.hybridlab_spec)

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
