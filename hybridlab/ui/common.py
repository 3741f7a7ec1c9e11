"""Small helpers shared by the tabs: choices for trial pickers, problem lists as HTML, spec
examples found beside the package. Names from the database are shown with ``shown_name``
(control characters escaped) wherever they are text for people, never where they are values."""
from __future__ import annotations

import dataclasses
import html
from pathlib import Path

from hybridlab.composer.plugins import OPT_IN_HINT
from hybridlab.errors import Problem, UserError
from hybridlab.formatting import shown_name
from hybridlab.specs.source import parse_yaml
from hybridlab.ui.paths import shipped_examples


#: What the page says about a spec naming plugins (the web server never imports them).
PAGE_PLUGIN_HINT = ("the web page never imports plugins; remove plugins:, or check the spec on "
                    "your own machine with hybridlab validate --allow-plugins SPEC")


def trial_label(row: dict) -> str:
    pattern = shown_name(row.get("pattern") or "?")
    if len(pattern) > 40:
        pattern = pattern[:37] + "..."
    return f"#{row['number']} · {row['state'].lower()} · {pattern}"


def study_choices(names: list[str]) -> list[tuple[str, str]]:
    """Dropdown choices: each study's name as shown (control characters escaped), as value the
    name itself."""
    return [(shown_name(n), n) for n in names]


def match_study(names: list[str], text) -> str:
    """The study a table cell names: the cell shows ``shown_name(study)``, which is the study's
    own name unless it holds control characters."""
    text = str(text)
    if text in names:
        return text
    return next((n for n in names if shown_name(n) == text), text)


#: a trial picker lists at most this many recent trials (plus the front and the current one);
#: any other trial number can be typed
RECENT_TRIALS = 200


def trial_choices(rows: list[dict], current=None) -> list[tuple[str, int]]:
    """Picker choices: every trial of a small study; of a large one the Pareto front, the
    latest ``RECENT_TRIALS`` trials and ``current`` (other numbers can be typed)."""
    if len(rows) > RECENT_TRIALS:
        keep = {r["number"] for r in rows[-RECENT_TRIALS:]} | \
            {r["number"] for r in rows if r.get("pareto")}
        if current is not None:
            keep.add(current)
        rows = [r for r in rows if r["number"] in keep]
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
    except (TypeError, ValueError, OverflowError):    # "inf", 10**400, a list
        return None


def problems_html(problems: list[Problem], ok_text: str = "") -> str:
    """Problems as a list with line and column first (what `hybridlab validate` prints)."""
    if not problems:
        return f"<div class='hl-ok' style='color:#1a7f37'>✔ {html.escape(ok_text)}</div>"
    items = []
    for p in problems:
        if p.hint == OPT_IN_HINT:       # the CLI's opt-in does not exist here
            p = dataclasses.replace(p, hint=PAGE_PLUGIN_HINT)
        where = f"line {p.line}, col {p.col}" if p.line else "(no line)"
        field = f"<code>{_text(p.field)}</code>: " if p.field else ""
        hint = (f"<div style='color:#555;margin-left:1em'>hint: {_text(p.hint)}</div>"
                if p.hint else "")
        items.append(f"<li class='hl-problem' data-line='{int(p.line)}'><b>{where}</b> — "
                     f"{field}{_text(p.message)}{hint}</li>")
    n = len(problems)
    return (f"<div class='hl-errors' style='color:#b42318'><b>{n} problem"
            f"{'s' if n != 1 else ''}</b><ul style='margin:4px 0'>{''.join(items)}</ul></div>")


def error_html(message: str) -> str:
    lines = "<br>".join(_text(line) for line in str(message).splitlines())
    return f"<div class='hl-errors' style='color:#b42318'>{lines}</div>"


def _text(text) -> str:
    """Text for HTML: escaped, control characters visible."""
    return html.escape(shown_name(text))


def example_dirs(base_dir: Path) -> list[Path]:
    """The shipped examples, then ``examples/`` of the folder the UI was started in."""
    out: list[Path] = []
    for d in (shipped_examples(), Path(base_dir) / "examples"):
        if d.is_dir() and d.resolve() not in out:
            out.append(d.resolve())
    return out


def find_examples(ctx, kind: str) -> dict[str, Path]:
    """Example YAML files by name: ``kind="model"`` (have ``model:``) or ``"search"`` (have
    ``space:``). Read like any path from a caller (inside the roots, size-limited): a symlink
    in ``examples/`` that leads elsewhere is skipped."""
    found: dict[str, Path] = {}
    for d in example_dirs(ctx.base_dir):
        for path in sorted(d.glob("*.yaml")):
            try:
                real, text = ctx.roots.read_spec(path)
                data, _ = parse_yaml(text, path.name)
            except UserError:
                continue
            if not isinstance(data, dict):
                continue
            if (kind == "model" and "model" in data) or (kind == "search" and "space" in data):
                found.setdefault(path.name, real)
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
