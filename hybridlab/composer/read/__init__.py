"""The model-spec reader's steps, one module per section (``composer.loader`` runs them):

* ``context``    ``Reading``: one spec being read (problems, positions, typed configs)
* ``model``      ``plugins:``, ``name:`` and ``model:``
* ``blocks``     ``blocks:``, and resolving the names the layers use
* ``layers``     ``pattern:`` -> one ``LayerSpec`` per layer
* ``layout``     ``layout:`` (ratios) -> the layers' block names
* ``overrides``  ``overrides:``: per-layer changes to a block's Config
"""
