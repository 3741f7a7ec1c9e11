"""Compare two trees' compiled kernels by their SASS, kernel config by kernel config (no GPU needed):

    SASS_DIR=/tmp/sass_a python3 -m benchmarks.kernel_regs > /tmp/regs_a.txt     # one tree
    SASS_DIR=/tmp/sass_b python3 -m benchmarks.kernel_regs > /tmp/regs_b.txt     # the other
    python3 -m benchmarks.sass_compare /tmp/sass_a /tmp/regs_a.txt /tmp/sass_b /tmp/regs_b.txt

Each SASS_DIR must start empty: kernel_regs.py numbers its files in the order it compiles
(``<kernel>-<k>.sass`` and ``.ttgir``, k = 0, 2, 4, ...), so the i-th "REG:" line of its output
is file 2i. Configs are matched by their label (kernel, case, warps, stages); prints each config
whose SASS differs or that one side lacks, then a count. Exit 0 when every config of both sides
is there and byte-identical, 1 otherwise. (TTGIR is not compared: it carries source paths.)
"""
from __future__ import annotations

import os
import sys


def index(sass_dir: str, regs_file: str) -> dict[str, tuple[str | None, str]]:
    """label -> (the config's SASS or None where its file is missing, its REG line)."""
    with open(regs_file) as f:
        lines = [line.rstrip("\n") for line in f if ": REG:" in line]
    by_number = {int(name.rsplit("-", 1)[1].split(".")[0]): name
                 for name in os.listdir(sass_dir) if name.endswith(".sass")}
    out = {}
    for i, line in enumerate(lines):
        label = " ".join(line.split(": REG:")[0].split())
        name = by_number.get(2 * i)
        sass = None
        if name is not None:
            with open(os.path.join(sass_dir, name)) as f:
                sass = f.read()
        out[label] = (sass, line.split(": ", 1)[1])
    return out


def compare(before: dict, after: dict) -> tuple[int, list[str]]:
    """(identical configs, a line per config that differs or that one side lacks)."""
    same, problems = 0, []
    for label, (sass_a, regs_a) in after.items():
        if label not in before:
            problems.append(f"NOT IN BEFORE: {label}")
            continue
        sass_b, regs_b = before[label]
        if sass_a is not None and sass_a == sass_b:
            same += 1
        else:
            problems.append(f"DIFF: {label} | {regs_b} | {regs_a}")
    problems += [f"NOT IN AFTER: {label}" for label in before if label not in after]
    return same, problems


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    before, after = index(args[0], args[1]), index(args[2], args[3])
    same, problems = compare(before, after)
    for line in problems:
        print(line)
    print(f"{same} identical SASS, {len(problems)} differ or missing; {len(after)} configs after, "
          f"{len(before)} before")
    return 0 if not problems and same == len(before) == len(after) else 1


if __name__ == "__main__":
    sys.exit(main())
