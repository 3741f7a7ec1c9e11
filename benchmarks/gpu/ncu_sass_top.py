"""Where a kernel's warps wait, per SASS instruction, from Nsight Compute's source page:

    ncu --import REPORT.ncu-rep --page source --csv --print-source sass > k.csv
    python3 -m benchmarks.gpu.ncu_sass_top k.csv [N] [LISTING]

Prints the stall samples by reason over the whole kernel, then the N instructions (default 40)
with the most samples, each with its index in the SASS listing and its two main reasons
(long_sb: waiting on a global/local load; wait: a fixed-latency dependency; short_sb: shared
memory or MUFU; selected: issuing). LISTING: also write the whole SASS there, one line per
instruction with its samples, to find what a stalled instruction waits for.
"""
from __future__ import annotations

import csv
import sys


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main(path: str, top: int = 40, listing: str | None = None) -> None:
    rows = list(csv.reader(open(path)))
    at = next(i for i, r in enumerate(rows) if "Source" in r)     # header row (a title row precedes)
    head = rows[at]
    body = [r for r in rows[at + 1:] if len(r) == len(head)]
    col = {h: i for i, h in enumerate(head)}
    samples = col["Warp Stall Sampling (All Samples)"]
    reasons = [h for h in head if h.startswith("stall_") and "Not Issued" not in h]
    total = sum(number(r[samples]) for r in body) or 1.0
    by_reason = {h: sum(number(r[col[h]]) for r in body) for h in reasons}
    print(f"{total:.0f} stall samples over {len(body)} instructions; by reason: " + ", ".join(
        f"{h[6:]} {100 * v / total:.1f}%" for h, v in sorted(by_reason.items(), key=lambda x: -x[1])
        if v > 0.005 * total))
    if listing:
        with open(listing, "w") as fh:
            for k, r in enumerate(body):
                fh.write(f"{k:5d} {number(r[samples]):7.0f}  {r[col['Source']].strip()}\n")
    ranked = sorted(range(len(body)), key=lambda k: -number(body[k][samples]))[:top]
    for k in ranked:
        r = body[k]
        main2 = sorted(((number(r[col[h]]), h[6:]) for h in reasons), reverse=True)[:2]
        why = "  ".join(f"{name} {count:.0f}" for count, name in main2 if count)
        print(f"{k:5d} {100 * number(r[samples]) / total:5.1f}%  {r[col['Source']].strip()[:64]:64s} {why}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]), *sys.argv[3:4])
