"""Where a kernel first waits on each of its global loads, read from the SASS control bits
(no GPU needed):

    SASS_DIR=/tmp/sass ONLY="n 16, no grad, rows 0, fast True" python3 -m benchmarks.kernel_regs
    python3 -m benchmarks.sass_scoreboards /tmp/sass/_fwd_seq_kernel-0.sass

On sm_70 and later each instruction's upper 64 bits carry its scheduling controls: bits 46-48
name the scoreboard a variable-latency instruction (a load, MUFU, shared memory, a shuffle)
releases when its result lands, bits 52-57 the scoreboards the instruction waits on. There are six
scoreboards, so ptxas shares them: a load that shares one with a MUFU is waited on at that
MUFU's first use, however far ahead it was issued. For each load in the kernel's last loop, this
prints its scoreboard and the first instruction after it (around the loop) that waits on that
scoreboard: a prefetch is only as early as that wait. Indices match Nsight Compute's SASS listing
(`benchmarks/gpu/ncu_kernels.sh`) when the compile is the same.
"""
from __future__ import annotations

import re
import sys

INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,6})\*/\s+([^;]*);\s*/\* (0x[0-9a-f]{16}) \*/")
HIGH_WORD = re.compile(r"^\s*/\* (0x[0-9a-f]{16}) \*/")


def decode(path: str) -> list[tuple[int, str, int, int]]:
    """(address, text, write scoreboard or 7 for none, wait mask) per instruction."""
    lines = open(path).read().splitlines()
    out = []
    for i, line in enumerate(lines[:-1]):
        m = INSTRUCTION.search(line)
        hi = HIGH_WORD.search(lines[i + 1]) if m else None
        if m and hi:
            word = int(hi.group(1), 16)
            out.append((int(m.group(1), 16), m.group(2).strip(), (word >> 46) & 7, (word >> 52) & 0x3F))
    return out


def last_loop(code) -> tuple[int, int]:
    """[start, end] indices of the last backward branch's loop."""
    at = {addr: k for k, (addr, *_) in enumerate(code)}
    loops = []
    for k, (addr, text, *_) in enumerate(code):
        m = re.search(r"BRA (0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr and int(m.group(1), 16) in at:
            loops.append((at[int(m.group(1), 16)], k))
    return max(loops, key=lambda lo_hi: lo_hi[1] - lo_hi[0])


def main(path: str) -> None:
    code = decode(path)
    lo, hi = last_loop(code)
    print(f"{len(code)} instructions; loop {lo}..{hi} ({hi - lo + 1} instructions)")
    for k in range(lo, hi + 1):
        _, text, sb, _ = code[k]
        if "LDG" not in text or sb == 7:
            continue
        around = list(range(k + 1, hi + 1)) + list(range(lo, k))
        for n, j in enumerate(around, 1):
            if code[j][3] >> sb & 1:
                print(f"{k:5d} sb{sb} {text[:46]:46s} first waited at {j:5d}, {n:4d} later: {code[j][1][:34]}")
                break


if __name__ == "__main__":
    main(sys.argv[1])
