"""Search spec: YAML -> validated, typed ``SearchSpec`` (checked once, here; trusted after).

    name: ratio-and-state
    base: hybrid-small.yaml            # model spec: path (relative to this file) or a mapping
    space:                             # dotted paths into the model spec (or train.<setting>)
      layout.mix.M: {int: [4, 15]}
      blocks.M.type: {choice: [mamba1, mamba2, mamba3]}
      blocks."*".n_heads: {choice: [2, 4]}     # quote keys holding '.', '*' or '[' ...
      train.lr: {float: [1.0e-4, 3.0e-3], log: true}
    tasks: [{name: mqar, kv_pairs: 8, weight: 2}, {name: parity}]
    train: {steps: 100, batch_size: 16, lr: 1.0e-3}
    objectives: [{metric: quality, direction: maximize}, {metric: state_bytes@32768, direction: minimize}]
    constraints: {params_max: 5.0e7}
    sampler: {name: nsga2, seed: 0}
    trials: 24
    baselines: [{blocks.M.type: mamba2, layout.mix.M: 8}]

Every problem is a ``Problem`` with file, line, column and field; all problems of a file are
reported together. Input is bounded (``hybridlab.specs.limits``: file size, YAML values, list
lengths); the base model's ``plugins:`` are imported only with ``allow_plugins``; a caller that
takes paths from others (the web UI) passes ``allowed_roots`` to confine ``base:`` and task paths.

This module reads the file, the top-level keys and the base model spec; ``sections`` reads the
settings, ``dimensions`` the space and the baselines.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hybridlab.composer.loader import MODEL_SPEC
from hybridlab.errors import Problem, SpecError
from hybridlab.search.spec.context import Reading, suggest
from hybridlab.search.spec.dimensions import check_grid, read_baselines, read_space
from hybridlab.search.spec.schema import SEARCH_SPEC, SearchSpec
from hybridlab.search.spec.sections import (check_vocab, read_constraints, read_cost,
                                            read_heartbeat, read_objectives, read_sampler,
                                            read_tasks, read_train, read_trials)
from hybridlab.specs.source import SourceMap, parse_yaml, read_text_file

TOP_KEYS = ("name", "base", "space", "tasks", "train", "objectives", "constraints", "sampler",
            "trials", "baselines", "heartbeat", "cost", "description")


def load_search_spec(source: str | Path | Mapping, *, file: str | None = None,
                     base_dir: str | Path | None = None, allow_plugins: bool = False,
                     allowed_roots: tuple[Path, ...] | None = None) -> SearchSpec:
    """Path to a YAML file, YAML text, or a mapping -> ``SearchSpec``. Raises ``SpecError``.

    A relative ``base:`` path is read relative to the spec file; for YAML text or a mapping,
    relative to ``base_dir`` (default: the working directory). ``file`` names the source in
    error messages. ``allow_plugins``: the base model spec may import its ``plugins:`` (see
    ``load_spec``). ``allowed_roots``: a ``base:`` file or a task's ``paths`` entry that resolves
    outside every root is refused with the same message as a missing one (None: no confinement).
    """
    base_dir = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    if isinstance(source, Mapping):
        shown = file or "<search spec>"
        data, src, text = dict(source), SourceMap.empty(shown), ""
    else:
        s = str(source)
        if isinstance(source, Path) or ("\n" not in s and not s.lstrip().startswith("{")):
            path = Path(s)
            shown = file or s
            text = read_text_file(path, shown)
            base_dir = path.resolve().parent
            data, src = parse_yaml(text, shown, kind=SEARCH_SPEC)
        else:
            shown, text = file or "<search spec>", s
            data, src = parse_yaml(text, shown)
    ctx = Reading(src, allow_plugins, allowed_roots)
    ctx.problems.duplicates(lambda key: (f"key {key!r} is written twice",
                                         "YAML would silently keep only the last one"))
    if not isinstance(data, Mapping):
        ctx.add((), "a search spec is a YAML mapping (name:, base:, space:, objectives: ...)")
        raise SpecError(ctx.problems.items)
    spec = _build(data, ctx, base_dir, text, shown if not isinstance(source, Mapping) else None)
    ctx.problems.raise_if_any()
    assert spec is not None
    return spec


def _build(data: Mapping, ctx: Reading, base_dir: Path, text: str, source: str | None):
    for key in data:
        if key not in TOP_KEYS:
            ctx.add((key,), f"unknown key {key!r}", suggest(key, TOP_KEYS), at_key=True)
    for key in ("name", "base", "space", "objectives"):
        if key not in data:
            ctx.add((), f"missing required key {key!r}")

    name = data.get("name")
    if "name" in data and (not isinstance(name, str) or not name.strip()):
        ctx.add(("name",), f"the study name must be a non-empty string, got {name!r}")
        name = None

    base, base_source = _load_base(data, ctx, base_dir)
    tasks = read_tasks(data, ctx)
    labels = [t.label for t in tasks]
    train = read_train(data, ctx)
    objectives = read_objectives(data, ctx, labels)
    constraints = read_constraints(data, ctx, labels)
    sampler = read_sampler(data, ctx)
    trials = read_trials(data, ctx)
    heartbeat = read_heartbeat(data, ctx)
    cost = read_cost(data, ctx)
    space = read_space(data, ctx, base)
    baselines = read_baselines(data, ctx, space, trials)
    check_vocab(base, tasks, space, ctx)
    if sampler is not None and sampler.name == "grid":
        check_grid(space, ctx)
    if ctx.problems:
        return None
    return SearchSpec(name=name.strip(), base=base, base_source=base_source, space=tuple(space),
                      tasks=tuple(tasks), train=train, objectives=tuple(objectives),
                      constraints=tuple(constraints), sampler=sampler, trials=trials,
                      baselines=tuple(baselines), heartbeat=heartbeat, cost=cost,
                      source=source, text=text, allow_plugins=ctx.allow_plugins)


def _load_base(data, ctx: Reading, base_dir: Path):
    if "base" not in data:
        return None, None
    raw = data["base"]
    if isinstance(raw, Mapping):
        base, base_source = dict(raw), None
    elif isinstance(raw, str) and raw.strip():
        path = Path(raw)
        if not path.is_absolute():
            path = base_dir / path
        if ctx.roots is not None:       # outside the roots or missing: one answer, no hint
            path = ctx.confined(path)
            if path is None or not _is_file(path):
                ctx.add(("base",), f"no spec file {raw!r} in the allowed folders")
                return None, None
        try:
            text = read_text_file(path, raw)
            base, _ = parse_yaml(text, raw, kind=MODEL_SPEC)
        except SpecError as e:
            for p in e.problems:
                ctx.add(("base",), f"base model spec: {p.message}",
                        p.hint or f"{p.file}:{p.line}:{p.col}")
            return None, None
        base_source = str(path)
        if not isinstance(base, Mapping):
            ctx.add(("base",), f"{raw} does not hold a YAML mapping (a model spec)")
            return None, None
        base = dict(base)
    else:
        ctx.add(("base",), "base is a model spec: a path (relative to this file) or a mapping")
        return None, None
    # The base must itself be a valid model spec.
    try:
        ctx.load_model(Path(base_source) if base_source else base, source=base_source)
    except SpecError as e:
        pos = ctx.src.value(("base",))
        for p in e.problems:
            if base_source:
                ctx.problems.append(p)
            else:   # inline base: point into this file
                inner = ctx.src.value(("base",) + tuple(p.field.split("."))) if p.field else pos
                ctx.problems.append(Problem(p.message, file=ctx.file, line=inner.line,
                                            col=inner.col, field=f"base.{p.field}" if p.field
                                            else "base", hint=p.hint))
        return None, None
    return base, base_source


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
