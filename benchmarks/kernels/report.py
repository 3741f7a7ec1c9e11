"""The report as text: a terminal table, one progress line per case, Markdown, JSON."""
from __future__ import annotations

import json
import math
import os

from .compare import worst


def _f(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return f"{x:.{digits}f}" if x >= 10 ** -digits else f"{x:.1e}"


def _cell(r, impl, mode, why):
    i = r["impls"].get(impl)
    if i is None:
        reason = why.get(impl, "")
        return "missing" if reason.startswith("missing") else ("unavail" if reason else "n/a")
    if f"{mode}_ms" in i:
        return _f(i[f"{mode}_ms"]) + ("*" if i.get(f"{mode}_reps", 99) < 3 else "")
    if f"{mode}_skipped" in i:
        return "OOM" if i[f"{mode}_skipped"].startswith("out of memory") else "err"
    return "n/a"


def _err_cell(r):
    c = r["check"].get("ours_vs_peer") or r["check"].get("ours_vs_ref")
    if not c:
        return "–"
    w = worst([c["out"], c.get("state", 0.0)] + list(c.get("grads", {}).values()))
    vs = "peer" if "ours_vs_peer" in r["check"] else "ref"
    return f"{_f(w, 4) if w < 1 else f'{w:.1e}'} {vs}{'' if c['ok'] else ' BAD'}"


COLUMNS = ["op", "shape", "fwd ours", "fwd ref", "fwd peer", "f+b ours", "f+b ref", "f+b peer",
           "ours/peer f", "ours/peer f+b", "ours/ref f", "ours/ref f+b", "target f / f+b", "verdict f / f+b",
           "floor", "ours/floor", "max err"]


def rows(report) -> list[list[str]]:
    """One row of COLUMNS per case."""
    out = []
    for r in report["results"]:
        if "error" in r:
            out.append([r["op"], r["shape"], "error: " + r["error"]] + [""] * (len(COLUMNS) - 3))
            continue
        rat, t = r["ratios"], r.get("target")
        why = report["unavailable"].get(r["op"], {})
        out.append([
            r["op"], r["shape"],
            _cell(r, "ours", "fwd", why), _cell(r, "ref", "fwd", why), _cell(r, "peer", "fwd", why),
            _cell(r, "ours", "fwdbwd", why), _cell(r, "ref", "fwdbwd", why), _cell(r, "peer", "fwdbwd", why),
            _f(rat["ours_over_peer"]["fwd"], 2), _f(rat["ours_over_peer"]["fwdbwd"], 2),
            _f(rat["ours_over_ref"]["fwd"], 2), _f(rat["ours_over_ref"]["fwdbwd"], 2),
            f"{t['fwd_ms']} / {t['fwdbwd_ms']}" if t else "–",
            f"{r['verdict']['fwd']} / {r['verdict']['fwdbwd']}",
            _f(r.get("floor_ms"), 4), _f(r.get("ours_over_floor"), 1), _err_cell(r)])
    return out


def notes(report) -> list[str]:
    """Why an implementation did not run, what failed its check, and which cases were left out."""
    out = []
    for op, why in report["unavailable"].items():
        for impl, reason in why.items():
            out.append(f"{op}: {impl} unavailable: {reason}")
    for r in report["results"]:
        for impl, i in r["impls"].items():
            for mode in ("fwd", "fwdbwd"):
                if f"{mode}_skipped" in i:
                    out.append(f"{r['op']} {r['shape']}: {impl} {mode} skipped: {i[f'{mode}_skipped']}")
        for name, c in r["check"].items():
            if not c["ok"]:
                detail = ", ".join(f"{k} {v:.2e}" for k, v in c.get("grads", {}).items())
                out.append(f"{r['op']} {r['shape']}: {name} FAILED: out {c['out']:.2e}"
                           + (f", state {c['state']:.2e}" if "state" in c else "") + (f"; grads {detail}" if detail else ""))
                if name == "ours_vs_peer" and "ours_vs_ref" not in r["check"]:
                    out.append(f"{r['op']} {r['shape']}: without the reference in this run that says one of ours "
                               "and the peer is off, not which: benchmarks/gpu/vs_float64.py compares both with a "
                               "float64 reference")
    out += [f"not run: {x}" for x in report.get("not_run", [])]
    return out


def _header(report) -> list[str]:
    m, c = report["meta"], report["ceilings"]
    dev = m.get("gpu") or f"CPU ({m['host']})"
    lines = [f"{m['date']}  {dev}  torch {m['torch']}  triton {m['triton']}  CUDA {m['cuda']}  dtype {m['dtype']}",
             f"command: {m['command']}",
             f"ceilings: device copy {c['copy_TBps']:.3f} TB/s (read+write)"
             + (f", bf16 matmul {c['matmul_TFLOPs']:.0f} TFLOP/s" if "matmul_TFLOPs" in c else "")]
    return lines


def progress_line(report, r) -> str:
    """One line for a finished case, printed while the run goes on."""
    row = dict(zip(COLUMNS, rows({**report, "results": [r]})[0]))
    if "error" in r:
        return f"{r['op']} {r['shape']}: error: {r['error']}"
    return (f"{r['op']} {r['shape']}: fwd ours/ref/peer {row['fwd ours']}/{row['fwd ref']}/{row['fwd peer']} ms, "
            f"f+b {row['f+b ours']}/{row['f+b ref']}/{row['f+b peer']} ms, verdict {row['verdict f / f+b']}, "
            f"floor {row['floor']} ms, max err {row['max err']} ({r.get('wall_s', 0):.0f} s)")


def format_table(report) -> str:
    """Plain-text table for the terminal: header, one line per case, then the notes."""
    body = [COLUMNS] + rows(report)
    widths = [max(len(row[i]) for row in body) for i in range(len(COLUMNS))]
    lines = _header(report) + [""]
    for k, row in enumerate(body):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", "ms = median; * = fewer than 3 timed runs; f = forward (no grad), f+b = forward+backward;",
              "floor = fewest bytes a forward moves / measured copy bandwidth; verdict: pass = ours faster than",
              "the target and the peer measured now, and correct (max err within tolerance)."]
    found = notes(report)
    if found:
        lines += ["", "notes:"] + [f"  - {n}" for n in found]
    return "\n".join(lines)


def format_markdown(report) -> str:
    """The run as a Markdown section (header, table, notes), for BENCHMARKS.md."""
    m = report["meta"]
    out = [f"## Kernel benchmarks, {m['date'][:10]}", ""]
    out += [f"- {line}" for line in _header(report)]
    out += ["- medians of `triton.testing.do_bench` (L2 flushed between runs), warm-up and compile runs "
            "excluded; * = fewer than 3 runs; inputs random normal in the dtype above, A/D/dt_bias fp32",
            "- f = forward (no grad), f+b = forward+backward; floor = fewest bytes a forward must move / "
            "measured copy bandwidth; target = the peer's time in benchmarks/kernels/cases.py",
            "- verdict pass = ours faster than the target and than the peer measured in this run, and "
            "correct; max err = worst relative error of ours vs the peer (else the reference), output and gradients",
            "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows(report)]
    found = notes(report)
    if found:
        out += ["", "Notes:", ""] + [f"- {n}" for n in found]
    return "\n".join(out) + "\n"


def write_json(report, path):
    """Every number of the run, written atomically (a run cut short keeps the last whole file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=str, allow_nan=True)
    os.replace(tmp, path)
