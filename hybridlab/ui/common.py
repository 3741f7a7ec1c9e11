"""Small helpers shared by the tabs: choices for trial pickers, problem lists as HTML, spec
examples found beside the package."""
from __future__ import annotations

import html
from pathlib import Path

import yaml

from hybridlab.errors import Problem

import hybridlab


def trial_label(row: dict) -> str:
    pattern = row.get("pattern") or "?"
    if len(pattern) > 40:
        pattern = pattern[:37] + "..."
    return f"#{row['number']} · {row['state'].lower()} · {pattern}"


def trial_choices(rows: list[dict]) -> list[tuple[str, int]]:
    return [(trial_label(r), int(r["number"])) for r in rows]


def compare_key(study: str, number: int) -> str:
    return f"{study}#{int(number)}"


def parse_compare_key(key: str) -> tuple[str, int]:
    study, _, number = str(key).rpartition("#")
    return study, int(number)


def as_int(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def problems_html(problems: list[Problem], ok_text: str = "") -> str:
    """Problems as a list with line and column first (what `hybridlab validate` prints)."""
    if not problems:
        return f"<div class='hl-ok' style='color:#1a7f37'>✔ {html.escape(ok_text)}</div>"
    items = []
    for p in problems:
        where = f"line {p.line}, col {p.col}" if p.line else "(no line)"
        field = f"<code>{html.escape(p.field)}</code>: " if p.field else ""
        hint = (f"<div style='color:#555;margin-left:1em'>hint: {html.escape(p.hint)}</div>"
                if p.hint else "")
        items.append(f"<li class='hl-problem' data-line='{p.line}'><b>{where}</b> — {field}"
                     f"{html.escape(p.message)}{hint}</li>")
    n = len(problems)
    return (f"<div class='hl-errors' style='color:#b42318'><b>{n} problem"
            f"{'s' if n != 1 else ''}</b><ul style='margin:4px 0'>{''.join(items)}</ul></div>")


def error_html(message: str) -> str:
    return f"<div class='hl-errors' style='color:#b42318'>{html.escape(message)}</div>"


def example_dirs(base_dir: Path) -> list[Path]:
    dirs = [Path(hybridlab.__file__).resolve().parents[1] / "examples", base_dir / "examples"]
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_examples(base_dir: Path, kind: str) -> dict[str, Path]:
    """Example YAML files by name: ``kind="model"`` (have ``model:``) or ``"search"`` (have
    ``space:``)."""
    found: dict[str, Path] = {}
    for d in example_dirs(base_dir):
        for path in sorted(d.glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(data, dict):
                continue
            if (kind == "model" and "model" in data) or (kind == "search" and "space" in data):
                found.setdefault(path.name, path)
    return found


DEFAULT_MODEL_SPEC = """\
# A small hybrid: Mamba-2 with one attention layer in four, an MLP after each mixer.
name: my-hybrid
model: {d_model: 256, vocab_size: 256}
blocks:
  M: {type: mamba2, d_state: 64, headdim: 32}
  "*": {type: attention, n_heads: 4, n_kv_heads: 2}
  "-": {type: mlp, hidden_mult: 2.6667, multiple_of: 32}
pattern: "(M- M- M- *-) x 2"
"""
