"""``--layout-only``: a winning layout at the width and depth you will actually train.

    text, info = scale_spec(spec, d_model=2048, layers=48)

* **Depth.** ``layers`` counts *mixer* layers, as ``layout.layers`` does. When the layout is a
  ratio layout (every mixer followed by the same cycle of FFN blocks, or by none), the mixer
  counts become the ``mix`` weights of a ``layout:`` with the same FFN cycle, and the placement
  (``even``, ``first``, ``last`` or ``middle``) that reproduces the original mixer order is
  kept (``even`` when none does). Other layouts (Nemotron-H style motifs) are tiled: the
  original sequence of units (a unit is a mixer with the FFN layers after it) is repeated and
  cut at ``layers`` units, which keeps the motif.
* **Width.** ``d_model`` changes; attention keeps its head size (``n_heads`` scales, GQA group
  size kept), Mamba-2/3 keep ``headdim`` where it divides ``expand * d_model`` (else the largest
  divisor below it), ``ngroups`` is lowered until it divides the heads, an explicit Mamba-1
  ``dt_rank`` scales with the width. MLP/MoE multipliers are relative and stay.
* Per-layer ``overrides`` and pipeline stages do not carry over to another depth: they are
  dropped and listed in ``info["notes"]``.

The result is validated by the spec loader (a ``SpecError`` says what to adjust by hand).
"""
from __future__ import annotations

import os

import yaml

from hybridlab.blocks.registry import get_block
from hybridlab.composer.layout import PLACEMENTS, Layout, mixer_sequence
from hybridlab.composer.loader import load_spec
from hybridlab.errors import Problem, SpecError


def _units(spec):
    """[(mixer name, (ffn names...)), ...] or None when the stack does not start with a mixer."""
    units: list[list] = []
    for layer in spec.layers:
        kind = get_block(layer.type).kind
        if kind == "ffn":
            if not units:
                return None
            units[-1][1].append(layer.name)
        else:
            units.append([layer.name, []])
    return [(m, tuple(f)) for m, f in units]


def _ffn_cycle(units) -> tuple[str, ...] | None:
    """The FFN names cycled after each mixer, or None when the FFNs are not such a cycle."""
    lens = {len(f) for _, f in units}
    if lens == {0}:
        return ()
    if lens != {1}:
        return None
    seq = [f[0] for _, f in units]
    for period in range(1, len(seq) + 1):
        cycle = tuple(seq[:period])
        if all(seq[i] == cycle[i % period] for i in range(len(seq))):
            return cycle
    return None


def _first_names(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n, None)
    return list(seen)


def _scale_depth(spec, layers: int, notes: list[str]) -> dict:
    """``{"layout": {...}}`` or ``{"pattern": [...]}`` for ``layers`` mixer layers."""
    units = _units(spec)
    cycle = _ffn_cycle(units) if units else None
    if units and cycle is not None:
        mixers = [m for m, _ in units]
        counts = {n: mixers.count(n) for n in _first_names(mixers)}
        mix = tuple((n, c) for n, c in counts.items())
        place = "even"
        for p in PLACEMENTS:
            try:
                if mixer_sequence(Layout(len(mixers), mix, p, cycle)) == mixers:
                    place = p
                    break
            except Exception:
                continue
        else:
            if len(counts) > 1:
                notes.append("the original mixer order is no ratio placement; the scaled layout "
                             "spreads the minority mixers evenly")
        return {"layout": {"layers": int(layers), "mix": {n: c for n, c in mix},
                           "place": place, "ffn": list(cycle)}}
    if not units:            # FFNs before the first mixer: tile plain layers
        names = [layer.name for layer in spec.layers]
        notes.append("the stack does not start with a mixer; its layers were repeated to "
                     f"{layers} layers")
        return {"pattern": [names[i % len(names)] for i in range(layers)]}
    notes.append("the FFN blocks do not follow the mixers in a fixed cycle; the sequence of "
                 "mixer units was repeated (and cut) to the new depth")
    out: list[str] = []
    for i in range(layers):
        mixer, ffns = units[i % len(units)]
        out.append(mixer)
        out.extend(ffns)
    return {"pattern": out}


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _nearest_divisor(n: int, want: float) -> int:
    return min(_divisors(n), key=lambda d: (abs(d - want), -d))


def _scale_attention(cfg: dict, old: int, new: int) -> None:
    if cfg.get("head_dim"):
        return                                      # explicit head size: independent of d_model
    heads = int(cfg.get("n_heads", 8))
    kv = cfg.get("n_kv_heads")
    group = heads / kv if kv else 1.0
    new_heads = _nearest_divisor(new, heads * new / old)
    cfg["n_heads"] = new_heads
    if kv:
        cfg["n_kv_heads"] = _nearest_divisor(new_heads, new_heads / group)


