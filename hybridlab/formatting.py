"""Text formatting shared by the command line and the web UI (neither imports the other):
metric values, the ``hybridlab summary`` table, and names from a database shown safely."""
from __future__ import annotations

from hybridlab.composer.summary import human_bytes, human_count


def fmt_value(metric: str, value) -> str:
    """A metric value for people: bytes and counts with units, floats to 4 digits."""
    if value is None:
        return "-"
    if "bytes" in metric:
        return human_bytes(value)
    if metric.startswith("params") or metric.startswith("flops"):
        return human_count(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
