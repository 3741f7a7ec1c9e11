"""Text formatting shared by the command line and the web UI (neither imports the other):
metric values in one number style, the ``hybridlab summary`` table, and names from a database
shown safely.

One number style: sizes in bytes use binary prefixes (``3.0 MiB``), counts of parameters,
FLOPs and tokens use SI prefixes (``4.2M``), rates add ``/s``, durations read as seconds,
minutes or hours, other numbers keep 4 significant digits without exponents where they fit.
``fmt_exact`` is the exact value (hover text, CSV files).
"""
from __future__ import annotations

import math


#: metric-name fragments by unit, checked in this order
UNIT_HINTS = (("rate", ("_per_s", "tokens_per_s", "/s")),
              ("bytes", ("bytes", "_mem", "mem_")),
              ("seconds", ("duration_s", "wall_s", "compute_s", "_time_s")),
              ("count", ("params", "flops", "tokens", "steps")))


def human_count(n: float) -> str:
    """51_600_000_000 -> '51.6B'; 12_345 -> '12.3K'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"



def unit_of(metric: str) -> str:
    """``bytes``, ``count``, ``rate``, ``seconds`` or ``number`` for a metric name."""
    low = str(metric).lower()
    for unit, hints in UNIT_HINTS:
        if any(h in low for h in hints):
            return unit
    return "number"


def fmt_value(metric: str, value) -> str:
    """A metric value for people, in the unit its name implies (see the module docstring)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    unit = unit_of(metric)
    if unit == "bytes":
        return human_bytes(v)
    if unit == "count":
        return human_count(v)
    if unit == "rate":
        return human_count(v) + "/s"
    if unit == "seconds":
        return fmt_seconds(v)
    return fmt_number(value)


def fmt_number(value) -> str:
    """A plain number: integers whole (thousands separated), floats to 4 significant digits,
    SI prefixes from 10,000 on instead of exponents."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 1e4:
        return human_count(v)
    if isinstance(value, int) or v.is_integer():
        return f"{int(v):,}"
    return f"{v:.4g}"


def fmt_seconds(seconds: float) -> str:
    s = float(seconds)
    if abs(s) < 120:
        return f"{s:.3g} s"
    if abs(s) < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_exact(value) -> str:
    """The exact value: whole numbers in full, floats as Python writes them back exactly."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def shown_name(name) -> str:
    """A name from a database or a spec (a study, a metric) as printable text: control
    characters (escape sequences, newlines, NUL, bidi overrides) become visible escapes such
    as ``\\x1b``, so a name can neither restyle a terminal nor fake a line of output."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def format_summary(info: dict) -> str:
    """The per-layer table and totals that ``hybridlab summary`` prints (``info`` from
    ``composer.summary.summarize``)."""
    ctxs = [str(c) for c in info["contexts"]]
    header = ["idx", "sym", "type", "params", "state/seq"] + \
        [f"KV/seq@{c}" for c in ctxs] + [f"FLOPs/tok@{c}" for c in ctxs]
    rows = [[str(e["index"]), e["symbol"], e["type"], human_count(e["params"]),
             human_bytes(e["state_bytes"])] +
            [human_bytes(e["kv_bytes"][c]) for c in ctxs] +
            [human_count(e["flops_per_token"][c]) for c in ctxs]
            for e in info["layers"]]
    rows.append(["", "", "all layers", human_count(sum(e["params"] for e in info["layers"])),
                 human_bytes(info["state_bytes"])] +
                [human_bytes(info["kv_bytes"][c]) for c in ctxs] +
                [human_count(info["flops_per_token"][c]) for c in ctxs])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    left = {1, 2}   # symbol and type read better left-aligned

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    out = [f"{info['name']}  ({len(info['layers'])} layers, {info['dtype']} state/KV)",
           f"pattern: {info['pattern']}", "", line(header), rule]
    out += [line(r) for r in rows[:-1]] + [rule, line(rows[-1]), ""]
    out.append(f"params total      {human_count(info['params_total']):>8}  "
               f"({info['params_total']:,})")
    out.append(f"params active     {human_count(info['params_active']):>8}  "
               f"({info['params_active']:,})")
    out.append(f"  embedding       {human_count(info['params_embedding']):>8}  "
               f"({info['params_embedding']:,})")
    out.append(f"  non-embedding   {human_count(info['params_non_embedding']):>8}  "
               f"({info['params_non_embedding']:,})")
    return "\n".join(out)