def _scale_ssd(cfg: dict, new: int) -> None:
    expand = cfg.get("expand", 2)
    d_inner = int(expand * new)
    headdim = int(cfg.get("headdim", 64))
    if d_inner % headdim:
        headdim = max(d for d in _divisors(d_inner) if d <= headdim)
        cfg["headdim"] = headdim
    nheads = d_inner // headdim
    groups = int(cfg.get("ngroups", 1))
    if nheads % groups:
        cfg["ngroups"] = max(d for d in _divisors(nheads) if d <= groups)


def _scale_block(cfg: dict, old: int, new: int) -> dict:
    cfg = dict(cfg)
    kind = cfg.get("type")
    if kind in ("attention", "shared_attention"):
        _scale_attention(cfg, old, new)
    elif kind in ("mamba2", "mamba3"):
        _scale_ssd(cfg, new)
    elif kind == "mamba1":
        if isinstance(cfg.get("dt_rank"), int):
            cfg["dt_rank"] = max(1, round(cfg["dt_rank"] * new / old))
    elif kind == "parallel":
        att = dict(cfg.get("attention") or {})
        att.setdefault("n_heads", 8)
        _scale_attention(att, old, new)
        cfg["attention"] = att
        ssm = dict(cfg.get("ssm") or {})
        if ssm.get("type") in ("mamba2", "mamba3"):
            _scale_ssd(ssm, new)
        cfg["ssm"] = ssm
    return cfg


def scale_spec(spec, d_model: int, layers: int) -> tuple[str, dict]:
    """(YAML text of the scaled spec, info dict with pattern, notations, sizes and notes)."""
    from hybridlab.composer import convert
    from hybridlab.composer.canonical import dump_spec_yaml
    from hybridlab.composer.summary import summarize

    if d_model < 1 or layers < 1:
        raise SpecError(Problem("--d-model and --layers must be >= 1", file="<command line>"))
    doc = yaml.safe_load(dump_spec_yaml(spec))
    notes: list[str] = []
    old = int(doc["model"]["d_model"])
    doc["model"]["d_model"] = int(d_model)
    doc["name"] = f"{spec.name}-{d_model}x{layers}"
    doc["blocks"] = {name: _scale_block(cfg, old, d_model) for name, cfg in doc["blocks"].items()}
    if doc.pop("overrides", None):
        notes.append("per-layer overrides were dropped (their layer indices do not carry over "
                     "to another depth)")
    if any(layer.stage for layer in spec.layers):
        notes.append("pipeline stages ('|') were dropped; add them back for the new depth")
    doc.pop("pattern", None)
    doc.update(_scale_depth(spec, layers, notes))
    header = (f"# {spec.name} scaled to d_model {d_model} and {layers} mixer layers by "
              f"'hybridlab export --layout-only'\n")
    text = header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
    scaled = load_spec(text, source="<scaled layout>")
    info: dict = {"d_model": int(d_model), "mixer_layers": int(layers),
                  "n_layers": len(scaled.layers), "pattern": scaled.pattern, "notes": notes}
    try:
        info["megatron"] = convert.to_megatron(scaled)
    except SpecError as e:
        info["megatron"] = None
        info["megatron_problem"] = "; ".join(p.message for p in e.problems)
    try:
        info["hf"] = convert.to_hf(scaled)
    except SpecError as e:
        info["hf"] = None
        info["hf_problem"] = "; ".join(p.message for p in e.problems)
    s = summarize(scaled, contexts=(4096, 32768))
    info["sizes"] = {k: s[k] for k in ("params_total", "params_active", "state_bytes",
                                       "kv_bytes", "dtype")}
    return text, info


def export_layout(store, study: str, out_dir: str | os.PathLike, *, d_model: int, layers: int,
                  trial: int | None = None, best: str | None = None, force: bool = False):
    """Write the scaled spec, the Megatron pattern and the HF layer types of a trial's layout
    (no weights needed: any trial that built its model will do). ``out_dir`` must be new or
    empty unless ``force``."""
    import json

    from hybridlab.export.native import ExportResult
    from hybridlab.export.safe import ExportDir, check_out_dir
    from hybridlab.export.source import find_trial

    check_out_dir(out_dir, force)                  # refuse before any work
    src = find_trial(store, study, trial=trial, best=best, need_weights=False)
    spec = src.spec
    text, info = scale_spec(spec, d_model, layers)
    info.update({"study": study, "trial": src.number, "chosen_by": src.chosen_by,
                 "source_pattern": spec.pattern, "objectives": src.objectives})
    out = ExportDir(out_dir, force=force)
    files = [out.write_text("spec.yaml", text)]
    if info.get("megatron"):
        files.append(out.write_text("megatron_pattern.txt", info["megatron"] + "\n"))
    if info.get("hf"):
        files.append(out.write_text("hf_layer_types.json", json.dumps(info["hf"], indent=2) + "\n"))
    files.append(out.write_text("layout.json", json.dumps(info, indent=2, default=str) + "\n"))
    return ExportResult(path=out.path, files=files, study=study, trial=src.number,
                        format="layout", notes=list(info["notes"])
                        + ([f"Megatron: {info['megatron_problem']}"] if info.get("megatron_problem")
                           else []))
