"""The transformers config of a hybridlab model (``model_type = "hybridlab"``).

One source for two uses: hybridlab's own ``HybridLabConfig`` (``hybridlab.export.hf``) derives
from this class, and the fallback export copies this file verbatim into the model folder as
``configuration_hybridlab.py`` (``auto_map``), so a machine without hybridlab loads it with
``trust_remote_code=True``.

``hybridlab_spec`` is the model as plain data: ``{"name", "model": {ModelConfig fields},
"layers": [{"index", "name", "type", "stage", "config": {block Config fields}}], "plugins"}``;
``spec_yaml`` is the same model as a hybridlab spec file (what hybridlab itself reads).
"""
from transformers import PretrainedConfig


class HybridLabConfig(PretrainedConfig):
    model_type = "hybridlab"

    def __init__(self, spec_yaml: str = "", hybridlab_spec: dict | None = None, **kwargs):
        self.spec_yaml = spec_yaml
        self.hybridlab_spec = hybridlab_spec
        super().__init__(**kwargs)
