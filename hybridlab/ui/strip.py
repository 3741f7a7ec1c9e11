"""The layer pattern drawn as a coloured strip: one cell per layer, one colour per block type,
mixers full height and FFN layers shorter, with a legend that names the block type behind each
symbol (``M = mamba3 ×4``: a search that samples ``blocks.M.type`` draws the same letter for
different mixers). Plain HTML with inline styles (no
scripts); every name is escaped, since names come from spec files and the database."""
from __future__ import annotations

import hashlib
import html

from hybridlab.composer.loader import load_spec
from hybridlab.errors import UserError

#: One colour per built-in block type; plugin types get a stable colour from their name.
TYPE_COLOURS = {
    "mamba1": "#4e79a7",
    "mamba2": "#2f8fce",
    "mamba3": "#17becf",
    "attention": "#e15759",
    "shared_attention": "#b07aa1",
    "parallel": "#f28e2b",
    "mlp": "#9aa0a6",
    "moe": "#c8b400",
}
_EXTRA = ("#59a14f", "#ff9da7", "#9c755f", "#76b7b2", "#edc948", "#af7aa1", "#8cd17d")
FFN_TYPES = ("mlp", "moe")


def type_colour(type_name: str) -> str:
    if type_name in TYPE_COLOURS:
        return TYPE_COLOURS[type_name]
    h = int(hashlib.sha1(type_name.encode()).hexdigest(), 16)
    return _EXTRA[h % len(_EXTRA)]


def spec_layers(spec) -> list[tuple[int, str, str, int]]:
    """(index, block name, block type, stage) per layer of a ModelSpec."""
    return [(layer.index, layer.name, layer.type, layer.stage) for layer in spec.layers]


def layers_from_yaml(spec_yaml: str) -> list[tuple[int, str, str, int]]:
    """Layers of a spec given as YAML text, e.g. read back from a database ([] when it does not
    load -- also when it names plugins: the web server never imports them)."""
    if not spec_yaml or not isinstance(spec_yaml, str):
        return []
    try:
        return spec_layers(load_spec(spec_yaml if spec_yaml.endswith("\n")
                                     else spec_yaml + "\n", source="<stored spec>",
                                     allow_plugins=False))
    except UserError:
        return []


def strip_html(layers, title: str = "", legend: bool = True, cell_px: int = 22) -> str:
    """HTML of the strip (``layers`` from ``spec_layers``). Empty layers -> a short note."""
    if not layers:
        return "<div class='hl-strip-empty' style='color:#888'>no layers to draw</div>"
    n = len(layers)
    cell = max(4, min(cell_px, int(900 / n)))
    cells = []
    prev_stage = layers[0][3]
    for index, name, type_name, stage in layers:
        if stage != prev_stage:
            cells.append("<span class='hl-stage' title='pipeline stage break' style='display:"
                         "inline-block;width:2px;height:30px;background:#333;margin:0 2px'></span>")
            prev_stage = stage
        ffn = type_name in FFN_TYPES
        label = html.escape(name if len(name) <= 2 else name[:1])
        show = label if cell >= 12 else ""
        cells.append(
            f"<span class='hl-cell' data-type='{html.escape(type_name)}' "
            f"title='layer {index}: {html.escape(name)} ({html.escape(type_name)})' "
            f"style='display:inline-flex;align-items:center;justify-content:center;"
            f"width:{cell}px;height:{16 if ffn else 30}px;margin:0 1px;border-radius:3px;"
            f"background:{type_colour(type_name)};color:#fff;font:11px monospace;"
            f"vertical-align:bottom'>{show}</span>")
    out = ["<div class='hl-strip' style='margin:4px 0'>"]
    if title:
        out.append(f"<div style='font-weight:600;margin-bottom:2px'>{html.escape(title)}</div>")
    out.append("<div style='white-space:nowrap;overflow-x:auto;padding:2px 0'>"
               + "".join(cells) + "</div>")
    if legend:
        counts: dict[tuple[str, str], int] = {}
        for _, name, type_name, _ in layers:
            counts[(name, type_name)] = counts.get((name, type_name), 0) + 1
        items = "".join(
            f"<span class='hl-legend-item' data-symbol='{html.escape(name)}' "
            f"style='margin-right:12px;white-space:nowrap'>"
            f"<span style='display:inline-block;width:12px;height:12px;border-radius:2px;"
            f"background:{type_colour(t)};vertical-align:middle;margin-right:4px'></span>"
            f"<code>{html.escape(name)}</code> = {html.escape(t)} &times;{c}</span>"
            for (name, t), c in counts.items())
        out.append(f"<div class='hl-legend' style='font-size:12px;margin-top:3px'>{items} "
                   f"<span style='color:#888'>({n} layers; short cells are FFN layers)</span>"
                   f"</div>")
    out.append("</div>")
    return "".join(out)
