"""An export as one zip file, for downloading from the web UI.

    zip_path = build_bundle(store, "search-quick", work_dir, best="quality", fmt="native")

The export folder and the zip are created inside ``work_dir`` under names made from the
(sanitised) study name; inside the zip every file sits under one folder of that name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hybridlab.export.safe import ExportDir, zip_dir


def build_bundle(store, study: str, work_dir: str | os.PathLike, *, trial: int | None = None,
                 best: str | None = None, fmt: str = "native", d_model: int | None = None,
                 layers: int | None = None):
    """Export into a fresh folder under ``work_dir`` and zip it; returns (zip path, result)."""
    from hybridlab.export.native import bundle_name

    work = Path(work_dir).resolve()                # the app's scratch folder, not the user's
    work.mkdir(parents=True, exist_ok=True)
    folder = ExportDir(Path(tempfile.mkdtemp(prefix="export-", dir=work)) / "bundle")
    if fmt == "hf":
        from hybridlab.export.hf import export_hf
        result = export_hf(store, study, folder, trial=trial, best=best)
    elif fmt == "layout":
        from hybridlab.export.layout import export_layout
        result = export_layout(store, study, folder, trial=trial, best=best,
                               d_model=int(d_model or 0), layers=int(layers or 0))
    else:
        from hybridlab.export.native import export_native
        result = export_native(store, study, folder, trial=trial, best=best)
    name = bundle_name(study, result.trial, "hf" if fmt == "hf" else "native")
    if fmt == "layout":
        name += f"-layout-{int(d_model or 0)}x{int(layers or 0)}"
    zip_path = zip_dir(folder.path, folder.path.parent / f"{name}.zip", root=name)
    return zip_path, result
