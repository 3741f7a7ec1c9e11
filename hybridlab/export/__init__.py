"""Export searched models: native folders (``load_model``), Hugging Face folders, scaled layouts.

* ``native``   spec.yaml + model.safetensors + metrics.json + README.md; ``load_model(DIR)``
* ``hf``       transformers config/model classes (``register()``) and ``export_hf``
* ``hf_classes`` one module per native transformers class: the weight/config mapping, both ways
* ``remote_code`` the fallback's trust_remote_code package (hybridlab's own source, copied)
* ``hf_tokenizer`` the byte-level tokenizer and generation config an HF folder ships
* ``hf_load``  ``load_model`` for HF folders and their save_pretrained copies
* ``hf_hook``  ``install()``: registers with transformers once it is imported (cheap)
* ``layout``   ``scale_spec`` / ``export_layout`` for ``--layout-only``
* ``generate`` decoding through the recurrent step (``generate_text`` for byte-level models)
* ``bundle``   an export zipped for download (the web UI's Export tab)
* ``safe``     writing files that never leave the export folder

Submodules are imported on first use, so ``import hybridlab.export`` stays cheap.
"""
from __future__ import annotations


def load_model(path, device=None, dtype=None):
    """Rebuild an exported model (native or hf folder); see ``hybridlab.export.native``."""
    from hybridlab.export.native import load_model as _load
    return _load(path, device=device, dtype=dtype)


__all__ = ["load_model"]
