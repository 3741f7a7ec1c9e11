"""Launch-plan variants for the GPU scripts: an op's ``DEFAULT_PLAN`` with some fields replaced
(``dataclasses.replace``), passed to the op as ``plan=``.

A variant names plan fields: ``vary(plan, field=value, nested=dict(field=value))`` in Python, or
``OP.FIELD=VALUE`` words on a command line or in a variants file (``parse``), e.g.
``ssd.block_t_max=32 mamba3.rotate_bwd_pairs=32 selective_scan.small.rows_log=2``. A field the
plan does not have is an error, never a variant that silently times the defaults. Changes to the
SSD plan apply to Mamba-3's too (its ``ssd``), as the HYBRIDLAB_SSD_* knobs do.
"""
from __future__ import annotations

import dataclasses
import functools

from hybridlab.kernels.ops.mamba3.plan import DEFAULT_PLAN as MAMBA3_PLAN
from hybridlab.kernels.ops.selective_scan.plan import DEFAULT_PLAN as SELECTIVE_SCAN_PLAN
from hybridlab.kernels.ops.ssd.plan import DEFAULT_PLAN as SSD_PLAN

#: the ops that take ``plan=``, by the name a variant gives them
DEFAULTS = {"selective_scan": SELECTIVE_SCAN_PLAN, "ssd": SSD_PLAN, "mamba3": MAMBA3_PLAN}


class PlanError(ValueError):
    """A variant that names no plan field, or a value of the wrong kind."""


def vary(plan, **changes):
    """``plan`` with ``changes`` (field=value; a dict for a nested dataclass field such as a
    Layout or Mamba-3's ``ssd``, changed field by field)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(plan)}
    fields = set(types)
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise PlanError(f"{type(plan).__name__} has no field {', '.join(unknown)}; "
                        f"its fields: {', '.join(sorted(fields))}")
    done = {}
    for name, value in changes.items():
        current = getattr(plan, name)
        if isinstance(value, dict):
            if not dataclasses.is_dataclass(current):
                raise PlanError(f"{type(plan).__name__}.{name} is {current!r}, not a plan of fields")
            value = vary(current, **value)
        elif not _fits(value, current, types[name]):
            raise PlanError(f"{type(plan).__name__}.{name}={value!r}: expected a value like {current!r}")
        done[name] = value
    return dataclasses.replace(plan, **done)


def _fits(value, current, annotation: str) -> bool:
    """Whether ``value`` may replace ``current``: the same kind (a bool for a bool, a number for
    a number, a plan for a plan), or None where the field's annotation allows it."""
    if value is None or current is None:
        return value is not None or "None" in annotation
    if dataclasses.is_dataclass(current):
        return type(value) is type(current)
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    return isinstance(value, (int, float)) and isinstance(current, (int, float))


def _value(text: str, current, where: str):
    """A command-line value as the kind of the field's current value."""
    low = text.strip().lower()
    if isinstance(current, bool):
        if low in ("1", "true", "on"):
            return True
        if low in ("0", "false", "off"):
            return False
        raise PlanError(f"{where}={text!r}: expected true or false")
    if low == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise PlanError(f"{where}={text!r}: expected an integer (or none)") from None


def parse(text: str) -> dict[str, dict]:
    """``OP.FIELD[.FIELD]=VALUE ...`` -> {op: nested changes}; '' -> {} (the defaults)."""
    changes: dict[str, dict] = {}
    for word in text.split():
        path, eq, raw = word.partition("=")
        op, *names = path.split(".")
        if not eq or not names:
            raise PlanError(f"{word!r}: expected OP.FIELD=VALUE, OP one of {', '.join(DEFAULTS)}")
        if op not in DEFAULTS:
            raise PlanError(f"{word!r}: no plan {op!r}; plans: {', '.join(DEFAULTS)}")
        target, current = changes.setdefault(op, {}), DEFAULTS[op]
        for name in names[:-1]:
            current = getattr(current, name, None)
            if not dataclasses.is_dataclass(current):
                raise PlanError(f"{word!r}: {name!r} is not a nested plan field")
            target = target.setdefault(name, {})
        if not hasattr(current, names[-1]):
            vary(current, **{names[-1]: None})          # raises, listing the fields
        target[names[-1]] = _value(raw, getattr(current, names[-1]), path)
    build(changes)          # every value of the kind its field takes
    return changes


def build(changes: dict[str, dict]) -> dict:
    """Every op's plan with its ``changes`` (from ``parse``); SSD changes reach Mamba-3's ssd."""
    out = {op: vary(DEFAULTS[op], **changes.get(op, {})) for op in DEFAULTS}
    m3 = changes.get("mamba3", {})
    ssd = m3["ssd"] if isinstance(m3.get("ssd"), dict) else {}
    out["mamba3"] = dataclasses.replace(out["mamba3"], ssd=vary(out["ssd"], **ssd))
    return out


def with_plan(fn, op: str, plans: dict):
    """``fn`` (op ``op``'s fused function) called with its plan, for ops that take one."""
    return functools.partial(fn, plan=plans[op]) if op in plans else fn


def describe(plan, base) -> str:
    """The fields where ``plan`` differs from ``base``, as ``field=value`` words ('' if none)."""
    words = []
    for f in dataclasses.fields(plan):
        a, b = getattr(plan, f.name), getattr(base, f.name)
        if a != b:
            sub = describe(a, b) if dataclasses.is_dataclass(a) else ""
            words += [f"{f.name}.{w}" for w in sub.split()] if sub else [f"{f.name}={a}"]
    return " ".join(words)
