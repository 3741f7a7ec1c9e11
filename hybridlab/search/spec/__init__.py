"""Search specs: the YAML that describes a search, read into a typed ``SearchSpec``.

* ``schema``      the typed objects: ``SearchSpec``, ``Param``, ``Objective``, ``Constraint`` ...
* ``load``        ``load_search_spec``: the file, its top-level keys and the base model spec
* ``sections``    the settings: tasks, train, objectives, constraints, sampler, heartbeat, cost
* ``dimensions``  the space and the baselines
* ``context``     one spec being read: its problems, allowed folders, probe budget
* ``metrics``     what a trial measures (metric names, aliases, context lengths)
* ``paths``       dotted paths into a spec mapping: ``blocks."*".n_heads``, ``layout.ffn[0]``

The names below are the package's public face; import them from here.
"""
from hybridlab.search.spec.load import load_search_spec
from hybridlab.search.spec.paths import PathSyntaxError, format_path, get_path, parse_path, set_path
from hybridlab.search.spec.schema import (SEARCH_MARKS, SEARCH_SPEC, Constraint, HeartbeatConfig,
                                          Objective, Param, SamplerConfig, SearchSpec, TaskEntry)
from hybridlab.search.spec.sections import cost_settings, make_train_config, train_fields

__all__ = ["load_search_spec", "SearchSpec", "Param", "Objective", "Constraint", "TaskEntry",
           "SamplerConfig", "HeartbeatConfig", "SEARCH_SPEC", "SEARCH_MARKS", "make_train_config",
           "cost_settings", "train_fields", "PathSyntaxError", "parse_path", "format_path",
           "get_path", "set_path"]
