"""The ``layout:`` section: a layer count and mixer ratios (``composer.layout`` expands them)."""
from __future__ import annotations

from hybridlab.composer.layout import PLACEMENTS, Layout, LayoutError, expand_layout
from hybridlab.composer.read.blocks import check_kind
from hybridlab.composer.read.context import Reading
from hybridlab.specs.limits import MAX_LAYERS
from hybridlab.specs.problems import did_you_mean
from hybridlab.specs.typecheck import describe, is_int, is_number

LAYOUT_KEYS = ("layers", "mix", "place", "ffn")


def read_layout(r: Reading, layout) -> list[str] | None:
    """The block name of every layer, or None (with problems)."""
    if not isinstance(layout, dict):
        r.problem(("layout",), f"layout must be a mapping, got {describe(layout)}",
                  "layout: {layers: 12, mix: {M: 3, \"*\": 1}, place: even, ffn: [\"-\"]}")
        return None
    n_before = len(r.problems)
    r.check_keys(("layout",), layout, LAYOUT_KEYS, "layout")
    layers = _layers(r, layout)
    mix = _mix(r, layout)
    place = _place(r, layout.get("place", "even"))
    ffn = _ffn(r, layout.get("ffn", []))
    if len(r.problems) > n_before or None in (layers, mix, place, ffn):
        return None
    try:
        return expand_layout(Layout(layers, mix, place, ffn))
    except LayoutError as e:
        r.problem(("layout",) + e.where, e.message, e.hint)
        return None


def _layers(r: Reading, layout: dict) -> int | None:
    if "layers" not in layout:
        r.problem(("layout",), "missing required key 'layers'", "layers: 12", key=True)
        return None
    value = layout["layers"]
    if not is_int(value):
        r.problem(("layout", "layers"), f"expected an integer, got {describe(value)}")
        return None
    if value < 1:
        r.problem(("layout", "layers"), "the layout has no layers: layers must be >= 1")
        return None
    if value > MAX_LAYERS:
        r.problem(("layout", "layers"), f"{value} layers is over the limit of {MAX_LAYERS}")
        return None
    return value


def _mix(r: Reading, layout: dict):
    if "mix" not in layout:
        r.problem(("layout",), "missing required key 'mix'", 'mix: {M: 7, "*": 1}', key=True)
        return None
    mix = layout["mix"]
    if not isinstance(mix, dict) or not mix:
        r.problem(("layout", "mix"), "mix must be a non-empty mapping of mixer -> weight",
                  'mix: {M: 7, "*": 1}')
        return None
    out, ok = [], True
    for name, weight in mix.items():
        path = ("layout", "mix", name)
        if not is_number(weight) or weight < 0:
            r.problem(path, f"a weight must be a number >= 0, got {describe(weight)}")
            ok = False
        if not isinstance(name, str):
            r.problem(path, f"a mixer name must be a string, got {describe(name)}", key=True)
            ok = False
            continue
        ok = check_kind(r, name, "mixer", path) and ok
        out.append((name, weight))
    if ok and sum(w for _, w in out) <= 0:
        r.problem(("layout", "mix"), "the layout has no layers: every weight is 0",
                  "give at least one mixer a weight > 0")
        ok = False
    return tuple(out) if ok else None


def _place(r: Reading, place):
    if isinstance(place, str):
        if place in PLACEMENTS:
            return place
        r.problem(("layout", "place"), f"unknown placement '{place}'",
                  did_you_mean(place, PLACEMENTS) or
                  "use even, first, last, middle or a list of mixer indices")
        return None
    if isinstance(place, list) and place and all(is_int(i) for i in place):
        return tuple(place)
    r.problem(("layout", "place"), f"place must be even, first, last, middle or a list of "
                                   f"mixer indices, got {describe(place)}")
    return None


def _ffn(r: Reading, ffn):
    if not isinstance(ffn, list):
        r.problem(("layout", "ffn"), f"ffn must be a list of FFN block names (or []), got "
                                     f"{describe(ffn)}", 'ffn: ["-"]')
        return None
    ok = True
    for i, name in enumerate(ffn):
        if not isinstance(name, str):
            r.problem(("layout", "ffn", i), f"expected a block name, got {describe(name)}")
            ok = False
            continue
        ok = check_kind(r, name, "ffn", ("layout", "ffn", i)) and ok
    return tuple(ffn) if ok else None
