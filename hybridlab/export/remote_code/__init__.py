"""The fallback HF export's remote code: ``configuration.py`` and ``modeling.py`` are hybridlab's
own transformers classes *and* the files the export copies into a model folder (with the
builder, blocks and reference kernels they import; see ``package.py``), so the folder loads with
``trust_remote_code=True`` on a machine without hybridlab. ``plugins.py`` is the placeholder the
copy replaces with the spec's plugin imports."""
