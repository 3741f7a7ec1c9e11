"""The toolkit shared by the model-spec reader (``hybridlab.composer.loader``) and the search-spec
reader (``hybridlab.search.spec``), so both read, check and word problems the same way:

* ``source``     bounded YAML reading: the data plus a ``SourceMap`` of file positions per field
* ``limits``     the bounds on spec input (file size, YAML values, layers, list lengths ...)
* ``problems``   ``Problems``: every problem of a file, placed by field path; did-you-mean wording
* ``typecheck``  YAML values checked against dataclass annotations (``convert``, ``Mismatch``)

Nothing here knows about models or searches; it imports only ``hybridlab.errors``.
"""
