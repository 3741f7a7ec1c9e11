"""Side-by-side kernel benchmark: ours (fused Triton), the torch reference, and the peer (mamba-ssm).

For every (op, shape) case, in one process, on identical fresh random inputs, it checks ours
against the peer and the reference, times forward and forward+backward of each, and compares
with the target (the peer's own times, in ``cases.SHAPES``) and with the forward's memory floor.

- ``cases``:   the shapes, their inputs, how each implementation is called (``prepare``)
- ``timing``:  do_bench medians, slow calls, the machine's ceilings
- ``compare``: one case, checked and timed; errors, bytes, the verdict
- ``runner``:  a whole run over ops and shapes
- ``report``:  the terminal table, Markdown and JSON
- ``cli``:     ``python -m benchmarks.kernels`` (docs/benchmarking.md)
"""
from .cases import (DTYPES, GROUPS, IMPLS, SHAPES, SPECS, Draw, OpSpec, Run, Shape, parse_case, prepare,
                    select_shapes, shape)
from .compare import floor_bytes, rel_err, run_case, stored_bytes, worst
from .report import format_markdown, format_table, write_json
from .runner import DEFAULT_OPS, run
from .timing import Settings, measure

__all__ = ["DEFAULT_OPS", "DTYPES", "GROUPS", "IMPLS", "SHAPES", "SPECS", "Draw", "OpSpec", "Run",
           "Settings", "Shape", "floor_bytes", "format_markdown", "format_table", "measure", "parse_case",
           "prepare", "rel_err", "run", "run_case", "select_shapes", "shape", "stored_bytes", "worst",
           "write_json"]
